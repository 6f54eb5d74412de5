"""Sinkhorn-balanced assignment: spread items over codewords instead of piling them on the nearest few.

Used on the last residual level while training NU-RQ-VAE and to re-assign colliding items. Solves an
entropic optimal-transport problem with uniform marginals (each item has mass 1/n, each codeword
capacity 1/K) in the log domain, then gives each item the codeword carrying most of its mass.
"""

from __future__ import annotations

import math

import torch


def sinkhorn_plan(cost: torch.Tensor, *, epsilon: float = 0.01, n_iters: int = 50) -> torch.Tensor:
    """Log transport plan `[n, K]` for `cost [n, K]` (rescaled to [0, 1] so `epsilon` is scale-free).

    Entries of `cost` that are +inf are forbidden (zero mass) as long as a row keeps a finite entry.
    Runs in the dtype of `cost` (float32 is enough in the log domain and twice as fast as float64).
    """
    if cost.ndim != 2 or cost.shape[0] == 0 or cost.shape[1] == 0:
        raise ValueError(f"sinkhorn: cost must be a non-empty [n, K] matrix, got shape {tuple(cost.shape)}")
    if cost.dtype not in (torch.float32, torch.float64):
        cost = cost.float()
    finite = torch.isfinite(cost)
    if not finite.any(dim=1).all():
        raise ValueError("sinkhorn: some row has no finite cost (no allowed codeword)")
    lo, hi = cost[finite].min(), cost[finite].max()
    scaled = torch.where(finite, (cost - lo) / (hi - lo).clamp_min(1e-12), torch.inf)
    log_k = -scaled / epsilon
    n, k = cost.shape
    log_a = torch.full((n,), -math.log(n), dtype=cost.dtype, device=cost.device)
    log_b = torch.full((k,), -math.log(k), dtype=cost.dtype, device=cost.device)
    f = torch.zeros_like(log_a)
    g = torch.zeros_like(log_b)
    for _ in range(n_iters):
        f = log_a - torch.logsumexp(log_k + g, dim=1)
        g = log_b - torch.logsumexp(log_k + f[:, None], dim=0)
        g = torch.where(torch.isfinite(g), g, torch.zeros_like(g))  # a column nobody may use
    return log_k + f[:, None] + g


def sinkhorn_assign(cost: torch.Tensor, *, epsilon: float = 0.01, n_iters: int = 50) -> torch.Tensor:
    """Balanced hard assignment `[n]` (codeword index per item) from a cost matrix `[n, K]`."""
    return sinkhorn_plan(cost, epsilon=epsilon, n_iters=n_iters).argmax(dim=1)
