"""Batched beam search constrained to a catalogue's semantic-ID trie.

All users of a batch and all their beams advance together: one decoder call per level, the
allowed-code mask of every beam is one gather from the trie, and only candidates that extend a
real catalogue prefix can win a beam (the rest are -inf before top-k), so every finished beam is
an item. The model keeps per-user state (encoder output, cross-attention keys/values) shared by
its beams and per-beam self-attention caches that follow the winners.

Scores are full-vocabulary log-probabilities (not renormalised over the allowed codes), summed
over the item's SID tokens and the final eos - the probability the model gives to generating
exactly that item, the same quantity Hugging Face `generate` ranks by.
"""

from __future__ import annotations

from typing import Protocol

import torch

from sidrec.decoding.trie import SIDTrie
from sidrec.semantic_ids import EOS_TOKEN, PAD_TOKEN


class DecodeState(Protocol):
    def reorder(self, parents: torch.Tensor) -> None:
        """Beam j of user b now continues beam `parents[b, j]`."""


class IncrementalDecoder(Protocol):
    """What a generator must offer to be decoded here (e.g. `sidrec.models.tiger.TIGER`)."""

    def start(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> DecodeState: ...

    def step(self, state: DecodeState, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens `[B, w]` -> next-token log-probs `[B, w, vocab]`."""
        ...


@torch.no_grad()
def constrained_beam_search(
    model: IncrementalDecoder,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    trie: SIDTrie,
    *,
    beam_width: int,
    k: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k catalogue items `[B, k]` per user and their log-probabilities, best first."""
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    if beam_width < k:
        raise ValueError(f"beam_width ({beam_width}) must be >= k ({k}): a beam search returns at most one item per beam")
    if k > trie.n_items:
        raise ValueError(f"k ({k}) exceeds the catalogue size ({trie.n_items})")
    B = input_ids.shape[0]
    device = input_ids.device
    state = model.start(input_ids, attention_mask)
    tokens = torch.full((B, 1), PAD_TOKEN, dtype=torch.long, device=device)
    nodes = torch.zeros((B, 1), dtype=torch.long, device=device)  # trie node of each beam (root)
    scores = torch.zeros((B, 1), device=device)
    for level, size in enumerate(trie.codebook_sizes):
        offset = trie.token_offsets[level]
        log_probs = model.step(state, tokens)[..., offset : offset + size]  # [B, w, size]
        children = trie.next_nodes(level, nodes.clamp(min=0))  # dead beams (-1) are -inf anyway
        cand = (scores[..., None] + log_probs).masked_fill(children < 0, float("-inf")).flatten(1)
        scores, flat = cand.topk(min(beam_width, cand.shape[1]), dim=1)
        parents = torch.div(flat, size, rounding_mode="floor")
        nodes = children.flatten(1).gather(1, flat)
        tokens = flat - parents * size + offset
        state.reorder(parents)
    scores = scores + model.step(state, tokens)[..., EOS_TOKEN]
    scores, order = scores.topk(k, dim=1)
    return nodes.gather(1, order), scores
