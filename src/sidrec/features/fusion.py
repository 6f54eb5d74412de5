"""Fusion of several item representations into one: weighted concatenation, optional PCA.

Each block is L2-normalised per item before weighting, so a 1280-d image block does not drown a
384-d text block just by having larger norms; block weight w scales that block's share of the
squared norm to w^2 / sum(w^2).
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import pandas as pd
import torch
import torch.nn.functional as F

from sidrec.features.base import DEFAULT_CACHE_DIR, build_encoder, encoder_requirements
from sidrec.features.embeddings import ItemEmbeddings


def pca_project(x: torch.Tensor, dim: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Centre `x` and project it on its top-`dim` principal axes; returns (projection, explained ratio).

    Exact SVD for small matrices, randomised `torch.pca_lowrank` (seeded) otherwise. Component signs are
    fixed (largest-magnitude loading positive) so the output is reproducible.
    """
    n, d = x.shape
    if not 0 < dim <= min(n, d):
        raise ValueError(f"PCA dim must be in [1, min(n_items={n}, d={d})], got {dim}")
    centred = x - x.mean(dim=0, keepdim=True)
    if min(n, d) <= 2048:
        _, s, vh = torch.linalg.svd(centred, full_matrices=False)
        v = vh[:dim].T
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            _, s, v = torch.pca_lowrank(centred, q=min(dim + 10, n, d), center=False, niter=4)
        v = v[:, :dim]
    signs = torch.sign(v.gather(0, v.abs().argmax(dim=0, keepdim=True)))
    v = v * signs
    total = centred.square().sum()
    explained = (s[:dim].square().sum() / total) if total > 0 else torch.tensor(0.0)
    return centred @ v, explained


def fuse(
    blocks: Sequence[ItemEmbeddings],
    weights: Sequence[float] | None = None,
    *,
    dim: int | None = None,
    normalize: bool = True,
) -> ItemEmbeddings:
    """Concatenate per-item-L2-normalised, weighted blocks; optionally PCA to `dim`; optionally re-normalise."""
    if not blocks:
        raise ValueError("fuse: no embedding blocks given")
    n = {b.n_items for b in blocks}
    if len(n) != 1:
        raise ValueError(f"fuse: blocks disagree on n_items: {[(b.encoder, b.n_items) for b in blocks]}")
    weights = list(weights) if weights is not None else [1.0] * len(blocks)
    if len(weights) != len(blocks) or any(w < 0 for w in weights):
        raise ValueError(f"fuse: need one non-negative weight per block, got {weights} for {len(blocks)} blocks")
    x = torch.cat([w * F.normalize(b.vectors, dim=1) for b, w in zip(blocks, weights)], dim=1)
    info: dict[str, Any] = {
        "blocks": [{"encoder": b.encoder, "dim": b.dim, "weight": w} for b, w in zip(blocks, weights)],
        "pca_dim": dim,
    }
    if dim is not None:
        x, explained = pca_project(x, dim)
        info["pca_explained_variance"] = float(explained)
    if normalize:
        x = F.normalize(x, dim=1)
    info["normalized"] = normalize
    return ItemEmbeddings(x, "fusion", info)


class FusionEncoder:
    """Fuse the outputs of other registered encoders (or precomputed `embeddings=[...]` in ctx).

    `parts` entries are encoder names or `{"name": ..., **options}` dicts; each part caches its own
    output, and fusion itself is cheap, so this encoder keeps no cache of its own.
    """

    name = "fusion"

    def __init__(
        self,
        parts: Sequence[str | dict] = ("text",),
        *,
        weights: Sequence[float] | None = None,
        dim: int | None = None,
        normalize: bool = True,
        cache_dir: str | os.PathLike | None = DEFAULT_CACHE_DIR,
    ) -> None:
        self.parts = [{"name": p} if isinstance(p, str) else dict(p) for p in parts]
        if any("name" not in p or p["name"] == "fusion" for p in self.parts):
            raise ValueError(f"fusion parts must name other encoders, got {list(parts)}")
        self.weights, self.dim, self.normalize, self.cache_dir = weights, dim, normalize, cache_dir

    def requirements(self) -> list[tuple[str, str, str]]:
        return [need for part in self.parts
                for need in encoder_requirements(build_encoder(part["name"], **{k: v for k, v in part.items() if k != "name"}))]

    def encode(self, items: pd.DataFrame, embeddings: Sequence[ItemEmbeddings] | None = None, **ctx: Any) -> ItemEmbeddings:
        if embeddings is None:
            embeddings = []
            for part in self.parts:
                options = {k: v for k, v in part.items() if k != "name"}
                options.setdefault("cache_dir", self.cache_dir)
                embeddings.append(build_encoder(part["name"], **options).encode(items, **ctx))
        fused = fuse(embeddings, self.weights, dim=self.dim, normalize=self.normalize)
        if fused.n_items != len(items):
            raise ValueError(f"fusion: embeddings have {fused.n_items} rows for {len(items)} items")
        return fused
