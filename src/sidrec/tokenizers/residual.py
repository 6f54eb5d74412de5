"""Residual quantizer: L codebooks, each quantizing what the previous levels left over.

Shared by RQ-VAE / NU-RQ-VAE (as a trainable module) and residual k-means (k-means init only).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from sidrec.tokenizers.kmeans import kmeans, nearest, sq_distances
from sidrec.tokenizers.sinkhorn import sinkhorn_assign


class ResidualQuantizer(nn.Module):
    """L levels of K codewords; level l quantizes what levels < l left over (greedy nearest codeword).

    Training loss per level: codebook term ||sg(r) - e||^2 + beta * commitment ||r - sg(e)||^2, averaged
    over levels; the output carries straight-through gradients to the input.
    """

    def __init__(self, n_levels: int, codebook_size: int, dim: int, beta: float = 0.25) -> None:
        super().__init__()
        self.beta = beta
        self.codebooks = nn.Parameter(torch.randn(n_levels, codebook_size, dim) * 0.01)

    @property
    def n_levels(self) -> int:
        return self.codebooks.shape[0]

    @property
    def codebook_size(self) -> int:
        return self.codebooks.shape[1]

    @torch.no_grad()
    def kmeans_init(self, z: torch.Tensor, *, niter: int = 25, seed: int = 0) -> None:
        """Each level's codebook = k-means centroids of that level's residuals on `z` (a large batch)."""
        r = z.detach()
        for level in range(self.n_levels):
            self.codebooks[level] = kmeans(r, self.codebook_size, niter=niter, seed=seed + level)
            r = r - self.codebooks[level][nearest(r, self.codebooks[level])]

    def forward(
        self, z: torch.Tensor, *, sinkhorn_last: bool = False, sinkhorn_epsilon: float = 0.01, sinkhorn_iters: int = 50
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(quantized z with straight-through gradient, codes [n, L], quantization loss)."""
        r = z
        total = torch.zeros_like(z)
        codes, loss = [], z.new_zeros(())
        for level in range(self.n_levels):
            book = self.codebooks[level]
            dist = sq_distances(r.detach(), book.detach())
            if sinkhorn_last and level == self.n_levels - 1:
                idx = sinkhorn_assign(dist, epsilon=sinkhorn_epsilon, n_iters=sinkhorn_iters)
            else:
                idx = dist.argmin(-1)
            q = book[idx]
            loss = loss + F.mse_loss(q, r.detach()) + self.beta * F.mse_loss(r, q.detach())
            total = total + q
            r = r - q.detach()
            codes.append(idx)
        z_q = z + (total - z).detach()
        return z_q, torch.stack(codes, dim=1), loss / self.n_levels

    @torch.no_grad()
    def residuals(self, z: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Greedy codes [n, L] and the residual entering each level (for costs and restarts)."""
        r, codes, res = z, [], []
        for level in range(self.n_levels):
            res.append(r)
            idx = nearest(r, self.codebooks[level])
            r = r - self.codebooks[level][idx]
            codes.append(idx)
        return torch.stack(codes, dim=1), res

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        return self.residuals(z)[0]

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Sum of the chosen codewords: the quantized latent for `codes [n, L]`."""
        levels = torch.arange(self.n_levels, device=codes.device)
        return self.codebooks[levels, codes].sum(dim=1)

    @torch.no_grad()
    def restart_dead(self, z: torch.Tensor, usage: torch.Tensor, generator: torch.Generator) -> int:
        """Re-seed codewords unused since the last restart (`usage [L, K]` counts) with random residuals."""
        _, res = self.residuals(z)
        n_restarted = 0
        for level in range(self.n_levels):
            dead = (usage[level] == 0).nonzero().flatten()
            if len(dead):
                pick = torch.randint(len(z), (len(dead),), generator=generator).to(z.device)
                self.codebooks[level, dead] = res[level][pick]
                n_restarted += len(dead)
        return n_restarted
