"""Ranking metrics for one held-out target per user, computed from each user's top-K list.

With a single relevant item, Recall@K is a hit indicator and NDCG@K = 1 / log2(rank + 2) for a
0-based rank below K (the ideal DCG is 1).
"""

from __future__ import annotations

import torch


def target_ranks(topk_items: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """0-based position of each target in its top-K row; K (= a miss) when absent."""
    hits = topk_items == targets[:, None]
    k = topk_items.shape[1]
    first = torch.where(hits, torch.arange(k).expand_as(hits), torch.full_like(hits, k, dtype=torch.long))
    return first.min(dim=1).values


def ranking_metrics(topk_items: torch.Tensor, targets: torch.Tensor, ks: list[int]) -> dict[str, float]:
    if max(ks) > topk_items.shape[1]:
        raise ValueError(f"need top-{max(ks)} lists, got top-{topk_items.shape[1]}")
    ranks = target_ranks(topk_items, targets).double()
    gains = 1.0 / torch.log2(ranks + 2.0)
    out = {}
    for k in ks:
        hit = ranks < k
        out[f"recall@{k}"] = hit.double().mean().item()
        out[f"ndcg@{k}"] = torch.where(hit, gains, torch.zeros_like(gains)).mean().item()
    return out


def coverage(topk_items: torch.Tensor, n_items: int, k: int = 10) -> float:
    """Share of the catalogue that appears in at least one user's top-k."""
    shown = topk_items[:, :k].flatten()
    shown = shown[shown >= 0]
    return torch.unique(shown).numel() / n_items


def tail_items(popularity: torch.Tensor, tail_fraction: float = 0.8) -> torch.Tensor:
    """Boolean mask of the `tail_fraction` least popular items (ties broken by item index)."""
    order = torch.sort(popularity, stable=True).indices
    mask = torch.zeros(popularity.numel(), dtype=torch.bool)
    mask[order[: int(round(tail_fraction * popularity.numel()))]] = True
    return mask


def head_tail_recall(topk_items: torch.Tensor, targets: torch.Tensor, tail_mask: torch.Tensor,
                     k: int = 10) -> dict[str, float]:
    hit = (target_ranks(topk_items[:, :k], targets) < k).double()
    is_tail = tail_mask[targets]
    def mean(x: torch.Tensor) -> float:
        return x.mean().item() if x.numel() else float("nan")
    return {f"recall@{k}_head": mean(hit[~is_tail]), f"recall@{k}_tail": mean(hit[is_tail]),
            "tail_target_share": is_tail.double().mean().item()}
