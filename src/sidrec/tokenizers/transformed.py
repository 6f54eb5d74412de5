"""Plug-and-play non-uniform quantization: any quantizer applied to h(x) instead of x (CARD).

Fit: standardise each input dimension, fit a Kumaraswamy CDF per dimension by maximum likelihood
on sigmoid(x_std), then fit the inner quantizer on h(x_std), whose marginals are close to uniform, so
codewords are spread where the data is. Decode inverts h and the standardisation.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from sidrec.tokenizers.base import Tokenizer, register
from sidrec.tokenizers.nonuniform import KumaraswamyTransform, fit_kumaraswamy
from sidrec.tokenizers.pq import OPQ, PQ
from sidrec.tokenizers.rkmeans import RKMeans


class NonUniformTokenizer(Tokenizer):
    """Wraps `inner_cls`; accepts all of its options plus `nu_eps` (clamp of the transform)."""

    inner_cls: ClassVar[type[Tokenizer]]
    own_defaults: ClassVar[dict[str, Any]] = {"nu_eps": 1e-6}

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        inner_opts = {k: v for k, v in self.options.items() if k not in self.own_defaults}
        self.inner = self.inner_cls(**inner_opts)
        self.mean: torch.Tensor | None = None
        self.std: torch.Tensor | None = None
        self.transform: KumaraswamyTransform | None = None

    @property
    def codebook_sizes(self) -> list[int]:
        return self.inner.codebook_sizes

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.transform((x - self.mean) / self.std)

    def _fit(self, x: torch.Tensor) -> None:
        self.mean, self.std = x.mean(0), x.std(0).clamp_min(1e-8)
        self.transform = KumaraswamyTransform(x.shape[1], eps=float(self.options["nu_eps"])).requires_grad_(False)
        a, b = fit_kumaraswamy(
            torch.sigmoid((x - self.mean) / self.std), eps=float(self.options["nu_eps"]), seed=int(self.options["seed"])
        )
        self.transform.set_params(a, b)
        self.inner.fit(self._forward(x))

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner.encode(self._forward(x))

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.transform.inverse(self.inner.decode(codes)) * self.std + self.mean

    def last_level_costs(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner.last_level_costs(self._forward(x))

    def latents(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (x - self.mean) / self.std, self._forward(x)

    def _state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        inner_tensors, inner_meta = self.inner._state()
        tensors = {"mean": self.mean, "std": self.std, **{f"transform.{k}": v for k, v in self.transform.state_dict().items()}}
        return {**tensors, **{f"inner.{k}": v for k, v in inner_tensors.items()}}, {"inner": inner_meta}

    def _set_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        self.mean, self.std = tensors["mean"], tensors["std"]
        self.transform = KumaraswamyTransform(len(self.mean), eps=float(self.options["nu_eps"])).requires_grad_(False)
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
