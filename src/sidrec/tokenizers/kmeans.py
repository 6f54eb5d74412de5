"""k-means (faiss, seeded) and nearest-codeword search: the building blocks of every quantizer here."""

from __future__ import annotations

import numpy as np
import torch

from sidrec.extras import require


FAISS = ("faiss", "faiss", "k-means (every tokenizer's codebook initialisation, rkmeans, pq, opq)")


def faiss_module():
    return require(*FAISS)


def kmeans(x: torch.Tensor, k: int, *, niter: int = 25, seed: int = 0) -> torch.Tensor:
    """`[k, d]` centroids of `x [n, d]` by faiss k-means; deterministic for a given seed."""
    n, d = x.shape
    if n < k:
        raise ValueError(f"k-means needs at least k={k} training vectors, got {n}; lower codebook_size")
    data = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
    km = faiss_module().Kmeans(d, k, niter=niter, seed=int(seed), verbose=False)
    km.train(data)
    return torch.from_numpy(km.centroids.copy()).to(x.device)


def sq_distances(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """`[n, k]` squared Euclidean distances (expanded form, clamped at 0)."""
    d = (x * x).sum(-1, keepdim=True) - 2 * x @ centroids.T + (centroids * centroids).sum(-1)
    return d.clamp_min_(0)


def nearest(x: torch.Tensor, centroids: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
    """Index of the nearest centroid for each row of `x` (chunked to bound memory)."""
    out = torch.empty(len(x), dtype=torch.long, device=x.device)
    for start in range(0, len(x), chunk):
        out[start : start + chunk] = sq_distances(x[start : start + chunk], centroids).argmin(-1)
    return out
