"""Elementwise learnable invertible transforms h (per latent dimension) for non-uniform quantization (CARD).

Quantizing h(z) instead of z lets a uniform-ish codebook spend its codewords where the latent mass
is: dense regions of z are stretched, sparse tails compressed. Both transforms map R -> (0, 1) and
have an exact inverse; `fit_kumaraswamy` fits the Kumaraswamy one without gradients (the
plug-and-play use in front of k-means / PQ).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

_SOFTPLUS_ONE = math.log(math.e - 1.0)  # softplus^-1(1): start as the identity on u = sigmoid(z)


def _inv_softplus(x: torch.Tensor) -> torch.Tensor:
    return x + torch.log(-torch.expm1(-x))


class KumaraswamyTransform(nn.Module):
    """h(z) = 1 - (1 - u^a)^b with u = sigmoid(z), i.e. the Kumaraswamy(a, b) CDF of sigmoid(z).

    a, b > 0 per dimension via softplus. Computed in log space (u^a = exp(a log u), ...) so the
    round trip z -> h -> h^-1 is accurate even where u is close to 0 or 1; values are clamped to
    (eps, 1 - eps).
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
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
        log_u = F.logsigmoid(z).clamp(math.log(self.eps), math.log1p(-self.eps))
        log_one_minus_ua = torch.log(-torch.expm1(self.a * log_u))  # log(1 - u^a)
        y = -torch.expm1(self.b * log_one_minus_ua)  # 1 - (1 - u^a)^b
        return y.clamp(self.eps, 1 - self.eps)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        y = y.clamp(self.eps, 1 - self.eps)
        log_ua = torch.log(-torch.expm1(torch.log1p(-y) / self.b))  # log(1 - (1 - y)^(1/b))
        log_u = (log_ua / self.a).clamp(math.log(self.eps), math.log1p(-self.eps))
        return log_u - torch.log(-torch.expm1(log_u))  # logit(u) = log u - log(1 - u)


class LogisticTransform(nn.Module):
    """h(x) = (s(x) - s(x_min)) / (s(x_max) - s(x_min)), s(x) = sigmoid(alpha (x - beta)), per dimension.

    [x_min, x_max] are running (EMA) statistics kept as buffers and updated only by training-mode
    forward passes; the inverse uses the same buffers, so it is an exact inverse and never depends
    on the batch it is applied to.
    """

    def __init__(self, dim: int, momentum: float = 0.01, eps: float = 1e-6) -> None:
        super().__init__()
        self.momentum = momentum
        self.eps = eps
        self.raw_alpha = nn.Parameter(torch.full((dim,), _SOFTPLUS_ONE))
        self.beta = nn.Parameter(torch.zeros(dim))
        self.register_buffer("x_min", torch.full((dim,), -1.0))
        self.register_buffer("x_max", torch.full((dim,), 1.0))
        self.register_buffer("initialised", torch.tensor(False))

    @property
    def alpha(self) -> torch.Tensor:
        return F.softplus(self.raw_alpha)

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

    def _bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        s_lo = torch.sigmoid(self.alpha * (self.x_min - self.beta))
        s_hi = torch.sigmoid(self.alpha * (self.x_max - self.beta))
        return s_lo, (s_hi - s_lo).clamp_min(self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.update_range(x)
        s_lo, span = self._bounds()
        return (torch.sigmoid(self.alpha * (x - self.beta)) - s_lo) / span

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        s_lo, span = self._bounds()
        s = (y * span + s_lo).clamp(self.eps, 1 - self.eps)
        return self.beta + torch.logit(s) / self.alpha


TRANSFORMS: dict[str, type[nn.Module]] = {"kumaraswamy": KumaraswamyTransform, "logistic": LogisticTransform}


def build_transform(name: str, dim: int) -> nn.Module:
    if name not in TRANSFORMS:
        raise KeyError(f"unknown non-uniform transform {name!r}; choose one of {sorted(TRANSFORMS)}")
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
    return log_a.exp().float(), profile(log_a)[1].float()
