"""Product quantization (PQ) and optimised PQ (OPQ), as RPG uses them: M sub-vectors, K codewords each.

faiss learns the OPQ rotation; the per-subspace codebooks are seeded faiss k-means; encoding and
decoding are plain torch on the stored rotation and codebooks (no faiss object is serialised).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from sidrec.tokenizers.base import Tokenizer, register
from sidrec.tokenizers.kmeans import faiss_module, kmeans, sq_distances


@register("pq")
class PQ(Tokenizer):
    defaults = {**Tokenizer.defaults, "n_subspaces": 4, "codebook_size": 256, "kmeans_iters": 25, "opq_iters": 25}
    rotate = False

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.rotation: torch.Tensor | None = None  # [d, d] orthonormal; y = x @ rotation.T
        self.codebooks: torch.Tensor | None = None  # [M, K, d / M]

    @property
    def codebook_sizes(self) -> list[int]:
        return [int(self.options["codebook_size"])] * int(self.options["n_subspaces"])

    def _fit(self, x: torch.Tensor) -> None:
        n, d = x.shape
        m, k = int(self.options["n_subspaces"]), int(self.options["codebook_size"])
        if d % m:
            raise ValueError(f"n_subspaces={m} must divide the embedding dimension d={d}")
        self.rotation = torch.eye(d)
        if n < k:
            raise ValueError(f"PQ needs at least codebook_size={k} training vectors, got {n}")
        if self.rotate:
            faiss = faiss_module()
            opq = faiss.OPQMatrix(d, m)
            opq.niter = int(self.options["opq_iters"])
            inner_pq = faiss.ProductQuantizer(d, m, int(math.log2(k)))  # rotation learned at our K (2^floor(log2 K))
            opq.pq = inner_pq
            opq.train(np.ascontiguousarray(x.numpy()))
            self.rotation = torch.from_numpy(faiss.vector_to_array(opq.A).reshape(d, d).copy())
        sub = self._split(x)
        seed = int(self.options["seed"])
        self.codebooks = torch.stack(
            [kmeans(sub[:, i], k, niter=int(self.options["kmeans_iters"]), seed=seed + i) for i in range(m)]
        )

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        """Rotate and cut into `[n, M, d / M]` sub-vectors."""
        return (x @ self.rotation.T).reshape(len(x), int(self.options["n_subspaces"]), -1)

    def _distances(self, x: torch.Tensor) -> torch.Tensor:
        """`[n, M, K]` squared distance of each sub-vector to each codeword of its subspace."""
        sub = self._split(x).transpose(0, 1)  # [M, n, dsub]
        return torch.stack([sq_distances(s, c) for s, c in zip(sub, self.codebooks)], dim=1)

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self._distances(part).argmin(-1) for part in x.split(16384)])

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        sub = self.codebooks[torch.arange(codes.shape[1]), codes]  # [n, M, dsub]
        return sub.reshape(len(codes), -1) @ self.rotation

    def last_level_costs(self, x: torch.Tensor) -> torch.Tensor:
        return self._distances(x)[:, -1]

    def _state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return {"rotation": self.rotation, "codebooks": self.codebooks}, {}

    def _set_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        self.rotation, self.codebooks = tensors["rotation"], tensors["codebooks"]


@register("opq")
class OPQ(PQ):
    """PQ after a learned orthonormal rotation that balances variance across subspaces."""

    rotate = True
