"""TIGER generator: a T5 encoder-decoder that reads the semantic IDs of a user's last items and
writes the semantic ID of the next one (Rajput et al., NeurIPS 2023).

The architecture is exactly T5 v1.0 (RMSNorm pre-norm, bucketed relative position bias shared by
the layers of a stack, ReLU feed-forward, no biases, one shared vocabulary tied to the output
layer, decoder output scaled by d_model^-0.5), so `to_hf()` exports the weights 1:1 into
`transformers.T5ForConditionalGeneration`. Decoding is ours: `start` runs the encoder once per user
and projects the cross-attention keys/values once per user; `step` advances any number of beams
per user against those shared keys/values (see `sidrec.decoding.beam_search`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Callable, Iterator, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sidrec.decoding.beam_search import constrained_beam_search
from sidrec.decoding.trie import SIDTrie
from sidrec.models.dropout import attention, dropout
from pydantic import Field

from sidrec.data import Dataset
from sidrec.models.base import ModelOptions, Recommender, bucketed_batches, evaluating
from sidrec.semantic_ids import EOS_TOKEN, PAD_TOKEN, SemanticIDs

IGNORE = -100  # label of padded targets in window batches
DEFAULT_BEAM_WIDTH = 20

PRESETS: dict[str, dict] = {
    # TIGER paper: 4+4 layers, d_model 128, 6 heads of 64, d_ff 1024, dropout 0.1.
    "paper": dict(n_encoder_layers=4, n_decoder_layers=4, d_model=128, n_heads=6, d_kv=64, d_ff=1024, dropout=0.1),
    # Small enough to train in minutes on a laptop CPU.
    "small": dict(n_encoder_layers=2, n_decoder_layers=2, d_model=64, n_heads=4, d_kv=16, d_ff=256, dropout=0.1),
}


@dataclass
class TigerConfig:
    """Network shape (vocabulary and code length come from the `SemanticIDs`)."""

    n_encoder_layers: int = 4
    n_decoder_layers: int = 4
    d_model: int = 128
    n_heads: int = 6
    d_kv: int = 64
    d_ff: int = 1024
    dropout: float = 0.1
    max_history: int = 20
    rel_buckets: int = 32
    rel_max_distance: int = 128
    norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "dropout":
                if not 0.0 <= value < 1.0:
                    raise ValueError(f"TigerConfig.dropout must be in [0, 1), got {value}")
            elif value <= 0:
                raise ValueError(f"TigerConfig.{f.name} must be positive, got {value}")

    @classmethod
    def preset(cls, name: str = "paper", **overrides) -> "TigerConfig":
        if name not in PRESETS:
            raise ValueError(f"unknown TIGER preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})


def relative_position_buckets(rel: torch.Tensor, bidirectional: bool, n_buckets: int, max_distance: int) -> torch.Tensor:
    """T5's bucketing of `rel = key position - query position`: exact for small distances,
    logarithmic up to `max_distance`, one bucket beyond; the decoder sees only the past."""
    if bidirectional:
        n_buckets //= 2
        offset = (rel > 0).long() * n_buckets
        dist = rel.abs()
    else:
        offset = torch.zeros_like(rel)
        dist = (-rel).clamp(min=0)
    n_exact = n_buckets // 2
    log_ratio = torch.log(dist.clamp(min=1).float() / n_exact) / math.log(max_distance / n_exact)
    far = (n_exact + (log_ratio * (n_buckets - n_exact)).long()).clamp(max=n_buckets - 1)
    return offset + torch.where(dist < n_exact, dist, far)


def _additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Bool keep-mask -> additive mask of the same shape (0 keep, dtype min drop, as HF does)."""
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)


def _additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Bool key mask `[B, S]` -> additive `[B, 1, 1, S]`."""
    return _additive(mask, dtype)[:, None, None, :]


class _Attention(nn.Module):
    def __init__(self, cfg: TigerConfig):
        super().__init__()
        inner = cfg.n_heads * cfg.d_kv
        self.n_heads, self.d_kv = cfg.n_heads, cfg.d_kv
        self.q = nn.Linear(cfg.d_model, inner, bias=False)
        self.k = nn.Linear(cfg.d_model, inner, bias=False)
        self.v = nn.Linear(cfg.d_model, inner, bias=False)
        self.o = nn.Linear(inner, cfg.d_model, bias=False)

    def heads(self, x: torch.Tensor, proj: nn.Linear) -> torch.Tensor:
        """`[..., T, d_model]` -> `[..., H, T, d_kv]`."""
        return proj(x).unflatten(-1, (self.n_heads, self.d_kv)).transpose(-2, -3)

    def merge(self, y: torch.Tensor) -> torch.Tensor:
        """`[..., H, T, d_kv]` -> output projection `[..., T, d_model]`."""
        return self.o(y.transpose(-2, -3).flatten(-2))


class _FeedForward(nn.Module):
    def __init__(self, cfg: TigerConfig):
        super().__init__()
        self.wi = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.wo = nn.Linear(cfg.d_ff, cfg.d_model, bias=False)
        self.p = cfg.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.wo(dropout(F.relu(self.wi(x), inplace=True), self.p, self.training))


class _EncoderLayer(nn.Module):
    def __init__(self, cfg: TigerConfig):
        super().__init__()
        self.norm1 = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.attn = _Attention(cfg)
        self.norm2 = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.ff = _FeedForward(cfg)
        self.p = cfg.dropout

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        a = attention(self.attn.heads(h, self.attn.q), self.attn.heads(h, self.attn.k), self.attn.heads(h, self.attn.v),
                      bias, self.p, self.training)
        x = x + dropout(self.attn.merge(a), self.p, self.training)
        return x + dropout(self.ff(self.norm2(x)), self.p, self.training)


class _DecoderLayer(nn.Module):
    def __init__(self, cfg: TigerConfig):
        super().__init__()
        self.norm1 = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.self_attn = _Attention(cfg)
        self.norm2 = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.cross_attn = _Attention(cfg)
        self.norm3 = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.ff = _FeedForward(cfg)
        self.p = cfg.dropout

    def forward(
        self,
        x: torch.Tensor,
        self_bias: torch.Tensor,
        cache: "_BeamKV | None",
        mem_k: torch.Tensor,
        mem_v: torch.Tensor,
        mem_mask: torch.Tensor,
    ) -> torch.Tensor:
        """`x [B, w, T, d]`: w beams (or 1 sequence) of T new tokens per user; `cache` keeps the
        beams' earlier self-attention keys/values (one new token per beam when given);
        `mem_k/mem_v [B, H, S, d_kv]` are the user's encoder keys/values, attended by all of its
        beams without being copied."""
        B, w, T, _ = x.shape
        attn = self.self_attn
        H, dk = attn.n_heads, attn.d_kv
        qkv = F.linear(self.norm1(x), torch.cat([attn.q.weight, attn.k.weight, attn.v.weight]))
        q, k, v = (y.flatten(0, 1).unflatten(-1, (H, dk)).transpose(1, 2) for y in qkv.chunk(3, dim=-1))
        if cache is not None:  # [t + 1, B * w, H * dk] position-major -> [B * w, H, t + 1, dk]
            k, v = (y.unflatten(-1, (H, dk)).permute(1, 2, 0, 3) for y in cache.append(k[:, :, 0], v[:, :, 0]))
        a = attention(q, k, v, self_bias, self.p, self.training)
        x = x + dropout(attn.merge(a).unflatten(0, (B, w)), self.p, self.training)

        q = self.cross_attn.heads(self.norm2(x), self.cross_attn.q)  # [B, w, H, T, dk]
        q = q.transpose(1, 2).reshape(B, H, w * T, dk)  # all beams' queries of a user, one matrix
        a = attention(q, mem_k, mem_v, mem_mask, self.p, self.training)
        a = a.unflatten(2, (w, T)).transpose(1, 2)
        x = x + dropout(self.cross_attn.merge(a), self.p, self.training)
        return x + dropout(self.ff(self.norm3(x)), self.p, self.training)


class _BeamKV:
    """One decoder layer's self-attention keys/values for every beam, position-major
    `[positions, beams, H * d_kv]` in preallocated buffers: appending a token writes one slab,
    reordering beams is one row gather into a spare buffer (no per-step concatenation)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.length = 0
        self.kv: torch.Tensor | None = None  # [2, capacity, beams, H * d_kv]
        self.spare: torch.Tensor | None = None

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """New keys/values `[beams, H, d_kv]` -> all positions so far, `[t + 1, beams, H * d_kv]` each."""
        rows = k.shape[0]
        if self.kv is None:
            self.kv = k.new_empty(2, self.capacity, rows, k.shape[1] * k.shape[2])
        self.kv[0, self.length] = k.flatten(1)
        self.kv[1, self.length] = v.flatten(1)
        self.length += 1
        return self.kv[0, : self.length], self.kv[1, : self.length]

    def reorder(self, rows: torch.Tensor) -> None:
        shape = (2, self.capacity, rows.numel(), self.kv.shape[-1])
        if self.spare is None or self.spare.shape != shape:
            self.spare = self.kv.new_empty(shape)
        torch.index_select(self.kv[:, : self.length], 2, rows, out=self.spare[:, : self.length])
        self.kv, self.spare = self.spare, self.kv


class TigerDecodeState:
    """What incremental decoding keeps per user: encoder keys/values per decoder layer (projected
    once) and each beam's self-attention keys/values, reordered when beams are re-ranked."""

    def __init__(self, mem_kv: list[tuple[torch.Tensor, torch.Tensor]], mem_mask: torch.Tensor, self_bias: torch.Tensor):
        self.mem_kv = mem_kv
        self.mem_mask = mem_mask
        self.self_bias = self_bias
        self.caches = [_BeamKV(self_bias.shape[-1]) for _ in mem_kv]
        self.length = 0
        self.beams = 1

    def reorder(self, parents: torch.Tensor) -> None:
        """Beam j of user b continues beam `parents[b, j]` of the previous step."""
        rows = (parents + torch.arange(parents.shape[0], device=parents.device)[:, None] * self.beams).flatten()
        for cache in self.caches:
            cache.reorder(rows)
        self.beams = parents.shape[1]


class TigerOptions(ModelOptions):
    """A preset plus optional overrides of any `TigerConfig` field, and how to train and decode."""

    preset: Literal["paper", "small"] = "small"
    n_encoder_layers: int | None = None
    n_decoder_layers: int | None = None
    d_model: int | None = None
    n_heads: int | None = None
    d_kv: int | None = None
    d_ff: int | None = None
    dropout: float | None = None
    max_history: int | None = Field(None, description="history items read (paper: 20)")
    rel_buckets: int | None = None
    rel_max_distance: int | None = None
    norm_eps: float | None = None
    sample_mode: Literal["all_prefixes", "sampled_prefix", "history_once"] = "all_prefixes"
    length_buckets: bool = Field(True, description="batch prefixes of similar length (less padding)")
    history_window: int = Field(50, ge=2, description="history_once: items per training window (the encoder "
                                "reads up to history_window - 1 items; the decoder attends to the last max_history)")
    beam_width: int = Field(DEFAULT_BEAM_WIDTH, ge=1, description="beams kept (>= the k asked for)")

    def network(self) -> TigerConfig:
        overrides = {f.name: getattr(self, f.name) for f in fields(TigerConfig) if getattr(self, f.name) is not None}
        return TigerConfig.preset(self.preset, **overrides)


class TIGER(Recommender):
    """Generative recommender over semantic IDs; `recommend` runs trie-constrained beam search."""

    name = "tiger"
    Options = TigerOptions
    needs = ("sids",)

    def __init__(self, options: TigerOptions, n_items: int, sids: SemanticIDs):
        super().__init__(options, n_items)
        if sids.n_items != n_items:
            raise ValueError(f"semantic IDs cover {sids.n_items} items but the dataset has {n_items}")
        self.config = cfg = options.network()
        self.sids = sids
        self.trie = SIDTrie.from_semantic_ids(sids)  # raises if two items share a code
        self.register_buffer("item_tokens", sids.tokens(), persistent=False)
        self.embed = nn.Embedding(sids.vocab_size, cfg.d_model)
        self.enc_rel_bias = nn.Embedding(cfg.rel_buckets, cfg.n_heads)
        self.dec_rel_bias = nn.Embedding(cfg.rel_buckets, cfg.n_heads)
        self.encoder = nn.ModuleList(_EncoderLayer(cfg) for _ in range(cfg.n_encoder_layers))
        self.enc_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.decoder = nn.ModuleList(_DecoderLayer(cfg) for _ in range(cfg.n_decoder_layers))
        self.dec_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self._init_weights()

    def _init_weights(self) -> None:
        """T5's initialisation (unit-variance embeddings, fan-in scaled projections)."""
        cfg = self.config
        inner = cfg.n_heads * cfg.d_kv
        nn.init.normal_(self.embed.weight, std=1.0)
        for table in (self.enc_rel_bias, self.dec_rel_bias):
            nn.init.normal_(table.weight, std=cfg.d_model**-0.5)
        for module in self.modules():
            if isinstance(module, _Attention):
                nn.init.normal_(module.q.weight, std=(cfg.d_model * cfg.d_kv) ** -0.5)
                nn.init.normal_(module.k.weight, std=cfg.d_model**-0.5)
                nn.init.normal_(module.v.weight, std=cfg.d_model**-0.5)
                nn.init.normal_(module.o.weight, std=inner**-0.5)
            elif isinstance(module, _FeedForward):
                nn.init.normal_(module.wi.weight, std=cfg.d_model**-0.5)
                nn.init.normal_(module.wo.weight, std=cfg.d_ff**-0.5)

    @property
    def n_levels(self) -> int:
        return self.sids.n_levels

    @property
    def item_causal(self) -> bool:
        """`history_once`: a token sees only its own and earlier items, so one encoder pass over a
        whole history serves every target in it (the paper's encoder is bidirectional per prefix)."""
        return self.options.sample_mode == "history_once"

    # ----- inputs -------------------------------------------------------------------------
    def _histories(self, histories: torch.Tensor) -> torch.Tensor:
        histories = torch.as_tensor(histories, dtype=torch.long, device=self.item_tokens.device)
        if histories.ndim != 2:
            raise ValueError(f"histories must be a [batch, length] LongTensor, got shape {tuple(histories.shape)}")
        empty = ((histories >= 0).sum(1) == 0).nonzero().flatten()
        if len(empty):
            raise ValueError(f"histories row {int(empty[0])} is empty; TIGER needs at least one item")
        return histories

    def encoder_inputs(self, histories: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Histories `[B, L]` (dense item ids, oldest first, right-padded with -1) -> SID tokens of
        each user's last `max_history` items, flattened, left-aligned: `(input_ids, bool mask)`."""
        histories = self._histories(histories)
        lengths = (histories >= 0).sum(1)
        m = min(self.options.history_window - 1 if self.item_causal else self.config.max_history, histories.shape[1])
        first = (lengths - m).clamp(min=0)
        pos = first[:, None] + torch.arange(m, device=histories.device)
        window = histories.gather(1, pos.clamp(max=histories.shape[1] - 1))
        window = window.masked_fill(pos >= lengths[:, None], -1)
        return history_tokens(self.item_tokens, window)

    # ----- network ------------------------------------------------------------------------
    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        x = dropout(self.embed(input_ids), cfg.dropout, self.training)
        pos = torch.arange(x.shape[1], device=x.device)
        buckets = relative_position_buckets(pos[None, :] - pos[:, None], True, cfg.rel_buckets, cfg.rel_max_distance)
        bias = self.enc_rel_bias(buckets).permute(2, 0, 1)[None] + _additive_mask(attention_mask, x.dtype)
        if self.item_causal:
            item = pos // self.n_levels
            bias = bias.masked_fill(item[None, :] > item[:, None], torch.finfo(bias.dtype).min)
        for layer in self.encoder:
            x = layer(x, bias)
        return dropout(self.enc_norm(x), cfg.dropout, self.training)

    def _decoder_bias(self, length: int, device: torch.device) -> torch.Tensor:
        """Causal relative-position bias `[1, H, T, T]` of the decoder's self-attention."""
        cfg = self.config
        pos = torch.arange(length, device=device)
        rel = pos[None, :] - pos[:, None]
        bias = self.dec_rel_bias(relative_position_buckets(rel, False, cfg.rel_buckets, cfg.rel_max_distance))
        bias = bias.permute(2, 0, 1)[None]  # 4-D: SDPA's fast CPU kernel needs a 4-D mask
        return bias.masked_fill(rel > 0, torch.finfo(bias.dtype).min)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        h = dropout(self.dec_norm(x), self.config.dropout, self.training) * self.config.d_model**-0.5
        return h @ self.embed.weight.T

    def _memory(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        """Encoder keys/values per decoder layer and the additive mask of what the decoder reads:
        every history token, or (item-causal encoder) those of the last `max_history` items."""
        mem = self.encode(input_ids, attention_mask)
        kv = [(layer.cross_attn.heads(mem, layer.cross_attn.k), layer.cross_attn.heads(mem, layer.cross_attn.v)) for layer in self.decoder]
        keys = attention_mask
        if self.item_causal:
            n_hist = attention_mask.sum(1, keepdim=True) // self.n_levels
            item = torch.arange(attention_mask.shape[1], device=attention_mask.device) // self.n_levels
            keys = keys & (item[None, :] >= n_hist - self.config.max_history)
        return kv, _additive_mask(keys, mem.dtype)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, decoder_input_ids: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits `[B, T, vocab]` for decoder inputs `[B, T]` (start token = PAD_TOKEN)."""
        mem_kv, mem_mask = self._memory(input_ids, attention_mask)
        x = dropout(self.embed(decoder_input_ids), self.config.dropout, self.training)[:, None]
        bias = self._decoder_bias(decoder_input_ids.shape[1], x.device)
        for layer, (k, v) in zip(self.decoder, mem_kv):
            x = layer(x, bias, None, k, v, mem_mask)
        return self._logits(x[:, 0])

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed cross-entropy over target tokens (next item's SID + eos) and their count.

        `labels [B, T]`: one target per history (a prefix); `labels [B, w, T]` (`history_once`): every
        next item of a window, -100 rows = padding, all decoded against one encoder pass.
        """
        labels = batch["labels"]
        if labels.ndim == 2:
            start = torch.full_like(labels[:, :1], PAD_TOKEN)
            logits = self(batch["input_ids"], batch["attention_mask"], torch.cat([start, labels[:, :-1]], 1))
        else:
            logits = self._window_logits(batch["input_ids"], batch["attention_mask"], labels)
        loss_sum = F.cross_entropy(logits.flatten(0, -2), labels.flatten(), reduction="sum", ignore_index=IGNORE)
        return loss_sum, (labels != IGNORE).sum()

    def _window_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits `[B, w, T, vocab]`: target j reads the tokens of window items
        (j - max_history, j], from one item-causal encoder pass shared by all w targets."""
        if not self.item_causal:
            raise ValueError("window batches need model.sample_mode='history_once' (an item-causal encoder)")
        B, w, T = labels.shape
        mem_kv, _ = self._memory(input_ids, attention_mask)
        item = torch.arange(input_ids.shape[1], device=input_ids.device) // self.n_levels
        target = torch.arange(w, device=input_ids.device)[:, None]
        reads = (item[None, :] <= target) & (item[None, :] > target - self.config.max_history)  # [w, S]
        reads = (reads[None] & attention_mask[:, None, :]).repeat_interleave(T, dim=1)  # [B, w * T, S]
        mem_mask = _additive(reads, mem_kv[0][0].dtype)[:, None]
        inputs = torch.cat([torch.full_like(labels[..., :1], PAD_TOKEN), labels[..., :-1]], -1).clamp(min=PAD_TOKEN)
        x = dropout(self.embed(inputs), self.config.dropout, self.training)
        bias = self._decoder_bias(T, x.device)
        for layer, (k, v) in zip(self.decoder, mem_kv):
            x = layer(x, bias, None, k, v, mem_mask)
        return self._logits(x)

    # ----- incremental decoding (the interface sidrec.decoding uses) ----------------------
    def start(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> TigerDecodeState:
        """Encode each user once and project its cross-attention keys/values once."""
        mem_kv, mem_mask = self._memory(input_ids, attention_mask)
        return TigerDecodeState(mem_kv, mem_mask, self._decoder_bias(self.n_levels + 1, input_ids.device))

    def step(self, state: TigerDecodeState, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per beam (`[B, w]`, PAD_TOKEN first) -> next-token log-probs `[B, w, vocab]`."""
        t = state.length
        if t > self.n_levels:
            raise ValueError(f"decoded {t} tokens already; a TIGER target has only {self.n_levels} + eos")
        if tokens.shape[1] != state.beams:
            raise ValueError(f"step got {tokens.shape[1]} tokens per user but the state holds {state.beams} beams")
        x = self.embed(tokens)[:, :, None]
        bias = state.self_bias[:, :, t : t + 1, : t + 1]
        for layer, cache, (k, v) in zip(self.decoder, state.caches, state.mem_kv):
            x = layer(x, bias, cache, k, v, state.mem_mask)
        state.length = t + 1
        return torch.log_softmax(self._logits(x[:, :, 0]), dim=-1)

    def make_batches(self, dataset: Dataset, batch_size: int):
        """Training samples from the training split only (`options.sample_mode`)."""
        if self.item_causal:
            inputs, targets = dataset.training_windows(self.options.history_window)
            return tiger_window_batches(inputs, targets, self.sids.tokens(), batch_size=batch_size)
        items, offsets = dataset.train_sequences()
        return tiger_batches((offsets, items), self.sids.tokens(), batch_size=batch_size,
                             mode=self.options.sample_mode, max_history=self.config.max_history,
                             length_buckets=self.options.length_buckets)

    @torch.no_grad()
    def recommend(
        self, histories: torch.Tensor, k: int, *, beam_width: int | None = None, batch_size: int = 256
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k items `[B, k]` and their log-probabilities (SID tokens + eos), best first.

        Users are decoded in chunks of similar history length (then put back in order): a chunk's
        encoder input is as long as its longest history, so a random chunk of Beauty users (mean 9
        items, a few near 50) would be mostly padding.
        """
        width = beam_width if beam_width is not None else max(k, self.options.beam_width)
        histories = self._histories(histories)
        order = torch.argsort((histories >= 0).sum(1), stable=True)
        self.trie.to(self.item_tokens.device)
        with evaluating(self):
            out = [
                constrained_beam_search(self, *self.encoder_inputs(chunk), self.trie, beam_width=width, k=k)
                for chunk in histories[order].split(batch_size)
            ]
        items, scores = torch.cat([o[0] for o in out]), torch.cat([o[1] for o in out])
        restore = torch.empty_like(order)
        restore[order] = torch.arange(len(order), device=order.device)
        return items[restore], scores[restore]

    @torch.no_grad()
    def item_code_log_probs(self, histories: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """`[B, k, n_levels + 1]` log-probability of each token of each item's SID (then eos), teacher-forced:
        how the beam's prefixes scored, level by level (the report's user inspector)."""
        with evaluating(self):
            input_ids, mask = self.encoder_inputs(histories)
            B, k = items.shape
            eos = torch.full((B, k, 1), EOS_TOKEN, dtype=torch.long, device=input_ids.device)
            targets = torch.cat([self.item_tokens[items.clamp(min=0)], eos], -1)  # [B, k, T]
            decoder_inputs = torch.cat([torch.full_like(targets[..., :1], PAD_TOKEN), targets[..., :-1]], -1)
            logits = self(input_ids.repeat_interleave(k, 0), mask.repeat_interleave(k, 0), decoder_inputs.flatten(0, 1))
            log_probs = torch.log_softmax(logits.float(), -1).gather(2, targets.flatten(0, 1)[..., None])[..., 0]
        return log_probs.view(B, k, -1)

    # ----- Hugging Face export ------------------------------------------------------------
    def to_hf(self):
        """The same network as `transformers.T5ForConditionalGeneration` (weights copied)."""
        from transformers import T5Config, T5ForConditionalGeneration

        cfg = self.config
        hf = T5ForConditionalGeneration(
            T5Config(
                vocab_size=self.sids.vocab_size, d_model=cfg.d_model, d_kv=cfg.d_kv, d_ff=cfg.d_ff,
                num_layers=cfg.n_encoder_layers, num_decoder_layers=cfg.n_decoder_layers, num_heads=cfg.n_heads,
                relative_attention_num_buckets=cfg.rel_buckets, relative_attention_max_distance=cfg.rel_max_distance,
                dropout_rate=cfg.dropout, layer_norm_epsilon=cfg.norm_eps, feed_forward_proj="relu",
                pad_token_id=PAD_TOKEN, eos_token_id=EOS_TOKEN, decoder_start_token_id=PAD_TOKEN,
            )
        )
        missing, unexpected = hf.load_state_dict(self._hf_state_dict(), strict=False)
        untied = [m for m in missing if not m.endswith(("embed_tokens.weight", "lm_head.weight"))]
        if untied or unexpected:
            raise RuntimeError(f"HF export mismatch: missing {untied}, unexpected {unexpected}")
        hf.tie_weights()
        return hf.eval()

    def _hf_state_dict(self) -> dict[str, torch.Tensor]:
        sd = {
            "shared.weight": self.embed.weight,
            "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight": self.enc_rel_bias.weight,
            "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight": self.dec_rel_bias.weight,
            "encoder.final_layer_norm.weight": self.enc_norm.weight,
            "decoder.final_layer_norm.weight": self.dec_norm.weight,
        }

        def attention(prefix: str, attn: _Attention) -> None:
            for name in "qkvo":
                sd[f"{prefix}.{name}.weight"] = getattr(attn, name).weight

        for i, layer in enumerate(self.encoder):
            p = f"encoder.block.{i}.layer"
            attention(f"{p}.0.SelfAttention", layer.attn)
            sd[f"{p}.0.layer_norm.weight"], sd[f"{p}.1.layer_norm.weight"] = layer.norm1.weight, layer.norm2.weight
            sd[f"{p}.1.DenseReluDense.wi.weight"], sd[f"{p}.1.DenseReluDense.wo.weight"] = layer.ff.wi.weight, layer.ff.wo.weight
        for i, layer in enumerate(self.decoder):
            p = f"decoder.block.{i}.layer"
            attention(f"{p}.0.SelfAttention", layer.self_attn)
            attention(f"{p}.1.EncDecAttention", layer.cross_attn)
            for j, norm in enumerate((layer.norm1, layer.norm2, layer.norm3)):
                sd[f"{p}.{j}.layer_norm.weight"] = norm.weight
            sd[f"{p}.2.DenseReluDense.wi.weight"], sd[f"{p}.2.DenseReluDense.wo.weight"] = layer.ff.wi.weight, layer.ff.wo.weight
        return {k: v.detach().clone() for k, v in sd.items()}


def history_tokens(item_tokens: torch.Tensor, window: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-aligned item windows `[B, M]` (-1 = none) -> flattened SID tokens `[B, S]` and bool
    mask, trimmed to the longest row (S <= M * n_levels)."""
    n_levels = item_tokens.shape[1]
    valid = window >= 0
    ids = item_tokens[window.clamp(min=0)].flatten(1)
    mask = valid.repeat_interleave(n_levels, dim=1)
    width = max(int(mask.sum(1).max()), 1)
    return ids.masked_fill(~mask, PAD_TOKEN)[:, :width], mask[:, :width]


def tiger_window_batches(inputs: torch.Tensor, targets: torch.Tensor, item_tokens: torch.Tensor, *,
                         batch_size: int = 128) -> Callable[[int, torch.Generator], Iterator[dict[str, torch.Tensor]]]:
    """`history_once` batches from whole-sequence windows (`Dataset.training_windows`): every next
    item of a window is a target, length-bucketed like SASRec's (`batch_size` ~ windows per step)."""
    item_tokens = torch.as_tensor(item_tokens, dtype=torch.long)
    lengths = (inputs >= 0).sum(1)
    if not (lengths > 0).any():
        raise ValueError("training windows: no user has two or more items, so there is nothing to predict")
    keep = lengths > 0
    inputs, targets, lengths = inputs[keep], targets[keep], lengths[keep]
    eos = torch.full((1, 1, 1), EOS_TOKEN, dtype=torch.long)

    def make_batches(epoch: int, generator: torch.Generator) -> Iterator[dict[str, torch.Tensor]]:
        for rows in bucketed_batches(lengths, batch_size, generator):
            width = int(lengths[rows].max())
            input_ids, attention_mask = history_tokens(item_tokens, inputs[rows, :width])
            target = targets[rows, :width]
            labels = torch.cat([item_tokens[target.clamp(min=0)], eos.expand(len(rows), width, 1)], dim=2)
            yield {"input_ids": input_ids, "attention_mask": attention_mask,
                   "labels": labels.masked_fill(target[..., None] < 0, IGNORE)}

    return make_batches


def _as_csr(sequences, n_items: int) -> tuple[torch.Tensor, torch.Tensor]:
    """list of item-index lists, or a `(indptr, indices)` pair -> long CSR tensors (validated)."""
    if isinstance(sequences, tuple) and len(sequences) == 2:
        indptr, indices = (torch.as_tensor(a, dtype=torch.long) for a in sequences)
    else:
        lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
        indptr = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
        indices = torch.tensor([i for s in sequences for i in s], dtype=torch.long)
    if indptr.ndim != 1 or indptr[0] != 0 or indptr[-1] != indices.numel() or (indptr.diff() < 0).any():
        raise ValueError("sequences: indptr must start at 0, be non-decreasing and end at len(indices)")
    if indices.numel() and (indices.min() < 0 or indices.max() >= n_items):
        raise ValueError(f"sequences: item indices must lie in [0, {n_items}), got [{int(indices.min())}, {int(indices.max())}]")
    return indptr, indices


def tiger_batches(
    sequences: Sequence[Sequence[int]] | tuple[torch.Tensor, torch.Tensor],
    item_tokens: torch.Tensor,
    *,
    batch_size: int = 256,
    mode: str = "all_prefixes",
    max_history: int = 20,
    shuffle: bool = True,
    length_buckets: bool = False,
) -> Callable[[int, torch.Generator], Iterator[dict[str, torch.Tensor]]]:
    """Training batches for `TIGER.loss` from users' chronological training sequences.

    Sample = (prefix of a sequence, next item). `all_prefixes` uses every prefix of every
    sequence each epoch (the paper); `sampled_prefix` draws one prefix per user per epoch. A batch
    holds `input_ids`/`attention_mask` (SID tokens of the last `max_history` prefix items, same
    layout as `TIGER.encoder_inputs`) and `labels` (next item's SID tokens + eos).
    `length_buckets` groups prefixes of similar length into a batch (`bucketed_batches`): on Beauty a
    random batch pads every prefix to the longest, ~4x the tokens actually there.
    """
    if mode not in ("all_prefixes", "sampled_prefix"):
        raise ValueError(f"mode must be 'all_prefixes' or 'sampled_prefix', got {mode!r}")
    if batch_size <= 0 or max_history <= 0:
        raise ValueError(f"batch_size and max_history must be positive, got {batch_size}, {max_history}")
    item_tokens = torch.as_tensor(item_tokens, dtype=torch.long)
    indptr, indices = _as_csr(sequences, item_tokens.shape[0])
    lengths = indptr.diff()
    user_start = indptr[:-1].repeat_interleave(lengths)  # per position: where its user's sequence starts
    all_targets = (torch.arange(indices.numel()) > user_start).nonzero().flatten()
    trainable = (lengths >= 2).nonzero().flatten()
    eos = torch.full((1, 1), EOS_TOKEN, dtype=torch.long)
    if all_targets.numel() == 0:
        raise ValueError("sequences: no user has two or more items, so there is nothing to predict")

    def make_batches(epoch: int, generator: torch.Generator) -> Iterator[dict[str, torch.Tensor]]:
        if mode == "all_prefixes":
            targets = all_targets
        else:
            offsets = (torch.rand(trainable.numel(), generator=generator) * (lengths[trainable] - 1)).long()
            targets = indptr[trainable] + 1 + offsets
        if length_buckets:
            windows = torch.minimum(targets - user_start[targets], torch.tensor(max_history))
            groups = [targets[rows] for rows in bucketed_batches(windows, batch_size, generator,
                                                                 sizes=torch.ones_like(windows))]
        else:
            if shuffle:
                targets = targets[torch.randperm(targets.numel(), generator=generator)]
            groups = targets.split(batch_size)
        for g in groups:
            first = torch.maximum(user_start[g], g - max_history)
            pos = first[:, None] + torch.arange(max_history)
            window = indices[torch.minimum(pos, g[:, None] - 1)].masked_fill(pos >= g[:, None], -1)
            input_ids, attention_mask = history_tokens(item_tokens, window)
            labels = torch.cat([item_tokens[indices[g]], eos.expand(g.numel(), 1)], dim=1)
            yield {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}

    return make_batches
