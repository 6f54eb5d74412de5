"""Semantic-ID quality: codebook usage, collisions, reconstruction; and the two diagnostic plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sidrec.io import atomic_path
from sidrec.tokenizers.collisions import collision_groups


def code_counts(codes: torch.Tensor, codebook_sizes: list[int]) -> list[torch.Tensor]:
    """Per level, how many items use each code (`[K_l]` counts)."""
    return [torch.bincount(codes[:, level], minlength=k) for level, k in enumerate(codebook_sizes)]


def gini(counts: torch.Tensor) -> float:
    """Gini coefficient of usage over all K codes: 0 = perfectly even, -> 1 = all on one code."""
    x = counts.double().sort().values
    n, total = len(x), x.sum()
    if n == 0 or total == 0:
        return 0.0
    i = torch.arange(1, n + 1, dtype=torch.float64)
    return float(2 * (i * x).sum() / (n * total) - (n + 1) / n)


def level_stats(counts: torch.Tensor) -> dict[str, float]:
    p = counts.double() / counts.sum().clamp_min(1)
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return {
        "used": int((counts > 0).sum()),
        "utilisation": float((counts > 0).double().mean()),
        "perplexity": float(entropy.exp()),
        "gini": gini(counts),
    }


def prefix_agreement(codes: torch.Tensor, items: torch.Tensor, offsets: torch.Tensor) -> list[dict[str, float]]:
    """How often an item and the next one in a sequence share their first d codes, for every depth d, beside
    the rate a random pair would (sum of squared prefix frequencies): how much of the sequential signal the ID
    hierarchy carries, which is what a generator decoding code by code can use. `items`/`offsets`: CSR
    sequences (e.g. `Dataset.train_sequences()`, never an evaluation target)."""
    same_user = torch.ones(len(items), dtype=torch.bool)
    same_user[offsets[1:-1][offsets[1:-1] < len(items)]] = False  # a pair never spans two users
    pairs = same_user[1:]
    source, target = codes[items[:-1][pairs]], codes[items[1:][pairs]]
    out = []
    for depth in range(1, codes.shape[1] + 1):
        _, counts = torch.unique(codes[:, :depth], dim=0, return_counts=True)
        p = counts.double() / counts.sum()
        out.append({"depth": depth, "next_item": float((source[:, :depth] == target[:, :depth]).all(1).double().mean()),
                    "chance": float((p * p).sum())})
    return out


def collision_stats(codes: torch.Tensor) -> dict[str, float]:
    """Collision rate 1 - unique/N, fraction of items sharing their code with another, largest group."""
    if len(codes) == 0:
        return {"collision_rate": 0.0, "items_sharing_code": 0.0, "max_group_size": 0}
    group, size, _ = collision_groups(codes)
    return {
        "collision_rate": 1.0 - int(group.max() + 1) / len(codes),
        "items_sharing_code": float((size > 1).double().mean()),
        "max_group_size": int(size.max()),
    }


def sid_report(
    codes: torch.Tensor, codebook_sizes: list[int], resolved_codes: torch.Tensor, recon_mse: float | None = None
) -> dict[str, Any]:
    """Quality report of raw `codes` (before resolution) and `resolved_codes` (after)."""
    before, after = collision_stats(codes), collision_stats(resolved_codes)
    return {
        "n_items": len(codes),
        "codebook_sizes": list(codebook_sizes),
        "levels": [{"level": i, **level_stats(c)} for i, c in enumerate(code_counts(codes, codebook_sizes))],
        **{f"{k}_before": v for k, v in before.items()},
        **{f"{k}_after": v for k, v in after.items()},
        "n_levels_after": int(resolved_codes.shape[1]),
        "recon_mse": recon_mse,
    }


def _save_figure(fig, path: str | Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)


def plot_code_usage(codes: torch.Tensor, codebook_sizes: list[int], path: str | Path) -> None:
    """One panel per level: items per code, codes sorted by usage (flat = balanced, steep = skewed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = code_counts(codes, codebook_sizes)
    fig, axes = plt.subplots(1, len(counts), figsize=(3.2 * len(counts), 2.8), squeeze=False)
    for level, (ax, c) in enumerate(zip(axes[0], counts)):
        stats = level_stats(c)
        ax.bar(range(len(c)), c.sort(descending=True).values.numpy(), width=1.0)
        ax.set_title(f"level {level}: {stats['used']}/{len(c)} used, ppl {stats['perplexity']:.0f}", fontsize=9)
        ax.set_xlabel("code (sorted by use)")
    axes[0][0].set_ylabel("items")
    _save_figure(fig, path)


def plot_latents(before: torch.Tensor, after: torch.Tensor, path: str | Path, bins: int = 100) -> None:
    """Distribution of latent values (all dimensions pooled) before vs after the non-uniform transform."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 2.8))
    for ax, values, title in ((axes[0], before, "before h (z)"), (axes[1], after, "after h (h(z))")):
        ax.hist(values.flatten().numpy(), bins=bins, density=True)
        ax.set_title(title, fontsize=9)
    _save_figure(fig, path)

