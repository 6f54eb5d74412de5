"""RQ-VAE (TIGER): MLP encoder -> residual quantization of the latent -> MLP decoder.

`RQVAEModel` is reused by NU-RQ-VAE (nurqvae.py), which only inserts an
invertible transform around the quantizer; the training loop (`RQVAE._fit`) is shared too.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from sidrec.numerics import flushing_subnormals
from sidrec.tokenizers.base import Tokenizer, register
from sidrec.tokenizers.kmeans import sq_distances
from sidrec.tokenizers.residual import ResidualQuantizer


def mlp(dims: list[int]) -> nn.Sequential:
    """Linear layers with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(d_in, d_out))
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class RQVAEModel(nn.Module):
    """x -> [standardise] -> encoder -> z -> [to quantization space] -> RQ -> [back] -> decoder -> x_hat.

    Standardising the input per dimension (`standardize_input`) matters when embeddings are nearly
    identical (CARD's rendered units through a vision encoder: mean cosine 0.98, per-dimension std
    0.002): the encoder then sees what tells items apart, not their shared direction, its latents
    spread by more than one optimizer step moves them, and the reconstruction loss weighs those
    differences instead of the common part every item shares.
    """

    def __init__(
        self, input_dim: int, hidden_dims: list[int], latent_dim: int, n_levels: int, codebook_size: int, beta: float
    ) -> None:
        super().__init__()
        self.encoder = mlp([input_dim, *hidden_dims, latent_dim])
        self.quantizer = ResidualQuantizer(n_levels, codebook_size, latent_dim, beta)
        self.decoder = mlp([latent_dim, *reversed(hidden_dims), input_dim])
        self.register_buffer("input_mean", torch.zeros(input_dim))  # identity unless `standardise_inputs` set them
        self.register_buffer("input_std", torch.ones(input_dim))

    @torch.no_grad()
    def standardise_inputs(self, x: torch.Tensor) -> None:
        self.input_mean.copy_(x.mean(0))
        self.input_std.copy_(x.std(0).clamp_min(1e-8))

    def latent(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder((x - self.input_mean) / self.input_std)

    def to_quant(self, z: torch.Tensor) -> torch.Tensor:
        """Map the latent into the space the codebooks live in (identity here; h in NU-RQ-VAE)."""
        return z

    def from_quant(self, d: torch.Tensor) -> torch.Tensor:
        return d

    def aux_losses(self, z: torch.Tensor, d: torch.Tensor) -> dict[str, torch.Tensor]:
        return {}

    anchors = False  # True: `anchor(z of every item)` before each epoch (NU-RQ-VAE's transform statistics)

    def anchor(self, z: torch.Tensor) -> None:
        """Re-anchor what maps z into the quantization space to every item's latents (nothing here)."""

    def quant_input(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_quant(self.latent(x))

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.from_quant(self.quantizer.lookup(codes))) * self.input_std + self.input_mean

    def forward(self, x: torch.Tensor, **quant_kw: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        z = self.latent(x)
        d = self.to_quant(z)
        d_q, codes, q_loss = self.quantizer(d, **quant_kw)
        x_hat = self.decoder(self.from_quant(d_q))
        recon = F.mse_loss(x_hat, (x - self.input_mean) / self.input_std)
        return codes, {"recon": recon, "quant": q_loss, **self.aux_losses(z, d)}


LOSS_TERMS = ("recon", "quant", "consistency", "fit")  # consistency, fit: NU-RQ-VAE only


def _collision_rate(codes: torch.Tensor) -> float:
    return 1.0 - torch.unique(codes, dim=0).shape[0] / max(len(codes), 1)


@register("rqvae")
class RQVAE(Tokenizer):
    """TIGER's RQ-VAE. `select="collisions"` keeps the epoch with the fewest collisions (then lowest loss)."""

    defaults = {
        **Tokenizer.defaults,
        "hidden_dims": [512, 256, 128],
        "latent_dim": 32,
        "n_levels": 3,
        "codebook_size": 256,
        "beta": 0.25,
        "epochs": 100,
        "batch_size": 1024,
        "lr": 1e-3,
        "weight_decay": 1e-4,
        "kmeans_init": True,
        "kmeans_iters": 25,
        "dead_code_restart": True,
        "sinkhorn_last": False,
        "sinkhorn_epsilon": 0.01,
        "sinkhorn_iters": 50,
        "loss_weights": {},
        "select": "last",
        "standardize_input": False,  # per-dimension z-score of the embeddings before the encoder (see RQVAEModel)
        "device": "cpu",
        "progress": True,
    }

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        if self.options["select"] not in ("last", "collisions"):
            raise ValueError(f"select must be 'last' or 'collisions', got {self.options['select']!r}")
        unknown = set(self.options["loss_weights"]) - set(LOSS_TERMS)
        if unknown:
            raise ValueError(f"loss_weights: unknown term(s) {sorted(unknown)}; valid: {list(LOSS_TERMS)}")
        self.model: RQVAEModel | None = None
        self.history: list[dict[str, float]] = []
        self.best_epoch = -1

    @property
    def codebook_sizes(self) -> list[int]:
        return [int(self.options["codebook_size"])] * int(self.options["n_levels"])

    def _build_model(self, input_dim: int) -> RQVAEModel:
        o = self.options
        return RQVAEModel(input_dim, list(o["hidden_dims"]), o["latent_dim"], o["n_levels"], o["codebook_size"], o["beta"])

    def _batched(self, x: torch.Tensor, fn, chunk: int = 8192) -> torch.Tensor:
        """Apply `fn` in eval mode without gradients, chunk by chunk, on the configured device."""
        assert self.model is not None
        device = torch.device(self.options["device"])
        self.model.eval()
        with torch.no_grad():
            return torch.cat([fn(part.to(device)).cpu() for part in x.split(chunk)])

    def _fit(self, x: torch.Tensor) -> None:
        with flushing_subnormals():  # Adam's second moments on unit-norm embeddings underflow (~2x slower steps)
            self._train(x)

    def _train(self, x: torch.Tensor) -> None:
        o = self.options
        device = torch.device(o["device"])
        gen = torch.Generator().manual_seed(int(o["seed"]))
        model = self.model = self._build_model(x.shape[1]).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=o["lr"], weight_decay=o["weight_decay"])
        n, bs = len(x), min(int(o["batch_size"]), len(x))
        weights = {**dict.fromkeys(LOSS_TERMS, 1.0), **o["loss_weights"]}
        quant_kw = {k: o[k] for k in ("sinkhorn_last", "sinkhorn_epsilon", "sinkhorn_iters")}
        if o["standardize_input"]:
            model.standardise_inputs(x.to(device))
        if model.anchors:
            model.anchor(self._batched(x, model.latent))
        if o["kmeans_init"]:
            first = x[torch.randperm(n, generator=gen)[: max(bs, o["codebook_size"])]].to(device)
            model.train()
            with torch.no_grad():
                model.quantizer.kmeans_init(model.quant_input(first), niter=o["kmeans_iters"], seed=int(o["seed"]))
        best: tuple[float, float] | None = None
        best_state: dict[str, torch.Tensor] | None = None
        self.history = []
        bar = tqdm(range(int(o["epochs"])), desc=self.name, disable=not o["progress"], leave=False)
        for epoch in bar:
            if model.anchors and epoch:
                model.anchor(self._batched(x, model.latent))
            model.train()
            usage = torch.zeros(o["n_levels"], o["codebook_size"], dtype=torch.long, device=device)
            perm = torch.randperm(n, generator=gen)
            total, batches = 0.0, 0
            for idx in perm.split(bs):
                xb = x[idx].to(device)
                codes, losses = model(xb, **quant_kw)
                loss = sum(weights[k] * v for k, v in losses.items())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                usage.scatter_add_(1, codes.T, torch.ones_like(codes.T))
                total, batches = total + loss.item(), batches + 1
            record = {"epoch": epoch, "loss": total / batches}
            if o["dead_code_restart"] and epoch < int(o["epochs"]) - 1:
                sample = x[torch.randperm(n, generator=gen)[:bs]].to(device)
                model.eval()
                record["restarted"] = model.quantizer.restart_dead(model.quant_input(sample), usage, gen)
            if o["select"] == "collisions":
                record["collision_rate"] = _collision_rate(self._batched(x, self._quantize))
                key = (record["collision_rate"], record["loss"])
                if best is None or key < best:
                    best, best_state, self.best_epoch = key, copy.deepcopy(model.state_dict()), epoch
            self.history.append(record)
            bar.set_postfix({k: round(v, 4) for k, v in record.items() if k != "epoch"})
        if best_state is not None:
            model.load_state_dict(best_state)
        else:
            self.best_epoch = int(o["epochs"]) - 1
        model.eval()

    def _quantize(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.quantizer.quantize(self.model.quant_input(x))

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        return self._batched(x, self._quantize)

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self._batched(codes, self.model.decode_codes)

    def last_level_costs(self, x: torch.Tensor) -> torch.Tensor:
        def costs(part: torch.Tensor) -> torch.Tensor:
            q = self.model.quantizer
            _, res = q.residuals(self.model.quant_input(part))
            return sq_distances(res[-1], q.codebooks[-1])

        return self._batched(x, costs)

    def _state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return dict(self.model.state_dict()), {"best_epoch": self.best_epoch, "history": self.history}

    def _set_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        self.model = self._build_model(self.input_dim).to(torch.device(self.options["device"]))
        for name in ("input_mean", "input_std"):  # saved before inputs could be standardised: identity
            tensors.setdefault(name, getattr(self.model, name))
        self.model.load_state_dict(tensors)
        self.model.eval()
        self.best_epoch = meta.get("best_epoch", -1)
        self.history = meta.get("history", [])
