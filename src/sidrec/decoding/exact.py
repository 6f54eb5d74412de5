"""Exact scoring of every catalogue item: the log-probability of its SID tokens + eos.

Expands the whole trie level by level instead of teacher-forcing each item separately, so a
prefix shared by many items is decoded once (decoder rows per user = number of trie nodes, not
n_items x code length). It is the reference a beam search approximates, and a ranker in its own
right when the catalogue is small enough.
"""

from __future__ import annotations

import torch

from sidrec.decoding.beam_search import IncrementalDecoder
from sidrec.semantic_ids import EOS_TOKEN, PAD_TOKEN
from sidrec.decoding.trie import SIDTrie


@torch.no_grad()
def exact_item_scores(
    model: IncrementalDecoder, input_ids: torch.Tensor, attention_mask: torch.Tensor, trie: SIDTrie
) -> torch.Tensor:
    """`[B, n_items]` log p(item | history) for every item (dense item order)."""
    B = input_ids.shape[0]
    device = input_ids.device
    state = model.start(input_ids, attention_mask)
    tokens = torch.full((B, 1), PAD_TOKEN, dtype=torch.long, device=device)
    scores = torch.zeros((B, 1), device=device)
    for level in range(trie.n_levels):
        offset = trie.token_offsets[level]
        log_probs = model.step(state, tokens)  # [B, nodes at this level, vocab]
        parents, codes = trie.parents[level].to(device), trie.codes_at[level].to(device)
        scores = scores[:, parents] + log_probs[:, parents, offset + codes]
        tokens = (offset + codes).expand(B, -1)
        state.reorder(parents.expand(B, -1))
    return scores + model.step(state, tokens)[..., EOS_TOKEN]


def exact_top_k(
    model: IncrementalDecoder,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    trie: SIDTrie,
    k: int,
    *,
    batch_size: int = 16,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Best k items `[B, k]` by exact score, processed `batch_size` users at a time (memory grows
    with users x trie nodes)."""
    if not 0 < k <= trie.n_items:
        raise ValueError(f"k must be in [1, {trie.n_items}], got {k}")
    out = [
        exact_item_scores(model, ids, mask, trie).topk(k, dim=1)
        for ids, mask in zip(input_ids.split(batch_size), attention_mask.split(batch_size))
    ]
    return torch.cat([o.indices for o in out]), torch.cat([o.values for o in out])
