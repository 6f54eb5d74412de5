"""Residual k-means (RQ-KMeans): level l = faiss k-means on the residuals left by levels < l; no training loop."""

from __future__ import annotations

from typing import Any

import torch

from sidrec.tokenizers.base import Tokenizer, register
from sidrec.tokenizers.kmeans import sq_distances
from sidrec.tokenizers.residual import ResidualQuantizer


@register("rkmeans")
class RKMeans(Tokenizer):
    defaults = {**Tokenizer.defaults, "n_levels": 3, "codebook_size": 256, "kmeans_iters": 25}

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.quantizer: ResidualQuantizer | None = None

    @property
    def codebook_sizes(self) -> list[int]:
        return [int(self.options["codebook_size"])] * int(self.options["n_levels"])

    def _new_quantizer(self, dim: int) -> ResidualQuantizer:
        return ResidualQuantizer(int(self.options["n_levels"]), int(self.options["codebook_size"]), dim).requires_grad_(False)

    def _fit(self, x: torch.Tensor) -> None:
        self.quantizer = self._new_quantizer(x.shape[1])
        self.quantizer.kmeans_init(x, niter=int(self.options["kmeans_iters"]), seed=int(self.options["seed"]))

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.quantizer.quantize(x)

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.quantizer.lookup(codes)

    def last_level_costs(self, x: torch.Tensor) -> torch.Tensor:
        _, res = self.quantizer.residuals(x)
        return sq_distances(res[-1], self.quantizer.codebooks[-1])

    def _state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return {"codebooks": self.quantizer.codebooks.data}, {}

    def _set_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        self.quantizer = self._new_quantizer(self.input_dim)
        self.quantizer.codebooks.data.copy_(tensors["codebooks"])
