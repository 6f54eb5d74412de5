"""SASRec: causal self-attention over item-id embeddings, trained with full-catalogue cross-entropy.

Trained on whole sequences (every position predicts its next item in one pass), which covers the
same targets as one-sample-per-prefix training with far fewer forward passes.
"""

from __future__ import annotations

from typing import Iterator

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from sidrec.data import Dataset
from sidrec.models.base import Recommender, bucketed_batches, scores_top_k, truncate_histories
from sidrec.models.causal import CausalEncoder, CausalOptions, init_transformer_weights, last_states


class SASRecOptions(CausalOptions):
    dropout: float = Field(0.5, ge=0, lt=1)


class SASRec(Recommender):
    name = "sasrec"
    Options = SASRecOptions

    def __init__(self, options: SASRecOptions, n_items: int) -> None:
        super().__init__(options, n_items)
        self.item_embedding = nn.Embedding(n_items + 1, options.hidden, padding_idx=0)  # 0 = padding
        self.encoder = CausalEncoder.from_options(options)
        self.apply(init_transformer_weights)

    def hidden_states(self, histories: torch.Tensor) -> torch.Tensor:
        """`[B, T, hidden]` causal states for left-aligned, -1 padded item sequences."""
        return self.encoder(self.item_embedding(histories + 1) * self.options.hidden ** 0.5)

    def item_embeddings(self) -> torch.Tensor:
        """`[n_items, hidden]` output-space item vectors (CARD's collaborative signal)."""
        return self.item_embedding.weight[1:]

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        states = self.hidden_states(batch["inputs"])
        targets = batch["targets"]
        valid = targets >= 0
        logits = states[valid] @ self.item_embeddings().T
        return F.cross_entropy(logits, targets[valid], reduction="sum"), valid.sum()

    def make_batches(self, dataset: Dataset, batch_size: int):
        """Epoch -> shuffled, length-bucketed batches of training windows, trimmed to their longest row."""
        inputs, targets = dataset.training_windows(self.options.max_len)
        lengths = (inputs >= 0).sum(1)

        def batches(epoch: int, generator: torch.Generator) -> Iterator[dict[str, torch.Tensor]]:
            for rows in bucketed_batches(lengths, batch_size, generator):
                width = int(lengths[rows].max())
                yield {"inputs": inputs[rows, :width], "targets": targets[rows, :width]}

        return batches

    @torch.no_grad()
    def score(self, histories: torch.Tensor) -> torch.Tensor:
        histories = truncate_histories(histories, self.options.max_len)
        return last_states(self.hidden_states(histories), histories) @ self.item_embeddings().T

    def recommend(self, histories: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        return scores_top_k(self.score(histories), k)
