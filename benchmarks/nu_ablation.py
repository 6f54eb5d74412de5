"""Does CARD's non-uniform transform help? Every quantizer with and without it, everything else equal.

    .venv/bin/python benchmarks/nu_ablation.py --data amazon-beauty amazon-scientific

Pairs (same options, same seed, same Sinkhorn and epoch selection; the only difference is h):
`rqvae` (+ Sinkhorn last level, epoch chosen by collisions, 4 x 256: NU-RQ-VAE's own settings) vs
`nurqvae`; `rkmeans` vs `nu-rkmeans`; `opq` vs `nu-opq`; `mhq` with `transform: none` vs
`kumaraswamy`. The item embeddings are the text embeddings of the `tiger` preset (`--data
amazon-beauty`) or CARD's unit images (`--data card:ml-100k`), built by the pipeline's own embed
stage (shared cache). Both sides of the RQ-VAE pair standardise their inputs (NU-RQ-VAE's default). For each fit: utilisation, perplexity and Gini of every
level, collision rate before any resolution, reconstruction MSE, and, for the transforms, the
statistics of what they act on (latent std per dimension, the fitted a and b). Also two synthetic
skewed sets (log-normal, power-law). Writes benchmarks/results/nu_ablation.{md,json}; `--append` keeps the
rows of datasets not run this time, so the table can grow one dataset at a time.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from sidrec import pipeline
from sidrec.cli import flush_subnormals
from sidrec.config import load_config, resolve_preset
from sidrec.io import atomic_path, read_json, write_json
from sidrec.tokenizers import build_tokenizer
from sidrec.tokenizers.metrics import code_counts, collision_stats, level_stats
from sidrec.tokenizers.nonuniform import KumaraswamyTransform

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "nu_ablation"
SYNTHETIC_DIM = 64  # MHQ projects to at most this many dimensions on the synthetic sets
RQ = {"n_levels": 4, "codebook_size": 256, "sinkhorn_last": True, "select": "collisions", "standardize_input": True,
      "progress": False}
PAIRS = [  # (label, tokenizer without h, tokenizer with h, shared options, options of the h side only)
    ("RQ-VAE vs NU-RQ-VAE", "rqvae", "nurqvae", RQ, {}),
    ("RK-means vs NU-RK-means", "rkmeans", "nu-rkmeans", {"n_levels": 3, "codebook_size": 256}, {}),
    ("OPQ vs NU-OPQ", "opq", "nu-opq", {"n_subspaces": 4, "codebook_size": 256}, {}),
    ("MHQ vs MHQ + h", "mhq", "mhq", {"n_views": 8, "n_levels": 3, "codebook_size": 256, "proj_dim": 128,
                                      "epochs": 20, "progress": False}, {"transform": "kumaraswamy"}),
]


def synthetic(name: str, n: int = 12000, d: int = SYNTHETIC_DIM, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if name == "log-normal":
        return torch.exp(torch.randn(n, d, generator=g) * 1.0)
    return torch.rand(n, d, generator=g).pow(-1 / 1.5) - 1  # power law (Pareto, alpha 1.5)


def embeddings(data: str) -> torch.Tensor:
    """`amazon-beauty`: the `tiger` preset's text embeddings; `card:ml-100k`: the `card` preset's unit images."""
    preset, _, name = data.rpartition(":")
    config = load_config(resolve_preset(preset or "tiger"), [f"data.name={name}"])
    return pipeline.build_artifacts(config, ROOT / "runs" / "nu_ablation" / data.replace(":", "-"),
                                    until="embed").embeddings.vectors


def transform_of(tok) -> KumaraswamyTransform | None:
    for holder in (tok, getattr(tok, "model", None)):
        t = getattr(holder, "transform", None)
        if isinstance(t, KumaraswamyTransform):
            return t
    return None


def measure(name: str, options: dict, x: torch.Tensor) -> dict:
    start = time.perf_counter()
    tok = build_tokenizer(name, **options).fit(x)
    seconds = time.perf_counter() - start
    codes = tok.encode(x)
    levels = [level_stats(c) for c in code_counts(codes, tok.codebook_sizes)]
    row = {"tokenizer": name, "options": options, "fit_seconds": round(seconds, 1),
           "utilisation": [round(s["utilisation"], 3) for s in levels],
           "perplexity": [round(s["perplexity"], 1) for s in levels], "gini": [round(s["gini"], 3) for s in levels],
           "collision_rate": round(collision_stats(codes)["collision_rate"], 4),
           "recon_mse": float(((tok.decode(codes) - x) ** 2).mean())}
    latents = tok.latents(x) if hasattr(tok, "latents") else None
    if latents is not None:
        before = latents[0]
        row["latent_std"] = [round(float(v), 4) for v in (before.std(0).min(), statistics.median(before.std(0).tolist()), before.std(0).max())]
        row["latent_skew_median"] = round(float((((before - before.mean(0)) / before.std(0)) ** 3).mean(0).median()), 3)
    t = transform_of(tok)
    if t is not None:
        row["a"] = [round(float(v), 3) for v in (t.a.min(), t.a.median(), t.a.max())]
        row["b"] = [round(float(v), 3) for v in (t.b.min(), t.b.median(), t.b.max())]
    return row


def markdown(results: list[dict]) -> str:
    lines = ["# Non-uniform transform ablation (`benchmarks/nu_ablation.py`)", "",
             "Each pair shares every option and the seed; the right-hand side adds CARD's transform h "
             "(Kumaraswamy behind a running standardiser, unit space). Utilisation / perplexity / Gini per level, "
             "collision rate before any resolution (lower = more distinct codes), reconstruction MSE in the input space. "
             "Latent std / skew: the per-dimension statistics of what h acts on (min / median / max std); "
             "a, b: min / median / max of the fitted Kumaraswamy parameters.", ""]
    for data in dict.fromkeys(r["data"] for r in results):
        meta = next(r["meta"] for r in results if r["data"] == data)
        lines += [f"## {data}", "", f"{meta['date']}, commit {meta['commit']}, {meta['cpu']}, {meta['threads']} threads, "
                  f"seed {meta['seed']}.", "", "| pair | side | utilisation | perplexity | Gini | collisions | recon MSE | "
                  "latent std | latent skew | a | b | fit s |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in (r for r in results if r["data"] == data):
            for side in ("plain", "nu"):
                m = r[side]
                lines.append(f"| {r['pair'] if side == 'plain' else ''} | {'with h' if side == 'nu' else 'without h'} | "
                             f"{' / '.join(map(str, m['utilisation']))} | {' / '.join(map(str, m['perplexity']))} | "
                             f"{' / '.join(map(str, m['gini']))} | {m['collision_rate']:.4f} | {m['recon_mse']:.3g} | "
                             f"{' / '.join(map(str, m.get('latent_std', ['–'])))} | {m.get('latent_skew_median', '–')} | "
                             f"{' / '.join(map(str, m.get('a', ['–'])))} | {' / '.join(map(str, m.get('b', ['–'])))} | {m['fit_seconds']} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", default=["log-normal", "power-law", "amazon-beauty", "amazon-scientific"])
    parser.add_argument("--pairs", nargs="+", type=int, default=list(range(len(PAIRS))), help="indices into PAIRS")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--append", action="store_true",
                        help="keep the rows of the other datasets already in nu_ablation.json (each row keeps its own run facts)")
    args = parser.parse_args()
    flush_subnormals()
    torch.set_num_threads(args.threads)
    from provenance import run_facts

    meta = {**run_facts(), "seed": args.seed}
    results = []
    if args.append and OUT.with_suffix(".json").exists():
        results = [r for r in read_json(OUT.with_suffix(".json"))["results"] if r["data"] not in args.data and "meta" in r]
    for data in args.data:
        x = synthetic(data, seed=args.seed) if data in ("log-normal", "power-law") else embeddings(data)
        for index in args.pairs:
            label, plain, nu, shared, extra = PAIRS[index]
            shared = {**shared, "seed": args.seed}
            if "proj_dim" in shared:
                shared["proj_dim"] = min(shared["proj_dim"], x.shape[1])
            row = {"data": data, "meta": meta, "pair": label, "plain": measure(plain, shared, x), "nu": measure(nu, {**shared, **extra}, x)}
            results.append(row)
            print(data, label, "collisions", row["plain"]["collision_rate"], "->", row["nu"]["collision_rate"], flush=True)
            write_json(OUT.with_suffix(".json"), {"results": results})
            with atomic_path(OUT.with_suffix(".md")) as tmp:
                tmp.write_text(markdown(results) + "\n")
    print(OUT.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
