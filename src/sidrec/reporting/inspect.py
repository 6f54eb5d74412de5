"""What only the trained run can tell: per-user top-10s with code log-probabilities, the item ->
semantic-ID table, the tokenizer's latents and code usage, and CARD's rendered units."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sidrec.evaluation.protocol import rank_items, user_sample
from sidrec.features.card import nearest_neighbours, render_units
from sidrec.features.embeddings import ItemEmbeddings
from sidrec.features.base import build_encoder
from sidrec.serving.catalogue import ServedRun
from sidrec.models.base import CONTEXT_FILES
from sidrec.rundir import RunLayout
from sidrec.tokenizers.base import Tokenizer
from sidrec.tokenizers.metrics import code_counts, level_stats
from sidrec.semantic_ids import SemanticIDs


def run_sids(run_dir: Path) -> SemanticIDs | None:
    """The codes the model decodes (model/, which includes cold-start items), else the tokenize stage's."""
    layout = RunLayout(run_dir)
    for path in (layout.model / CONTEXT_FILES["sids"][0], layout.sids):
        if path.exists():
            return SemanticIDs.load(path)
    return None


def title(served: ServedRun, index: int) -> str:
    value = served.catalogue.titles[index] if 0 <= index < len(served.catalogue) else None
    return str(value) if value is not None else ""


def sid_table(served: ServedRun, sids: SemanticIDs) -> dict[str, Any]:
    """Every item's id, title and code: what the explorer's tree and search run on (client side)."""
    return {"levels": sids.n_levels, "codebook_sizes": sids.codebook_sizes,
            "ids": served.catalogue.item_ids.tolist(),
            "titles": [title(served, i) for i in range(len(served.catalogue))],
            "codes": sids.codes.tolist()}


def inspect_users(served: ServedRun, sids: SemanticIDs | None, part: str = "test", n_users: int = 20, k: int = 10,
                  seed: int = 0) -> list[dict]:
    """A fixed, seeded sample of evaluation users: history, top-k with scores, the hit, and for a
    generative model (`sids`: its codes, `run_sids`) each recommended item's per-code log-probabilities."""
    dataset, model, config = served.dataset, served.model, served.config
    users, histories, targets = dataset.split(part, config.eval.max_len)
    rows = user_sample(len(users), n_users, seed)
    rows = torch.arange(len(users)) if rows is None else rows
    histories, targets, users = histories[rows], targets[rows], users[rows]
    items, scores = rank_items(model, histories, min(k, dataset.n_items), config.eval.exclude_history)
    code_lp = None
    if hasattr(model, "item_code_log_probs"):
        code_lp = model.item_code_log_probs(histories, items)
    out = []
    for row in range(len(rows)):
        history = [int(i) for i in histories[row] if i >= 0]
        target = int(targets[row])
        recs = []
        for rank, (item, score) in enumerate(zip(items[row].tolist(), scores[row].tolist())):
            if item < 0:
                continue
            rec = {"rank": rank + 1, "id": served.catalogue.item_ids[item], "title": title(served, item),
                   "score": float(score), "hit": item == target}
            if sids is not None:
                rec["code"] = sids.codes[item].tolist()
            if code_lp is not None:
                rec["code_log_probs"] = [round(float(v), 4) for v in code_lp[row, rank]]
            recs.append(rec)
        out.append({"user": str(dataset.user_ids[int(users[row])]), "part": part,
                    "history": [{"id": served.catalogue.item_ids[i], "title": title(served, i)} for i in history],
                    "target": {"id": served.catalogue.item_ids[target], "title": title(served, target),
                               "code": sids.codes[target].tolist() if sids is not None else None},
                    "hit_rank": next((r["rank"] for r in recs if r["hit"]), None), "recommendations": recs})
    return out


def tokenizer_views(run_dir: Path) -> dict[str, Any] | None:
    """Code usage per level (sorted counts, perplexity, Gini) before collision resolution, the latent
    values before/after the non-uniform transform, and MHQ's energy per view (recomputed from the
    stage's embeddings and fitted tokenizer)."""
    folder, embeddings = RunLayout(run_dir).tokenizer, RunLayout(run_dir).embeddings
    if not folder.exists() or not embeddings.exists():
        return None
    tokenizer = Tokenizer.load(folder)
    x = ItemEmbeddings.load(embeddings).vectors
    codes = tokenizer.encode(x)
    usage = [{"level": level, **level_stats(c), "sorted_counts": c.sort(descending=True).values.tolist()}
             for level, c in enumerate(code_counts(codes, tokenizer.codebook_sizes))]
    out: dict[str, Any] = {"tokenizer": tokenizer.name, "usage": usage}
    latents = tokenizer.latents(x)
    if latents is not None:
        before, after = (t.flatten() for t in latents)
        step = max(1, before.numel() // 200_000)  # a histogram needs no more than 200k values
        out["latents"] = {"before": before[::step].tolist(), "after": after[::step].tolist()}
    if tokenizer.name == "mhq":
        report = tokenizer.report(x)
        out["energy_share_per_view"] = report["energy_share_per_view"]
    return out


def card_gallery(served: ServedRun, out_dir: Path, n_items: int = 12, seed: int = 0) -> list[dict]:
    """Render the units of a seeded sample of items (with the run's layout and collaborative
    neighbours) as PNGs under `out_dir`; returns each unit's item and neighbours."""
    config, dataset = served.config, served.dataset
    encoder = build_encoder(config.embed.name, **config.embed.options())
    layout = encoder.layout
    collaborative = RunLayout(served.run_dir).collaborative_embeddings
    neighbours = None
    if layout.k and collaborative.exists():
        neighbours = nearest_neighbours(ItemEmbeddings.load(collaborative), layout.k)
    n = len(dataset.items)
    rows = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:n_items].sort().values.tolist()
    out_dir.mkdir(parents=True, exist_ok=True)
    units = []
    for row, image in zip(rows, render_units(dataset.items, neighbours, rows=rows, layout=layout,
                                             image_column=encoder.image_column)):
        name = f"unit-{row:06d}.png"
        image.save(out_dir / name, format="PNG", optimize=True)
        nb = [] if neighbours is None else [int(i) for i in neighbours[row] if i >= 0]
        units.append({"file": name, "id": served.catalogue.item_ids[row], "title": title(served, row),
                      "neighbours": [{"id": served.catalogue.item_ids[i], "title": title(served, i)} for i in nb]})
    return units
