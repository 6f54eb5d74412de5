"""Collision resolution: make every item's code unique so a generator can name each item exactly.

- `dedup` (TIGER): append one level numbering the items within each collision group 0, 1, 2, ...; its
  size is the largest group.
- `sinkhorn` (CARD / LC-Rec): move colliding items (all but one per group) to free last-level codes with
  a Sinkhorn-balanced assignment on the tokenizer's last-level costs, a few rounds; `dedup` what remains.
"""

from __future__ import annotations

from typing import Any

import torch

from sidrec.semantic_ids import SemanticIDs
from sidrec.tokenizers.sinkhorn import sinkhorn_assign

RESOLUTIONS = ("none", "dedup", "sinkhorn")


def collision_groups(codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(group id, size of the item's group, rank of the item within its group by item index), each `[n]`."""
    _, inverse, counts = torch.unique(codes, dim=0, return_inverse=True, return_counts=True)
    order = torch.argsort(inverse, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(inverse)
    rank[order] = torch.arange(len(codes)) - starts[inverse[order]]
    return inverse, counts[inverse], rank


def dedup(codes: torch.Tensor, codebook_sizes: list[int], info: dict | None = None) -> SemanticIDs:
    """TIGER's extra level; added only when some code is shared (otherwise codes are returned as they are)."""
    _, size, rank = collision_groups(codes)
    largest = int(size.max()) if len(codes) else 1
    info = {**(info or {}), "dedup_level_size": largest if largest > 1 else 0}
    if largest == 1:
        return SemanticIDs(codes.clone(), list(codebook_sizes), "dedup", info)
    return SemanticIDs(torch.cat([codes, rank[:, None]], dim=1), [*codebook_sizes, largest], "dedup", info)


def sinkhorn_reassign(
    codes: torch.Tensor, costs: torch.Tensor, *, rounds: int = 20, epsilon: float = 0.01, n_iters: int = 50
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Move all but the first item of each collision group to a last-level code not yet taken within its prefix.

    `costs [n, K]`: cost of each last-level code for each item (given its prefix). Each round runs one
    Sinkhorn assignment over the movers and accepts one mover per free code, so groups only shrink;
    movers that lost a tie (e.g. identical items) retry in the next round.
    """
    if costs.shape[0] != codes.shape[0]:
        raise ValueError(f"costs has {costs.shape[0]} rows for {codes.shape[0]} items")
    codes = codes.clone()
    k = costs.shape[1]
    prefix = torch.unique(codes[:, :-1], dim=0, return_inverse=True)[1] if codes.shape[1] > 1 else torch.zeros(
        len(codes), dtype=torch.long
    )
    moved = torch.zeros(len(codes), dtype=torch.bool)
    used_rounds = 0
    for used_rounds in range(1, rounds + 1):
        _, _, rank = collision_groups(codes)
        movers = rank > 0
        if not movers.any():
            used_rounds -= 1
            break
        taken = prefix[~movers] * k + codes[~movers, -1]
        candidate = prefix[movers, None] * k + torch.arange(k)
        cost = costs[movers].double().masked_fill(torch.isin(candidate, taken), torch.inf)
        free = torch.isfinite(cost).any(dim=1)
        if not free.any():
            break
        idx = movers.nonzero().flatten()[free]
        proposal = sinkhorn_assign(cost[free], epsilon=epsilon, n_iters=n_iters)
        # Several movers may pick the same free code: accept one per code, the rest retry next round.
        accept = collision_groups(torch.stack([prefix[idx], proposal], dim=1))[2] == 0
        if not accept.any():
            break
        codes[idx[accept], -1] = proposal[accept]
        moved[idx[accept]] = True
    remaining = 1.0 - torch.unique(codes, dim=0).shape[0] / max(len(codes), 1)
    return codes, {"sinkhorn_rounds": used_rounds, "sinkhorn_moved": int(moved.sum()), "sinkhorn_collision_rate": remaining}


def resolve_collisions(
    codes: torch.Tensor,
    codebook_sizes: list[int],
    method: str = "dedup",
    *,
    costs: torch.Tensor | None = None,
    **sinkhorn_options: Any,
) -> SemanticIDs:
    """Unique `SemanticIDs` from raw codes; `sinkhorn` needs `costs` (tokenizer.last_level_costs(x))."""
    codes = torch.as_tensor(codes).to(torch.long)
    if method == "none":
        return SemanticIDs(codes.clone(), list(codebook_sizes), "none")
    if method == "dedup":
        return dedup(codes, codebook_sizes)
    if method == "sinkhorn":
        if costs is None:
            raise ValueError("resolution 'sinkhorn' needs the tokenizer's last-level costs (costs=...)")
        moved, info = sinkhorn_reassign(codes, costs, **sinkhorn_options)
        sids = dedup(moved, codebook_sizes, info)
        sids.resolution = "sinkhorn"
        return sids
    raise ValueError(f"unknown collision resolution {method!r}; choose one of {list(RESOLUTIONS)}")
