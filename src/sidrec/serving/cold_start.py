"""New items without retraining: encode their content, give them semantic IDs, extend the model.

Models that name items through semantic IDs (TIGER, AsymRec) never learned a per-item row, so a
new item only needs a code that is unique in the catalogue: the run's own encoder embeds the new
item's text, the frozen tokenizer quantizes it, and collisions are resolved against the existing
catalogue without touching any existing code:

1. the item takes the next free value of the extra dedup level under its raw code (if the run's
   codes have one and it still has room), else
2. it moves to the cheapest last tokenizer-level code under the same prefix that still has a free
   slot (cost from the tokenizer's `last_level_costs`, else distance to its own code).

The model's weights are unchanged; its code table / trie (and, for AsymRec, its item embedding
table) grow, and the new model directory replaces the old one in one rename.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import pandas as pd
import torch

from sidrec.data.readers import DataFormatError, read_item_table
from sidrec.features import ItemEmbeddings, build_encoder
from sidrec.io import ArtifactError
from sidrec.tokenizers.base import Tokenizer
from sidrec.tokenizers.collisions import collision_groups
from sidrec.semantic_ids import SemanticIDs
from sidrec.serving.catalogue import open_run
from sidrec.manifest import write_manifest
from sidrec.rundir import RunLayout


def assign_new_codes(existing: SemanticIDs, raw: torch.Tensor, costs: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Unique full codes `[n, L]` for new items with tokenizer codes `raw [n, L_tok]`; existing codes kept.

    Returns `(codes, relocated)`, `relocated [n]` marking items moved to another last-level code.
    `costs [n, K_last]` rank the alternative last-level codes (lower is better).
    """
    raw = torch.as_tensor(raw, dtype=torch.long).clone()
    n_tok, n_levels = raw.shape[1], existing.n_levels
    if n_levels not in (n_tok, n_tok + 1):
        raise ArtifactError(f"semantic IDs have {n_levels} levels but the tokenizer writes {n_tok}: "
                            "they do not come from the same tokenizer")
    slots = existing.codebook_sizes[-1] if n_levels == n_tok + 1 else 1  # items that may share a raw code
    last_size = existing.codebook_sizes[n_tok - 1]
    base = existing.codes[:, :n_tok]
    groups = torch.unique(torch.cat([base, raw]), dim=0, return_inverse=True)[1]
    taken = torch.bincount(groups[: len(base)], minlength=int(groups.max()) + 1)
    slot = taken[groups[len(base):]] + collision_groups(raw)[2]
    relocated = slot >= slots

    occupied = torch.cat([base, raw[~relocated]])  # raw codes in use, one row per item
    slot = slot.clone()
    for i in relocated.nonzero().flatten().tolist():  # rare: only items whose raw code is full
        same_prefix = (occupied[:, : n_tok - 1] == raw[i, : n_tok - 1]).all(dim=1)
        load = torch.bincount(occupied[same_prefix, n_tok - 1], minlength=last_size)
        cost = costs[i].double() if costs is not None else (torch.arange(last_size) - raw[i, -1]).abs().double()
        cost = cost.masked_fill(load >= slots, torch.inf)
        if not torch.isfinite(cost).any():
            raise ValueError(f"new item {i}: every code under prefix {raw[i, : n_tok - 1].tolist()} is taken; "
                             "the frozen codebooks are full, retrain the tokenizer with larger ones")
        code = int(torch.argmin(cost))
        raw[i, -1], slot[i] = code, load[code]
        occupied = torch.cat([occupied, raw[i : i + 1]])
    codes = torch.cat([raw, slot[:, None]], dim=1) if n_levels == n_tok + 1 else raw
    if torch.unique(torch.cat([existing.codes, codes]), dim=0).shape[0] != existing.n_items + len(codes):
        raise AssertionError("internal error: assigned semantic IDs are not unique")
    return codes, relocated


def _swap_directory(new: Path, target: Path) -> None:
    """Put `new` in place of `target` with renames only (the old one is removed afterwards)."""
    old = target.with_name(f".{target.name}-old-{uuid.uuid4().hex[:8]}")
    os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old)


def add_items(run_dir: str | Path, items_path: str | Path) -> dict:
    """Make the items in `items_path` (JSONL/CSV/Parquet: item_id + text fields) recommendable.

    Raises ValueError for models with a learned per-item table (popularity, SASRec): those need
    retraining. Rewrites RUN_DIR/model (weights unchanged) and RUN_DIR/manifest.json.
    """
    start = time.perf_counter()
    layout = RunLayout(run_dir)
    served = open_run(layout.root)
    model, config = served.model, served.config
    if "sids" not in type(model).needs:
        raise ValueError(f"model {model.name!r} learns one parameter row per training item, so it cannot take new "
                         "items without retraining; only models over semantic IDs (tiger, asymrec) can")
    if config.embed is None or config.tokenize is None:
        raise ValueError(f"{layout.config}: needs `embed` and `tokenize` sections to encode new items")
    if config.embed.name == "collaborative":
        raise ValueError("the run's items are embedded from interactions (embed.name=collaborative); "
                         "new items have none, so they cannot be encoded")
    new = read_item_table(items_path)
    if new.empty:
        raise DataFormatError(f"{items_path}: no items")
    known = served.catalogue.lookup(new["item_id"].tolist()) >= 0
    if known.any():
        raise ValueError(f"{items_path}: item ids already in the catalogue: {new['item_id'][known].tolist()[:20]}")

    vectors = build_encoder(config.embed.name, **config.embed.options()).encode(new).vectors
    tokenizer = Tokenizer.load(layout.tokenizer)
    raw = tokenizer.encode(vectors)
    try:
        costs = tokenizer.last_level_costs(vectors)
    except NotImplementedError:
        costs = None
    codes, relocated = assign_new_codes(model.sids, raw, costs)

    n_items = model.n_items + len(new)
    context = {"sids": SemanticIDs(torch.cat([model.sids.codes, codes]), model.sids.codebook_sizes,
                                   model.sids.resolution, {**model.sids.info, "added_items":
                                                           model.sids.info.get("added_items", 0) + len(new)})}
    if "embeddings" in type(model).needs:
        old = model.embeddings
        context["embeddings"] = ItemEmbeddings(torch.cat([old.vectors, vectors]), old.encoder, old.info)
    extended = model.over_catalogue(n_items, **context)

    added_path = layout.added_items
    added = pd.concat([pd.read_parquet(added_path), new], ignore_index=True) if added_path.exists() else new
    staging = Path(tempfile.mkdtemp(prefix=".model-new-", dir=layout.root))
    try:
        extended.save(staging)
        added.to_parquet(staging / added_path.name)
        _swap_directory(staging, layout.model)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    write_manifest(layout.root)
    return {"added": len(new), "items": n_items, "relocated": int(relocated.sum()),
            "codes": dict(zip(new["item_id"].tolist(), codes.tolist())),
            "seconds": round(time.perf_counter() - start, 3)}
