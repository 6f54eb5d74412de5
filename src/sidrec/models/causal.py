"""The causal self-attention stack shared by SASRec (item-ID inputs) and AsymRec (MSP inputs)."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from sidrec.models.base import ModelOptions


class CausalOptions(ModelOptions):
    """Shape of the causal stack (shared option names of SASRec and AsymRec)."""

    hidden: int = Field(64, ge=8)
    layers: int = Field(2, ge=1)
    heads: int = Field(2, ge=1)
    ffn: int = Field(256, ge=8, description="feed-forward inner size")
    dropout: float = Field(0.2, ge=0, lt=1)
    max_len: int = Field(50, ge=2, description="items of history attended to")


def init_transformer_weights(module: nn.Module) -> None:
    """Small normal weights and zero biases (BERT/SASRec-style), applied with `module.apply`."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


class CausalEncoder(nn.Module):
    """Adds positions to `[B, T, hidden]` inputs and runs pre-norm causal self-attention layers."""

    def __init__(self, hidden: int, layers: int, heads: int, ffn: int, dropout: float, max_len: int) -> None:
        super().__init__()
        if hidden % heads:
            raise ValueError(f"model.hidden ({hidden}) must be divisible by model.heads ({heads})")
        self.position_embedding = nn.Embedding(max_len, hidden)
        self.input_norm = nn.LayerNorm(hidden)
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(hidden, heads, ffn, dropout, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.layers = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.output_norm = nn.LayerNorm(hidden)

    @classmethod
    def from_options(cls, o: CausalOptions) -> "CausalEncoder":
        return cls(o.hidden, o.layers, o.heads, o.ffn, o.dropout, o.max_len)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        steps = x.shape[1]
        x = x + self.position_embedding(torch.arange(steps, device=x.device))
        x = self.dropout(self.input_norm(x))
        causal = torch.triu(torch.full((steps, steps), float("-inf"), device=x.device), diagonal=1)
        return self.output_norm(self.layers(x, mask=causal, is_causal=True))


def last_states(states: torch.Tensor, histories: torch.Tensor) -> torch.Tensor:
    """`[B, hidden]` state at each row's last real item (rows left-aligned, -1 padded)."""
    lengths = (histories >= 0).sum(dim=1)
    return states[torch.arange(len(histories), device=states.device), (lengths - 1).clamp(min=0)]
