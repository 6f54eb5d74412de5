"""NU-RQ-VAE (CARD): RQ-VAE whose residual quantizer works on h(z), h a learnable invertible transform.

encoder -> z -> d = h(z) -> residual quantization (Sinkhorn-balanced last level while training) ->
h^-1 -> decoder. Loss = recon MSE + quantization + consistency MSE(h^-1(h(z)), z) + (Kumaraswamy)
`fit`, the negative log-likelihood of the standardised latents under K, which trains only a and b
so that K tracks the latent marginal as the encoder moves; the epoch with the lowest collision rate
(then loss) is kept.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F

from sidrec.tokenizers.base import register
from sidrec.tokenizers.nonuniform import KumaraswamyTransform, build_transform
from sidrec.tokenizers.rqvae import RQVAE, RQVAEModel

# epoch: before every epoch the transform's statistics (and K's a, b, by maximum likelihood) are set from
# every item's current latents, then held for the epoch; ema: running averages of the training batches,
# which lag an encoder whose latents drift by more than their spread (CARD's near-identical image
# embeddings: the running mean ended ~80 spreads from the data and sigmoid(s) saturated at 0 / 1).
ANCHORS = ("epoch", "ema")


class NURQVAEModel(RQVAEModel):
    def __init__(self, *args: Any, transform: str = "kumaraswamy", space: str = "unit", anchor: str = "epoch") -> None:
        super().__init__(*args)
        if anchor not in ANCHORS:
            raise ValueError(f"anchor must be one of {ANCHORS}, got {anchor!r}")
        self.transform = build_transform(transform, self.quantizer.codebooks.shape[-1], space)
        self.anchors = anchor == "epoch"
        if self.anchors:
            self.transform.freeze_statistics()

    def anchor(self, z: torch.Tensor) -> None:
        self.transform.anchor(z)

    def to_quant(self, z: torch.Tensor) -> torch.Tensor:
        return self.transform(z)

    def from_quant(self, d: torch.Tensor) -> torch.Tensor:
        return self.transform.inverse(d)

    def aux_losses(self, z: torch.Tensor, d: torch.Tensor) -> dict[str, torch.Tensor]:
        losses = {"consistency": F.mse_loss(self.transform.inverse(d), z)}
        if isinstance(self.transform, KumaraswamyTransform):  # keep K fitted to the moving latents
            losses["fit"] = self.transform.fit_loss(z)
        return losses


@register("nurqvae")
class NURQVAE(RQVAE):
    """CARD's paper defaults: latent 32, 4 x 256, AdamW 1e-3 / wd 1e-4, batch 1024, Sinkhorn on the last level."""

    defaults = {
        **RQVAE.defaults,
        "n_levels": 4,
        "transform": "kumaraswamy",
        "space": "unit",  # kumaraswamy: quantize K(u) in (0, 1) (CARD) or its logit (never saturates)
        "anchor": "epoch",  # how the transform's statistics follow the encoder: see ANCHORS
        "standardize_input": True,  # CARD's image embeddings are nearly identical: see RQVAEModel
        "sinkhorn_last": True,
        "select": "collisions",
    }

    def _build_model(self, input_dim: int) -> NURQVAEModel:
        o = self.options
        return NURQVAEModel(
            input_dim, list(o["hidden_dims"]), o["latent_dim"], o["n_levels"], o["codebook_size"], o["beta"],
            transform=o["transform"], space=o["space"], anchor=o["anchor"],
        )

    def latents(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self._batched(x, self.model.latent)
        return z, self._batched(z, self.model.transform)
