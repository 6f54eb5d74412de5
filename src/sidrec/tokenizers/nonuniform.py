"""Elementwise learnable invertible transforms h (per latent dimension) for non-uniform quantization (CARD).

Quantizing h(z) instead of z lets a codebook spend its codewords where the latent mass is: dense
regions of z are stretched, sparse tails compressed. Both transforms are strictly increasing with an
exact inverse that shares their running statistics; `fit_kumaraswamy` fits the Kumaraswamy one
without gradients (the plug-and-play use in front of k-means / PQ).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

_SOFTPLUS_ONE = math.log(math.e - 1.0)  # softplus^-1(1): start as the identity on u = sigmoid(s)


def _inv_softplus(x: torch.Tensor) -> torch.Tensor:
    return x + torch.log(-torch.expm1(-x))


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, accurate at both ends (Maechler's switch at -log 2); each branch
    only sees its own side, so the branch not taken cannot put an inf into the gradient."""
    cut = -math.log(2.0)
    return torch.where(x > cut, torch.log(-torch.expm1(x.clamp(min=cut))), torch.log1p(-torch.exp(x.clamp(max=cut))))


_TAIL = -15.0  # below it the next two maps equal their argument to float32 precision (error < e^-15)


def _log_neg_log1mexp(w: torch.Tensor) -> torch.Tensor:
    """log(-log(1 - exp(w))) for w <= 0, without underflow: = w + O(e^w) far in the tail."""
    return torch.where(w < _TAIL, w, torch.log(-log1mexp(w.clamp(min=_TAIL))))


def _log1mexp_neg_exp(v: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(-exp(v))), the inverse of `_log_neg_log1mexp`: = v + O(e^v) far in the tail."""
    return torch.where(v < _TAIL, v, log1mexp(-torch.exp(v.clamp(min=_TAIL))))


_LOG_U_MAX = -1e-30  # log sigmoid(69): above it u^a would underflow to 1 (flushed subnormals) and log(1 - u^a) to -inf


def _log_u(s: torch.Tensor) -> torch.Tensor:
    """log sigmoid(s), held below 0 so that every later log stays finite (s is saturated at ~69)."""
    return F.logsigmoid(s).clamp(max=_LOG_U_MAX)


def _log_softplus(t: torch.Tensor) -> torch.Tensor:
    """log(log(1 + exp(t))) without underflow for very negative t."""
    return torch.where(t < _TAIL, t, torch.log(F.softplus(t.clamp(min=_TAIL))))


class RunningStandardiser(nn.Module):
    """Per-dimension running mean / std (EMA of training batches), shared by a map and its inverse.

    Latents of an RQ-VAE encoder have a per-dimension std of ~0.08: without this, sigmoid(z) is a
    near-linear map around 0.5 and the transform behind it has nothing to reshape. The standardised
    range of the data (`lo`, `hi`; unbounded until data is seen) bounds the inverse: a sum of
    residual codewords can fall outside the image of the data, and must decode to its edge, not to
    a value 40 standard deviations out.
    """

    def __init__(self, dim: int, momentum: float = 0.01) -> None:
        super().__init__()
        self.momentum = momentum
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.register_buffer("lo", torch.full((dim,), -math.inf))
        self.register_buffer("hi", torch.full((dim,), math.inf))
        self.register_buffer("initialised", torch.tensor(False))

    @torch.no_grad()
    def update(self, z: torch.Tensor) -> None:
        z = z.detach().to(self.mean)
        mean, std = z.mean(0), z.std(0).clamp_min(1e-8) if len(z) > 1 else self.std
        first = not bool(self.initialised)
        rate = 1.0 if first else self.momentum
        self.mean.lerp_(mean, rate)
        self.std.lerp_(std, rate)
        s = (z - self.mean) / self.std
        lo, hi = (s.amin(0), s.amax(0)) if first else (torch.minimum(self.lo, s.amin(0)), torch.maximum(self.hi, s.amax(0)))
        self.lo.copy_(lo)
        self.hi.copy_(hi)
        self.initialised.fill_(True)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.update(z)
        return (z - self.mean) / self.std

    def inverse(self, s: torch.Tensor) -> torch.Tensor:
        return torch.maximum(torch.minimum(s, self.hi), self.lo) * self.std + self.mean


class KumaraswamyTransform(nn.Module):
    """h(z) = K(sigmoid(s)), s = (z - mean) / std, K(u) = 1 - (1 - u^a)^b the Kumaraswamy CDF.

    a, b > 0 per dimension (softplus). K is fitted to the marginal of u (`fit`: maximum likelihood;
    `fit_loss`: the same likelihood as a training loss on a, b only), so K(u) is close to uniform
    over the data and the codebooks spread evenly over it. Every step is computed in log space
    (log-sigmoid, log1mexp), nothing is clamped.

    `space="unit"` (CARD) hands the quantizer y = K(u) in (0, 1): float32 represents y only to
    ~6e-8 near 1, so h^-1(h(z)) = z holds to 1e-5 of the latent std where K's density is not tiny
    (over the data when K is fitted), not in the far tails. `space="logit"` hands it logit K(u),
    which never saturates: the round trip holds to 1e-5 for |s| <= 6, 3e-5 for |s| <= 12 and 1e-4
    relative for |s| <= 65 (s is saturated at ~69, where u^a would round to 1), for every a, b in [0.2, 5].
    """

    def __init__(self, dim: int, momentum: float = 0.01, space: str = "unit") -> None:
        super().__init__()
        if space not in ("unit", "logit"):
            raise ValueError(f"space must be 'unit' or 'logit', got {space!r}")
        self.space = space
        self.standardise = RunningStandardiser(dim, momentum)
        self.raw_a = nn.Parameter(torch.full((dim,), _SOFTPLUS_ONE))
        self.raw_b = nn.Parameter(torch.full((dim,), _SOFTPLUS_ONE))

    @property
    def a(self) -> torch.Tensor:
        return F.softplus(self.raw_a)

    @property
    def b(self) -> torch.Tensor:
        return F.softplus(self.raw_b)

    def set_params(self, a: torch.Tensor, b: torch.Tensor) -> None:
        with torch.no_grad():
            self.raw_a.copy_(_inv_softplus(a.to(self.raw_a)))
            self.raw_b.copy_(_inv_softplus(b.to(self.raw_b)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        log_u = _log_u(self.standardise(z))
        v = self.b.log() + _log_neg_log1mexp(self.a * log_u)  # log(-log(1 - y)), -log(1 - y) = -b log(1 - u^a)
        if self.space == "unit":
            return -torch.expm1(-v.exp())  # y = 1 - exp(log(1 - y))
        return _log1mexp_neg_exp(v) + v.exp()  # logit y = log y - log(1 - y)

    def inverse(self, t: torch.Tensor) -> torch.Tensor:
        if self.space == "unit":  # log(-log(1 - y)); y outside (0, 1) (a codeword) is pulled to the ends
            v = torch.log(-torch.log1p(-t.clamp(1e-30, 1 - torch.finfo(t.dtype).eps / 2)))
        else:
            v = _log_softplus(t)  # log(-log(1 - y)), since log(1 - y) = -softplus(logit y)
        log_u = _log1mexp_neg_exp(v - self.b.log()) / self.a  # log u^a = log(1 - (1 - y)^(1/b))
        log_u = log_u.clamp(max=_LOG_U_MAX)
        return self.standardise.inverse(log_u - log1mexp(log_u))  # logit u

    def fit_loss(self, z: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood of u = sigmoid(s(z)) under Kumaraswamy(a, b); trains a and b only."""
        with torch.no_grad():
            log_u = _log_u((z - self.standardise.mean) / self.standardise.std)
        a, b = self.a, self.b
        log_density = a.log() + b.log() + (a - 1) * log_u + (b - 1) * log1mexp(a * log_u)
        return -log_density.mean()

    @torch.no_grad()
    def fit(self, z: torch.Tensor, seed: int = 0) -> "KumaraswamyTransform":
        """Standardise on `z` and fit (a, b) per dimension by maximum likelihood (the plug-and-play use)."""
        self.standardise.initialised.fill_(False)
        self.standardise.update(z)
        self.set_params(*fit_kumaraswamy(torch.sigmoid((z - self.standardise.mean) / self.standardise.std), seed=seed))
        return self

    def freeze_statistics(self) -> None:
        """Training batches stop moving the standardiser: only `anchor` (every epoch) sets it."""
        self.standardise.momentum = 0.0

    anchor = fit  # re-anchor to every item's current latents (NU-RQ-VAE, once per epoch)


class LogisticTransform(nn.Module):
    """h(x) = (s(x) - s(x_min)) / (s(x_max) - s(x_min)), s(x) = sigmoid(alpha (x - x0)), per dimension.

    Range-normalised as in the official CARD code: with D = x_max - x_min, alpha = softplus(raw) / D
    and x0 = x_min + sigmoid(raw_x0) D, so alpha (x - x0) stays O(1) over the data whatever its scale
    (without it, latents of std 5 saturated the sigmoid and 2 % of them failed to invert).
    [x_min, x_max] are running (EMA) statistics kept as buffers and updated only by training-mode
    forward passes; the inverse uses the same buffers, so it never depends on the batch.
    """

    def __init__(self, dim: int, momentum: float = 0.01, eps: float = 1e-7) -> None:
        super().__init__()
        self.momentum = momentum
        self.eps = eps
        self.raw_alpha = nn.Parameter(torch.full((dim,), math.log(math.expm1(4.0))))  # alpha D = 4 at the start
        self.raw_x0 = nn.Parameter(torch.zeros(dim))  # x0 in the middle of the range
        self.register_buffer("x_min", torch.full((dim,), -1.0))
        self.register_buffer("x_max", torch.full((dim,), 1.0))
        self.register_buffer("initialised", torch.tensor(False))

    @torch.no_grad()
    def update_range(self, x: torch.Tensor) -> None:
        lo, hi = x.detach().amin(0), x.detach().amax(0)
        if not bool(self.initialised):
            self.x_min.copy_(lo)
            self.x_max.copy_(hi)
            self.initialised.fill_(True)
        else:
            self.x_min.lerp_(lo, self.momentum)
            self.x_max.lerp_(hi, self.momentum)

    def freeze_statistics(self) -> None:
        """Training batches stop moving the range: only `anchor` (every epoch) sets it."""
        self.momentum = 0.0

    @torch.no_grad()
    def anchor(self, x: torch.Tensor) -> "LogisticTransform":
        """Set the range to that of every item's current latents (NU-RQ-VAE, once per epoch)."""
        self.initialised.fill_(False)
        self.update_range(x)
        return self

    def _shape(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(alpha, x0) from the raw parameters and the running range."""
        span = (self.x_max - self.x_min).clamp_min(1e-8)
        return F.softplus(self.raw_alpha) / span, self.x_min + torch.sigmoid(self.raw_x0) * span

    @property
    def alpha(self) -> torch.Tensor:
        return self._shape()[0]

    def _bounds(self, alpha: torch.Tensor, x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s_lo = torch.sigmoid(alpha * (self.x_min - x0))
        return s_lo, (torch.sigmoid(alpha * (self.x_max - x0)) - s_lo).clamp_min(self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.update_range(x)
        alpha, x0 = self._shape()
        s_lo, span = self._bounds(alpha, x0)
        return (torch.sigmoid(alpha * (x - x0)) - s_lo) / span

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        alpha, x0 = self._shape()
        s_lo, span = self._bounds(alpha, x0)
        s = (y * span + s_lo).clamp(self.eps, 1 - self.eps)
        return x0 + torch.logit(s) / alpha


TRANSFORMS: dict[str, type[nn.Module]] = {"kumaraswamy": KumaraswamyTransform, "logistic": LogisticTransform}


def build_transform(name: str, dim: int, space: str = "unit") -> nn.Module:
    """A transform by name; `space` (unit | logit) is what the Kumaraswamy one hands the quantizer."""
    if name not in TRANSFORMS:
        raise KeyError(f"unknown non-uniform transform {name!r}; choose one of {sorted(TRANSFORMS)}")
    if name == "kumaraswamy":
        return KumaraswamyTransform(dim, space=space)
    if space != "unit":
        raise ValueError(f"space={space!r} applies to the kumaraswamy transform only")
    return TRANSFORMS[name](dim)


@torch.no_grad()
def fit_kumaraswamy(
    u: torch.Tensor,
    *,
    eps: float = 1e-6,
    n_iters: int = 40,
    a_range: tuple[float, float] = (0.05, 50.0),
    max_samples: int = 8192,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-column maximum-likelihood Kumaraswamy (a, b) for samples `u [n, d]` in (0, 1), vectorised over d.

    For fixed a the MLE of b is closed-form, b(a) = -n / sum log(1 - u^a); the profile log-likelihood
    in log a is then maximised by golden-section search (no gradients, all columns at once). At most
    `max_samples` rows (a seeded random subset) are used: two parameters per column need no more.
    """
    if u.ndim != 2 or u.shape[0] < 2:
        raise ValueError(f"fit_kumaraswamy: expected [n >= 2, d] samples, got shape {tuple(u.shape)}")
    if u.shape[0] > max_samples:
        u = u[torch.randperm(u.shape[0], generator=torch.Generator().manual_seed(seed))[:max_samples]]
    log_u = u.double().clamp(eps, 1 - eps).log()
    n, sum_log_u = u.shape[0], log_u.sum(0)

    def profile(log_a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = log_a.exp()
        sum_log_1m_ua = torch.log(-torch.expm1(a * log_u)).sum(0)  # sum log(1 - u^a) < 0
        b = -n / sum_log_1m_ua
        return n * (a.log() + b.log()) + (a - 1) * sum_log_u + (b - 1) * sum_log_1m_ua, b

    ratio = (math.sqrt(5) - 1) / 2
    lo = torch.full((u.shape[1],), math.log(a_range[0]), dtype=torch.float64)
    hi = torch.full_like(lo, math.log(a_range[1]))
    m1, m2 = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    f1, f2 = profile(m1)[0], profile(m2)[0]
    for _ in range(n_iters):
        left = f1 > f2  # maximum lies in [lo, m2]: the old m1 becomes the new m2
        lo, hi = torch.where(left, lo, m1), torch.where(left, m2, hi)
        new = torch.where(left, hi - ratio * (hi - lo), lo + ratio * (hi - lo))
        f_new = profile(new)[0]
        m1, m2, f1, f2 = (
            torch.where(left, new, m2),
            torch.where(left, m1, new),
            torch.where(left, f_new, f2),
            torch.where(left, f1, f_new),
        )
    log_a = (lo + hi) / 2
    a, b = log_a.exp(), profile(log_a)[1]
    # A (near-)constant column has no maximum: the likelihood grows without bound as K collapses onto the
    # point (Beauty's MiniLM embeddings have 3 dead dimensions: b reached 3.8e14). Leave it alone (a = b = 1).
    flat = (log_u.max(0).values - log_u.min(0).values) < 1e-6
    return torch.where(flat, 1.0, a).float(), torch.where(flat, 1.0, b).float()
