"""TIGER and CARD (CPU presets) against SASRec and popularity, with training throughput.

    .venv/bin/python benchmarks/generative.py --datasets amazon-scientific ml-100k --seeds 42

For every dataset x preset x seed this runs the preset with `sidrec.pipeline.run` (so each result
is an ordinary run directory under --runs), then reports test metrics (mean ± std over seeds),
training samples/s, and the fraction of this machine's measured fp32 matmul peak that one
training step of the generator reaches (FLOPs counted by torch's FlopCounterMode on a real batch).
Writes benchmarks/results/generative.{md,json}.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch

from sidrec import pipeline
from sidrec.cli import flush_subnormals
from sidrec.config import load_config, resolve_preset
from sidrec.io import atomic_path, read_json, write_json
from step_throughput import matmul_peak, step_flops

ROOT = Path(__file__).resolve().parents[1]
PRESETS = ["popularity", "sasrec", "tiger", "card"]
PAPER = {"amazon-beauty": "TIGER paper: R@10 .0648, N@10 .0384"}


def step_efficiency(run_dir: Path, batch_size: int, repeats: int = 5) -> dict | None:
    """GFLOP per training step and GFLOP/s reached, on one real batch of the trained model."""
    config, dataset, model = pipeline.load_run(run_dir)
    if not hasattr(model, "loss"):
        return None
    batch = next(iter(model.make_batches(dataset, batch_size)(0, torch.Generator().manual_seed(0))))
    flops = step_flops(model, [batch], "fp32")  # leaves the model in train mode
    start = time.perf_counter()
    for _ in range(repeats):
        model.zero_grad()
        loss, count = model.loss(batch)
        (loss / count).backward()
    seconds = (time.perf_counter() - start) / repeats
    return {"gflop_per_step": round(flops / 1e9, 3), "step_seconds": round(seconds, 4),
            "gflops": round(flops / seconds / 1e9, 2)}


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def table_row(runs: list[dict], peak: float) -> str:
    """One dataset x preset: metrics as mean ± std over its seeds, throughput from the first seed."""
    test, first = [r["test"] for r in runs], runs[0]
    eff, peak = first.get("efficiency"), first.get("matmul_peak_gflops", peak)
    return "| " + " | ".join([
        first["dataset"], first["preset"], ",".join(str(r["seed"]) for r in runs),
        mean_std([t["recall@10"] for t in test]), mean_std([t["ndcg@10"] for t in test]),
        mean_std([t["recall@10_tail"] for t in test]), mean_std([t["coverage@10"] for t in test]),
        str(first["train"].get("samples_per_second", "–")),
        f"{eff['gflops']:.1f} ({eff['gflops'] / peak:.0%})" if eff else "–",
        f"{statistics.mean(r['seconds'] for r in runs):.0f}",
        str(first["train"].get("stopped") or "converged/epochs"),
    ]) + " |"


def write_results(args, peak: float, raw: list[dict]) -> list[str]:
    """Rewrite the tables after every run, so an interrupted benchmark keeps what it measured."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in raw:
        groups.setdefault((r["dataset"], r["preset"]), []).append(r)
    datasets = list(dict.fromkeys(r["dataset"] for r in raw))
    lines = ["# Generative recommenders vs baselines", "",
             f"Machine: {platform.machine()}, torch {torch.__version__}, {args.threads} threads; fp32 matmul peak "
             f"measured at the start of each invocation (latest {peak:.1f} GFLOP/s; each row's fraction uses its own). Presets from configs/ (CPU sizes), extra overrides: {args.set or 'none'}. "
             "Leave-one-out, full ranking, history items NOT excluded; validation NDCG@10 selects the epoch; "
             "test read once per run. Samples/s = training samples (windows for SASRec, prefixes for TIGER) per "
             "second of training incl. validation. Metrics are mean ± std over the listed seeds.", "",
             "| data | preset | seeds | test R@10 | test N@10 | tail R@10 | coverage@10 | train samples/s | "
             "train step GFLOP/s (of peak) | total s | stopped by |",
             "|---|---|---|---|---|---|---|---|---|---|---|", *(table_row(runs, peak) for runs in groups.values())]
    lines += [f"\nReference for {name}: {PAPER[name]}." for name in datasets if name in PAPER]
    if args.notes is not None:
        lines += ["", "## Reading", "", args.notes.read_text().strip()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out.with_suffix(".md")) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    write_json(args.out.with_suffix(".json"), {"matmul_peak_gflops": peak, "runs": raw})
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["amazon-scientific", "ml-100k"])
    parser.add_argument("--presets", nargs="+", default=PRESETS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[42])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], help="overrides applied to every run")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "generative")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "generative")
    parser.add_argument("--append", action="store_true",
                        help="keep the other datasets' runs already in OUT.json (rerun some datasets only)")
    parser.add_argument("--notes", type=Path, default=None, help="markdown appended as a 'Reading' section")
    parser.add_argument("--render-only", action="store_true", help="rewrite OUT.md from OUT.json (+ --notes)")
    args = parser.parse_args()
    flush_subnormals()  # as the sidrec command does (subnormal activations slow training ~1.8x)
    torch.set_num_threads(args.threads)
    previous = read_json(args.out.with_suffix(".json")) if args.append or args.render_only else None
    if args.render_only:
        print("\n".join(write_results(args, previous["matmul_peak_gflops"], previous["runs"])))
        return
    peak = matmul_peak()
    print(f"matmul peak: {peak:.1f} GFLOP/s", flush=True)
    raw = [r for r in previous["runs"] if r["dataset"] not in args.datasets] if previous else []
    for name in args.datasets:
        for preset in args.presets:
            for seed in args.seeds:
                overrides = [f"data.name={name}", f"train.seed={seed}", "train.progress=false", *args.set]
                config = load_config(resolve_preset(preset), overrides)
                run_dir = args.runs / f"{name}-{preset}-seed{seed}"
                metrics = pipeline.run(config, run_dir)
                metrics["efficiency"] = step_efficiency(run_dir, config.train.batch_size)
                metrics["matmul_peak_gflops"] = round(peak, 1)
                raw.append({**metrics, "preset": preset})
                print(f"{name} {preset} seed {seed}: test R@10 {metrics['test']['recall@10']:.4f} "
                      f"N@10 {metrics['test']['ndcg@10']:.4f} ({metrics['seconds']:.0f} s)", flush=True)
                lines = write_results(args, peak, raw)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
