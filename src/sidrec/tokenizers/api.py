"""`tokenize`: ItemEmbeddings -> fitted tokenizer + unique SemanticIDs + quality report (+ artifacts)."""

from __future__ import annotations

import importlib.util
import logging
import time
from pathlib import Path
from typing import Any

from sidrec.extras import install_hint
from sidrec.features.embeddings import ItemEmbeddings
from sidrec.io import write_json
from sidrec.tokenizers.base import Tokenizer, build_tokenizer
from sidrec.tokenizers.collisions import RESOLUTIONS, resolve_collisions
from sidrec.tokenizers.metrics import plot_code_usage, plot_latents, sid_report
from sidrec.semantic_ids import SemanticIDs

TOKENIZER_DIR = "tokenizer"
SIDS_FILE = "sids.safetensors"
REPORT_FILE = "sids_report.json"
USAGE_PLOT = "code_usage.png"
LATENT_PLOT = "latents.png"
log = logging.getLogger(__name__)


def tokenize(
    embeddings: ItemEmbeddings,
    name: str,
    resolution: str = "dedup",
    options: dict[str, Any] | None = None,
    out_dir: str | Path | None = None,
    resolution_options: dict[str, Any] | None = None,
) -> tuple[Tokenizer, SemanticIDs, dict[str, Any]]:
    """Fit tokenizer `name` (with `options`), encode every item, resolve collisions, report.

    With `out_dir`, writes `tokenizer/`, `sids.safetensors`, `sids_report.json`, `code_usage.png` and, for
    non-uniform tokenizers, `latents.png` (each file atomically; the report last).
    """
    if resolution not in RESOLUTIONS:
        raise ValueError(f"unknown collision resolution {resolution!r}; choose one of {list(RESOLUTIONS)}")
    if not isinstance(embeddings, ItemEmbeddings):
        raise TypeError(f"tokenize expects ItemEmbeddings, got {type(embeddings).__name__}")
    x = embeddings.vectors
    tokenizer = build_tokenizer(name, **(options or {}))
    start = time.perf_counter()
    tokenizer.fit(x)
    fit_seconds = time.perf_counter() - start
    codes = tokenizer.encode(x)
    costs = tokenizer.last_level_costs(x) if resolution == "sinkhorn" else None
    sids = resolve_collisions(codes, tokenizer.codebook_sizes, resolution, costs=costs, **(resolution_options or {}))
    sids.info.update({"tokenizer": name, "encoder": embeddings.encoder})
    recon = float(((tokenizer.decode(codes) - x) ** 2).mean())
    report = {
        "tokenizer": name,
        "options": tokenizer.options,
        "encoder": embeddings.encoder,
        "resolution": resolution,
        "fit_seconds": fit_seconds,
        **sid_report(codes, tokenizer.codebook_sizes, sids.codes, recon),
        **{k: v for k, v in sids.info.items() if k.startswith(("sinkhorn_", "dedup_"))},
    }
    if out_dir is not None:
        out_dir = Path(out_dir)
        tokenizer.save(out_dir / TOKENIZER_DIR)
        sids.save(out_dir / SIDS_FILE)
        if importlib.util.find_spec("matplotlib") is None:  # the report draws the same charts without it
            log.warning("tokenize: %s and %s not drawn (matplotlib is missing: %s)", USAGE_PLOT, LATENT_PLOT,
                        install_hint("plots"))
        else:
            plot_code_usage(codes, tokenizer.codebook_sizes, out_dir / USAGE_PLOT)
            latents = tokenizer.latents(x)
            if latents is not None:
                plot_latents(*latents, out_dir / LATENT_PLOT)
        write_json(out_dir / REPORT_FILE, report)
    return tokenizer, sids, report


def load_tokenized(out_dir: str | Path) -> tuple[Tokenizer, SemanticIDs]:
    """Read back what `tokenize(..., out_dir=...)` wrote."""
    out_dir = Path(out_dir)
    return Tokenizer.load(out_dir / TOKENIZER_DIR), SemanticIDs.load(out_dir / SIDS_FILE)
