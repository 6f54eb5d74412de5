"""Plug-and-play non-uniform quantization: any quantizer applied to h(x) instead of x (CARD).

Fit: standardise each input dimension, fit a Kumaraswamy CDF per dimension by maximum likelihood
on sigmoid(x_std), then fit the inner quantizer on h(x) = K(sigmoid(x_std)), whose marginals are
close to uniform, so codewords are spread where the data is (`nu_space=logit`: on logit h(x), which
never saturates). Decode inverts h (standardisation included).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from sidrec.tokenizers.base import Tokenizer, register
from sidrec.tokenizers.nonuniform import KumaraswamyTransform
from sidrec.tokenizers.pq import OPQ, PQ
from sidrec.tokenizers.rkmeans import RKMeans


class NonUniformTokenizer(Tokenizer):
    """Wraps `inner_cls`; accepts all of its options plus `nu_space` (unit | logit, see KumaraswamyTransform)."""

    inner_cls: ClassVar[type[Tokenizer]]
    own_defaults: ClassVar[dict[str, Any]] = {"nu_space": "unit"}

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.inner = self.inner_cls(**{k: v for k, v in self.options.items() if k not in self.own_defaults})
        self.transform: KumaraswamyTransform | None = None

    @property
    def codebook_sizes(self) -> list[int]:
        return self.inner.codebook_sizes

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.transform(x)

    def _fit(self, x: torch.Tensor) -> None:
        self.transform = self._new_transform(x.shape[1])
        self.transform.fit(x, seed=int(self.options["seed"]))
        self.inner.fit(self._forward(x))

    def _new_transform(self, dim: int) -> KumaraswamyTransform:
        return KumaraswamyTransform(dim, space=self.options["nu_space"]).requires_grad_(False).eval()

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner.encode(self._forward(x))

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.transform.inverse(self.inner.decode(codes))

    def last_level_costs(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner.last_level_costs(self._forward(x))

    def latents(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        standardise = self.transform.standardise
        return (x - standardise.mean) / standardise.std, self._forward(x)

    def _state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        inner_tensors, inner_meta = self.inner._state()
        tensors = {f"transform.{k}": v for k, v in self.transform.state_dict().items()}
        return {**tensors, **{f"inner.{k}": v for k, v in inner_tensors.items()}}, {"inner": inner_meta}

    def _set_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        self.transform = self._new_transform(self.input_dim)
        self.transform.load_state_dict(_strip(tensors, "transform."))
        self.inner.input_dim = self.input_dim
        self.inner._set_state(_strip(tensors, "inner."), meta["inner"])


def _strip(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def _nu_variant(inner_cls: type[Tokenizer]) -> type[NonUniformTokenizer]:
    cls = type(
        f"NU{inner_cls.__name__}",
        (NonUniformTokenizer,),
        {
            "inner_cls": inner_cls,
            "defaults": {**inner_cls.defaults, **NonUniformTokenizer.own_defaults},
            "__doc__": f"Kumaraswamy-transformed {inner_cls.__name__} (plug-and-play non-uniform quantization).",
        },
    )
    return register(f"nu-{inner_cls.name}")(cls)


NURKMeans = _nu_variant(RKMeans)
NUPQ = _nu_variant(PQ)
NUOPQ = _nu_variant(OPQ)
