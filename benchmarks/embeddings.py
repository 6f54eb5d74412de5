"""Item-representation benchmark: encoding cost and a retrieval quality probe per encoder.

For each dataset and encoder it reports
- encode time per 1,000 items on this CPU (fresh encoding, cache bypassed, model load excluded),
  measured on the first `--time-items` items (text) / `--time-items-image` items (CARD);
- Recall@10 / NDCG@10 of a content-only next-item retriever: the user vector is the mean of the
  L2-normalised embeddings of the whole history (all items but the last), items are ranked by cosine
  over the full catalogue, target = the last item (leave-one-out test split). Reported with history
  items kept in the ranking (the project protocol) and with them excluded.

CARD's "collaborative context" neighbours and the `collaborative` row come from the CARD preset's
SASRec (configs/card.yaml: trained on the training split only, under its time budget), built by the
pipeline's own stages, so `sidrec run configs/card.yaml` reuses them from the stage cache.

Usage: python benchmarks/embeddings.py [--datasets amazon-scientific amazon-beauty] [--threads 1]
"""

from __future__ import annotations

import argparse
import logging
import platform
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from sidrec import pipeline
from sidrec.config import load_config, resolve_preset
from sidrec.data import Dataset, load_dataset
from sidrec.features import CardEncoder, ItemEmbeddings, TextEncoder, fuse, write_units
from sidrec.features.card import nearest_neighbours, render_units
from sidrec.features.image import embed_images
from sidrec.io import atomic_path, read_json, write_json

log = logging.getLogger("benchmarks.embeddings")
ROOT = Path(__file__).resolve().parents[1]


def card_artifacts(name: str, runs: Path):
    """The CARD preset's collaborative (SASRec, training split only) and CARD embeddings, exactly as
    `sidrec run configs/card.yaml` builds them (and from the same stage cache)."""
    config = load_config(resolve_preset("card"), [f"data.name={name}"])
    return config, pipeline.build_artifacts(config, runs / f"{name}-card", until="embed")


def retrieval_probe(ds: Dataset, emb: ItemEmbeddings, k: int = 10, chunk: int = 2048) -> dict:
    """Recall@k / NDCG@k of mean-of-history cosine retrieval on the leave-one-out test split."""
    max_len = int(ds.lengths.max())
    _, hist, target = ds.split("test", max_len=max_len)
    x = F.normalize(emb.vectors, dim=1)
    rows, cols = (hist >= 0).nonzero(as_tuple=True)  # sum per user without a [users, length, dim] tensor
    user = F.normalize(torch.zeros(len(hist), x.shape[1]).index_add_(0, rows, x[hist[rows, cols]]), dim=1)
    result = {}
    for exclude in (False, True):
        hits, ndcg = [], []
        for start in range(0, len(target), chunk):
            sl = slice(start, start + chunk)
            scores = user[sl] @ x.T
            if exclude:
                h = hist[sl]
                rows = torch.arange(h.shape[0])[:, None].expand_as(h)
                scores[rows[h >= 0], h[h >= 0]] = float("-inf")
            top = scores.topk(k, dim=1).indices
            match = top == target[sl, None]
            hits.append(match.any(1).float())
            ndcg.append((match.float() / torch.log2(torch.arange(2, k + 2).float())).sum(1))
        key = "history_excluded" if exclude else "history_kept"
        result[key] = {f"recall@{k}": torch.cat(hits).mean().item(), f"ndcg@{k}": torch.cat(ndcg).mean().item()}
    return result


def time_per_1000(encode: Callable[[int], object], n: int) -> float:
    """Seconds per 1,000 items of `encode(n)` (a fresh, uncached encode of n items), after a warm-up."""
    encode(4)
    t0 = time.perf_counter()
    encode(n)
    return 1000 * (time.perf_counter() - t0) / n


def bench_dataset(name: str, args) -> dict:
    ds = load_dataset(name)
    items = ds.items
    log.info("%s: %d items, %d users", name, ds.n_items, ds.n_users)
    res: dict = {"items": ds.n_items, "users": ds.n_users, "text_columns": [c for c in items.columns if c != "item_id"],
                 "encoders": {}}

    t0 = time.perf_counter()
    config, art = card_artifacts(name, args.runs)
    neighbours = nearest_neighbours(art.collaborative, k=config.embed.options().get("k", 3))
    res["neighbours"] = {"source": f"SASRec item embeddings (cosine), {art.seconds}",
                         "seconds": round(time.perf_counter() - t0, 2)}
    res["encoders"]["collaborative"] = {"dim": art.collaborative.dim, "model": "SASRec (configs/card.yaml)",
                                        **retrieval_probe(ds, art.collaborative)}
    if args.example_png and name == "amazon-scientific":
        tmp = write_units(items, args.example_png.parent / ".example", neighbours, rows=[args.example_item])[0]
        tmp.replace(args.example_png)
        (args.example_png.parent / ".example").rmdir()

    text = TextEncoder(cache_dir=args.cache_dir, show_progress=False)
    n_text = min(args.time_items, len(items))
    text_emb = text.encode(items)
    res["encoders"]["text"] = {"dim": text_emb.dim, "model": "all-MiniLM-L6-v2 (offline)",
                               "sec_per_1000": round(time_per_1000(lambda n: text._encode(items.iloc[:n]), n_text), 2),
                               "timed_on": n_text, **retrieval_probe(ds, text_emb)}
    log.info("%s text: %s", name, res["encoders"]["text"])
    res["encoders"]["image"] = {"note": "dataset ships no item pictures: image encoder not applicable"}

    card = CardEncoder(cache_dir=args.cache_dir, k=neighbours.shape[1])
    n_time = min(args.time_items_image, len(items))

    def card_features(n: int) -> torch.Tensor:  # exactly CardEncoder._encode, restricted to the first n rows
        return embed_images(card.backend, render_units(items, neighbours, rows=range(n), layout=card.layout))

    t0 = time.perf_counter()
    for _ in render_units(items.iloc[:n_time], None):
        pass
    render_only = 1000 * (time.perf_counter() - t0) / n_time
    card_row = {"dim": 1280, "backend": "efficientnet-lite0 (offline), 512px unit resized to 224",
                "sec_per_1000": round(time_per_1000(card_features, n_time), 2),
                "render_only_sec_per_1000": round(render_only, 2), "timed_on": n_time}
    if args.card_quality:
        card_emb = art.embeddings
        card_row.update(retrieval_probe(ds, card_emb))
        fused = fuse([text_emb, card_emb])
        res["encoders"]["fusion(text+card)"] = {"dim": fused.dim, "weights": [1.0, 1.0],
                                                **retrieval_probe(ds, fused)}
    res["encoders"]["card"] = card_row
    log.info("%s card: %s", name, card_row)
    return res


def _metric(row: dict, key: str) -> str:
    return f"{row[key]:.4f}" if key in row else "not run"


def markdown(results: dict) -> str:
    lines = [
        "# Item representations: encode cost and retrieval probe",
        "",
        f"CPU: {results['cpu']} ({results['threads']} torch thread(s)). Encode time = seconds per 1,000 items,",
        "fresh encoding (cache bypassed, model load excluded), timed on the first N items (column `timed on`).",
        "Probe: mean of the history's L2-normalised item embeddings vs all items (cosine, full catalogue),",
        "leave-one-out test split (history = all but last item, target = last). `kept` = history items stay in",
        "the ranking (project protocol); `excl.` = history items removed.",
        "CARD neighbours: cosine top-3 of the CARD preset's SASRec item embeddings (training split only; row",
        "`collaborative` probes those embeddings themselves). Amazon sets ship no pictures, so the image",
        "encoder is not applicable and CARD units contain text + neighbour strip (placeholders).",
        "",
        "| dataset | encoder | dim | s / 1k items | timed on | R@10 kept | N@10 kept | R@10 excl. | N@10 excl. |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, res in results["datasets"].items():
        for enc, row in res["encoders"].items():
            if "note" in row:
                lines.append(f"| {name} | {enc} | – | – | – | {row['note']} | | | |")
                continue
            kept, excl = row.get("history_kept", {}), row.get("history_excluded", {})
            lines.append(
                f"| {name} | {enc} | {row.get('dim', '–')} | {row.get('sec_per_1000', '–')} | "
                f"{row.get('timed_on', '–')} | {_metric(kept, 'recall@10')} | {_metric(kept, 'ndcg@10')} | "
                f"{_metric(excl, 'recall@10')} | {_metric(excl, 'ndcg@10')} |"
            )
    lines += ["", "CARD rendering alone (no encoder), s / 1k items: " + ", ".join(
        f"{n}: {r['encoders']['card']['render_only_sec_per_1000']}" for n, r in results["datasets"].items())]
    lines += ["Pipeline stages behind the CARD rows (seconds in this run; ~0 = reused from the stage cache): " + ", ".join(f"{n}: {r['neighbours']['source']}" for n, r in results["datasets"].items())]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["amazon-scientific", "amazon-beauty"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--time-items", type=int, default=1000, help="items timed for the text encoder")
    parser.add_argument("--time-items-image", type=int, default=500, help="items timed for CARD")
    parser.add_argument("--no-card-quality", dest="card_quality", action="store_false",
                        help="skip encoding the full catalogue with CARD (slow on CPU)")
    parser.add_argument("--cache-dir", type=Path, default=ROOT / ".cache/sidrec/embeddings")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs/embeddings", help="run folders of the CARD stages")
    parser.add_argument("--example-png", type=Path, default=ROOT / "docs/images/card_unit_example.png")
    parser.add_argument("--example-item", type=int, default=0)
    parser.add_argument("--append", action="store_true",
                        help="keep other datasets' rows already in OUT/embeddings.json (rerun one dataset)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    previous = args.out / "embeddings.json"
    results = {"cpu": platform.processor() or platform.machine(), "threads": args.threads,
               "torch": torch.__version__, "datasets": read_json(previous)["datasets"] if args.append else {}}
    for name in args.datasets:
        results["datasets"][name] = bench_dataset(name, args)
        write_json(args.out / "embeddings.json", results)  # partial results survive an interrupted run
    with atomic_path(args.out / "embeddings.md") as tmp:
        tmp.write_text(markdown(results))


if __name__ == "__main__":
    main()
