"""MHQ (AsymRec): multi-faceted hierarchical quantization of item embeddings into M x L codes.

x~ = W_P (x - mean) in R^D is cut into M disjoint views of D / M dims; each view is quantized by its
own L-level residual quantizer of K codewords, so an item gets M * L codes (view-major: view 0 levels
0..L-1, then view 1, ...). Several independent views give a generator many partially redundant
targets, instead of one deep hierarchy where an early mistake ruins the item.

Training (W_P by AdamW; codebooks by EMA, not by gradient):
- reconstruction: x_hat = mean + W_P^T (sum of each view's codewords), i.e. the decoder is the tied
  transpose W_P^T (the exact inverse on the projected subspace while W_P has orthonormal rows; no
  learned decoder). Measured as ||x - x_hat||^2 / ||x - mean||^2 averaged over items (1 = no better
  than the mean), with straight-through gradients through the quantizer, plus beta x commitment;
- energy balance: mean_m |E_m - mean(E)| / mean(E), E_m = mean squared norm of view m. Divided by
  mean(E) so it is scale-free: shrinking W_P cannot lower it;
- orthogonality: ||W_P W_P^T - I||_F^2, which also pins the scale of W_P.
W_P starts from the top-D principal directions in order, so view 0 starts with most of the energy:
that is the imbalance the balance term exists to remove (ablate it with balance_weight=0).
Codebooks: k-means initialisation, EMA updates (decay), dead codewords re-seeded every epoch.

`transform` = kumaraswamy | logistic quantizes h(x~ / s) instead of x~ (s: per-dimension scale of
the initial projection), with the CARD invertible transform from `nonuniform.py`, one set of
parameters per projected dimension (so per subspace); decode inverts h. Kumaraswamy parameters start
from their maximum-likelihood fit and keep training on the same likelihood (`fit` loss) beside the
consistency loss MSE(h^-1(h(z)), z).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from sidrec.tokenizers.base import Tokenizer, register
from sidrec.tokenizers.kmeans import sq_distances
from sidrec.tokenizers.metrics import code_counts, collision_stats, level_stats
from sidrec.tokenizers.nonuniform import KumaraswamyTransform, build_transform
from sidrec.tokenizers.residual import ResidualQuantizer

TRANSFORM_CHOICES = ("none", "kumaraswamy", "logistic")


def view_energies(z: torch.Tensor, n_views: int) -> torch.Tensor:
    """`[M]` mean squared norm of each view of projected vectors `z [n, D]`."""
    return z.reshape(len(z), n_views, -1).pow(2).sum(-1).mean(0)


def balance_loss(energies: torch.Tensor) -> torch.Tensor:
    """Relative energy imbalance mean_m |E_m - mean(E)| / mean(E) (0 = perfectly balanced views)."""
    mean = energies.mean()
    return (energies - mean).abs().mean() / mean.clamp_min(1e-12)


def ortho_loss(projection: torch.Tensor) -> torch.Tensor:
    """||W W^T - I||_F^2 for `W [D, d]`: 0 iff the rows are orthonormal."""
    gram = projection @ projection.T
    return (gram - torch.eye(len(gram), device=gram.device)).pow(2).sum()


class MHQModel(nn.Module):
    """Projection (+ optional transform) and M residual quantizers; `forward` returns codes and losses."""

    def __init__(self, input_dim: int, proj_dim: int, n_views: int, n_levels: int, codebook_size: int,
                 transform: str, beta: float, space: str = "unit") -> None:
        super().__init__()
        self.n_views, self.beta = n_views, beta
        self.projection = nn.Parameter(torch.zeros(proj_dim, input_dim))
        self.register_buffer("mean", torch.zeros(input_dim))
        self.register_buffer("scale", torch.ones(proj_dim))
        self.transform = None if transform == "none" else build_transform(transform, proj_dim, space)
        self.views = nn.ModuleList(
            ResidualQuantizer(n_levels, codebook_size, proj_dim // n_views, beta).requires_grad_(False)
            for _ in range(n_views)
        )

    # ----- maps between spaces -----------------------------------------------------------------
    def project(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) @ self.projection.T

    def to_quant(self, z: torch.Tensor) -> torch.Tensor:
        return z if self.transform is None else self.transform(z / self.scale)

    def from_quant(self, d: torch.Tensor) -> torch.Tensor:
        return d if self.transform is None else self.transform.inverse(d) * self.scale

    def unproject(self, z: torch.Tensor) -> torch.Tensor:
        return self.mean + z @ self.projection

    def split(self, d: torch.Tensor) -> list[torch.Tensor]:
        return list(d.reshape(len(d), self.n_views, -1).unbind(1))

    # ----- quantization ------------------------------------------------------------------------
    @torch.no_grad()
    def quantize(self, d: torch.Tensor) -> torch.Tensor:
        """Greedy codes `[n, M * L]` of quantization-space vectors `d [n, D]`."""
        return torch.cat([rq.quantize(part) for rq, part in zip(self.views, self.split(d))], dim=1)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Quantization-space reconstruction `[n, D]` of codes `[n, M * L]`."""
        per_view = codes.reshape(len(codes), self.n_views, -1).unbind(1)
        return torch.cat([rq.lookup(c) for rq, c in zip(self.views, per_view)], dim=1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.quantize(self.to_quant(self.project(x)))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.unproject(self.from_quant(self.lookup(codes)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        z = self.project(x)
        d = self.to_quant(z)
        codes = self.quantize(d.detach())
        q = self.lookup(codes)
        d_st = d + (q - d).detach()  # straight-through: gradients reach W_P (and h) through the quantizer
        x_hat = self.unproject(self.from_quant(d_st))
        spread = (x - self.mean).pow(2).sum(-1).mean().clamp_min(1e-12)
        losses = {
            "recon": (x - x_hat).pow(2).sum(-1).mean() / spread,
            "commit": self.beta * (d - q.detach()).pow(2).sum(-1).mean() / d.detach().pow(2).sum(-1).mean().clamp_min(1e-12),
            "balance": balance_loss(view_energies(z, self.n_views)),
            "ortho": ortho_loss(self.projection),
        }
        if self.transform is not None:
            losses["consistency"] = F.mse_loss(self.transform.inverse(d), z / self.scale)
        if isinstance(self.transform, KumaraswamyTransform):
            losses["fit"] = self.transform.fit_loss(z / self.scale)
        return codes, losses


class EMACodebooks:
    """Exponential-moving-average codebook updates (VQ-VAE v2 style) for every view and level of an MHQModel."""

    def __init__(self, model: MHQModel, decay: float, eps: float = 1e-5) -> None:
        self.model, self.decay, self.eps = model, decay, eps
        books = torch.stack([rq.codebooks.data for rq in model.views])  # [M, L, K, Dv]
        self.count = torch.ones(books.shape[:3], device=books.device)
        self.total = books.clone()

    @torch.no_grad()
    def update(self, d: torch.Tensor) -> torch.Tensor:
        """Move each codeword toward the mean of the residuals assigned to it; returns codes `[n, M * L]`."""
        codes = []
        for m, (rq, part) in enumerate(zip(self.model.views, self.model.split(d))):
            view_codes, residuals = rq.residuals(part)
            for level, r in enumerate(residuals):
                idx = view_codes[:, level]
                counts = torch.bincount(idx, minlength=rq.codebook_size).to(r.dtype)
                sums = torch.zeros_like(self.total[m, level]).index_add_(0, idx, r)
                self.count[m, level].lerp_(counts, 1 - self.decay)
                self.total[m, level].lerp_(sums, 1 - self.decay)
                n = self.count[m, level].sum()
                smoothed = (self.count[m, level] + self.eps) / (n + rq.codebook_size * self.eps) * n
                rq.codebooks.data[level] = self.total[m, level] / smoothed[:, None]
            codes.append(view_codes)
        return torch.cat(codes, dim=1)

    @torch.no_grad()
    def restart_dead(self, d: torch.Tensor, usage: torch.Tensor, generator: torch.Generator) -> int:
        """Re-seed codewords unused this epoch (`usage [M, L, K]`) from live residuals and reset their EMA."""
        restarted = 0
        for m, (rq, part) in enumerate(zip(self.model.views, self.model.split(d))):
            restarted += rq.restart_dead(part, usage[m], generator)
            dead = usage[m] == 0
            self.count[m][dead] = 1.0
            self.total[m][dead] = rq.codebooks.data[dead]
        return restarted


@register("mhq")
class MHQ(Tokenizer):
    """Options: n_views = M, n_levels = L, codebook_size = K, proj_dim = D (None: min(d, 128), rounded down
    to a multiple of M); loss weights balance_weight / ortho_weight (0 = ablated), consistency_weight and fit_weight
    (the Kumaraswamy likelihood)."""

    defaults = {
        **Tokenizer.defaults,
        "n_views": 8,
        "n_levels": 3,
        "codebook_size": 256,
        "proj_dim": None,
        "epochs": 30,
        "batch_size": 256,  # small batches: the projection needs steps to rebalance the views
        "lr": 1e-2,
        "beta": 0.25,
        "ema_decay": 0.99,
        "balance_weight": 1.0,
        "ortho_weight": 1.0,
        "consistency_weight": 1.0,
        "fit_weight": 1.0,
        "transform": "none",
        "transform_space": "unit",
        "kmeans_iters": 25,
        "dead_code_restart": True,
        "device": "cpu",
        "progress": False,
    }

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        o = self.options
        if o["transform"] not in TRANSFORM_CHOICES:
            raise ValueError(f"transform must be one of {TRANSFORM_CHOICES}, got {o['transform']!r}")
        for key in ("n_views", "n_levels", "codebook_size", "epochs"):
            if int(o[key]) < 1:
                raise ValueError(f"{key} must be >= 1, got {o[key]!r}")
        self.model: MHQModel | None = None
        self.history: list[dict[str, float]] = []

    @property
    def codebook_sizes(self) -> list[int]:
        return [int(self.options["codebook_size"])] * (int(self.options["n_views"]) * int(self.options["n_levels"]))

    def resolved_proj_dim(self, input_dim: int) -> int:
        m, dim = int(self.options["n_views"]), self.options["proj_dim"]
        dim = (min(input_dim, 128) // m) * m if dim is None else int(dim)
        if dim < m or dim % m:
            raise ValueError(f"proj_dim={dim} must be a positive multiple of n_views={m}")
        if dim > input_dim:
            raise ValueError(f"proj_dim={dim} exceeds the embedding dimension d={input_dim}: W_P cannot have "
                             f"{dim} orthonormal rows")
        return dim

    def _build_model(self, input_dim: int) -> MHQModel:
        o = self.options
        return MHQModel(input_dim, self.resolved_proj_dim(input_dim), int(o["n_views"]), int(o["n_levels"]),
                        int(o["codebook_size"]), o["transform"], float(o["beta"]), o["transform_space"])

    @torch.no_grad()
    def _initialise(self, model: MHQModel, x: torch.Tensor) -> None:
        """PCA projection, transform scale (and Kumaraswamy MLE), k-means codebooks on the whole input."""
        model.mean.copy_(x.mean(0))
        centred = x - model.mean
        eigvals, eigvecs = torch.linalg.eigh(centred.T @ centred / len(x))
        model.projection.copy_(eigvecs.flip(1)[:, : model.projection.shape[0]].T)
        z = model.project(x)
        model.scale.copy_(z.std(0).clamp_min(1e-8))
        if isinstance(model.transform, KumaraswamyTransform):
            model.transform.fit(z / model.scale, seed=int(self.options["seed"]))
        seed, iters = int(self.options["seed"]), int(self.options["kmeans_iters"])
        for m, (rq, part) in enumerate(zip(model.views, model.split(model.to_quant(z)))):
            rq.kmeans_init(part, niter=iters, seed=seed + 1000 * m)

    def _fit(self, x: torch.Tensor) -> None:
        o = self.options
        device = torch.device(o["device"])
        gen = torch.Generator().manual_seed(int(o["seed"]))
        x = x.to(device)
        model = self.model = self._build_model(x.shape[1]).to(device)
        self._initialise(model, x)
        ema = EMACodebooks(model, float(o["ema_decay"]))
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=float(o["lr"]), weight_decay=0.0)
        weights = {"recon": 1.0, "commit": 1.0, "balance": float(o["balance_weight"]),
                   "ortho": float(o["ortho_weight"]), "consistency": float(o["consistency_weight"]),
                   "fit": float(o["fit_weight"])}
        n, bs = len(x), min(int(o["batch_size"]), len(x))
        shape = (int(o["n_views"]), int(o["n_levels"]), int(o["codebook_size"]))
        self.history = []
        for epoch in tqdm(range(int(o["epochs"])), desc=self.name, disable=not o["progress"], leave=False):
            model.train()
            usage = torch.zeros(shape, dtype=torch.long, device=device)
            sums: dict[str, float] = {}
            batches = 0
            for idx in torch.randperm(n, generator=gen).split(bs):
                xb = x[idx.to(device)]
                _, losses = model(xb)
                opt.zero_grad(set_to_none=True)
                sum(weights[k] * v for k, v in losses.items()).backward()
                opt.step()
                with torch.no_grad():
                    codes = ema.update(model.to_quant(model.project(xb)))
                flat = codes.T.reshape(-1, len(codes)) + torch.arange(codes.shape[1], device=device)[:, None] * shape[2]
                usage.view(-1).index_add_(0, flat.flatten(), torch.ones_like(flat.flatten()))
                for k, v in losses.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
                batches += 1
            record = {"epoch": epoch, **{k: v / batches for k, v in sums.items()}}
            if o["dead_code_restart"] and epoch < int(o["epochs"]) - 1:
                with torch.no_grad():
                    sample = x[torch.randperm(n, generator=gen)[:bs].to(device)]
                    record["restarted"] = ema.restart_dead(model.to_quant(model.project(sample)), usage, gen)
            self.history.append(record)
        model.eval()

    def _run(self, x: torch.Tensor, fn, chunk: int = 8192) -> torch.Tensor:
        device = torch.device(self.options["device"])
        self.model.eval()
        with torch.no_grad():
            return torch.cat([fn(part.to(device)).cpu() for part in x.split(chunk)])

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, self.model.encode)

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self._run(codes, self.model.decode)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """`[n, D]` projected embeddings x~ = W_P (x - mean)."""
        self._require_fitted()
        return self._run(torch.as_tensor(x, dtype=torch.float32), self.model.project)

    def last_level_costs(self, x: torch.Tensor) -> torch.Tensor:
        """Distances of the last view's last-level residual to its codewords (the last code column)."""

        def costs(part: torch.Tensor) -> torch.Tensor:
            rq = self.model.views[-1]
            _, res = rq.residuals(self.model.split(self.model.to_quant(self.model.project(part)))[-1])
            return sq_distances(res[-1], rq.codebooks[-1])

        return self._run(x, costs)

    def latents(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        if self.model.transform is None:
            return None
        z = self._run(x, self.model.project) / self.model.scale.cpu()
        return z, self._run(x, lambda part: self.model.to_quant(self.model.project(part)))

    def report(self, x: Any) -> dict[str, Any]:
        """Quality of the codes of `x`: utilisation/perplexity per (view, level), collisions, energy per view,
        balance and orthogonality terms, relative reconstruction error."""
        self._require_fitted()
        x = torch.as_tensor(getattr(x, "vectors", x), dtype=torch.float32)
        codes = self.encode(x)
        z = self.project(x)
        levels = int(self.options["n_levels"])
        energies = view_energies(z, int(self.options["n_views"]))
        x_hat = self.decode(codes)
        centred = x - self.model.mean.cpu()
        return {
            "codes": [{"view": p // levels, "level": p % levels, **level_stats(c)}
                      for p, c in enumerate(code_counts(codes, self.codebook_sizes))],
            **collision_stats(codes),
            "energy_per_view": energies.tolist(),
            "energy_share_per_view": (energies / energies.sum()).tolist(),
            "balance": float(balance_loss(energies)),
            "ortho": float(ortho_loss(self.model.projection.detach().cpu())),
            "relative_recon_error": float((x - x_hat).pow(2).sum(-1).mean() / centred.pow(2).sum(-1).mean()),
        }

    def _state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return {k: v.detach().cpu() for k, v in self.model.state_dict().items()}, {"history": self.history}

    def _set_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        self.model = self._build_model(self.input_dim).to(torch.device(self.options["device"]))
        self.model.load_state_dict(tensors)
        self.model.eval()
        self.history = meta.get("history", [])
