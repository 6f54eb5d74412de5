"""Training-step throughput of the converged runs: GFLOP/s of a real training step against this machine's matmul peak.

    .venv/bin/python benchmarks/step_throughput.py          # one run per model of reproduce.json found under runs/
    .venv/bin/python benchmarks/step_throughput.py --runs runs/reproduce/amazon-beauty-rpg-seed42

For each run: its trained model and dataset (`pipeline.load_run`), a seeded sample of the batches of its first
epoch (so the sample has the epoch's mix of shapes), the FLOPs of each step's forward and backward counted by
torch's FlopCounterMode, and the seconds of the same steps run by the project's `Trainer` in the run's own
precision (autocast, AdamW, clipping and schedule included: what a real step costs). The peak is a square
matmul (n = 2048) measured at fp32 and bf16 with the same threads; a row states the fraction of the peak of its
own precision and of the fp32 peak. Run it alone: anything beside it lowers both the peak and the steps.
Writes benchmarks/results/step_throughput.{md,json}.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from sidrec import pipeline
from sidrec.cli import flush_subnormals
from sidrec.io import atomic_path, read_json, write_json
from sidrec.rundir import RunLayout
from sidrec.training import Trainer
from provenance import run_facts

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "step_throughput"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def matmul_peak(dtype: torch.dtype = torch.float32, n: int = 2048, repeats: int = 10) -> float:
    """Measured GFLOP/s of a square `n x n` matmul in `dtype` on this machine."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def sample_batches(model, dataset, batch_size: int, n: int, seed: int = 0) -> tuple[list[dict], int]:
    """`n` batches drawn (seeded) from epoch 1 of the model's own batching, and how many the epoch has."""
    batches = list(model.make_batches(dataset, batch_size)(0, torch.Generator().manual_seed(seed)))
    picks = torch.randperm(len(batches), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return [batches[i] for i in picks.tolist()], len(batches)


def step_flops(model, batches: list[dict], precision: str) -> float:
    """Mean FLOPs of one step's forward + backward over `batches` (the optimizer's elementwise work is not counted)."""
    model.train()
    with FlopCounterMode(display=False) as counter:
        for batch in batches:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss, count = model.loss(batch)
            (loss.float() / count).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / len(batches)


def step_seconds(model, train_config, batches: list[dict], threads: int, warmup: int = 2) -> float:
    """Mean seconds of one `Trainer` step over `batches`, after `warmup` untimed steps."""
    config = train_config.model_copy(update={"epochs": 1, "max_seconds": None, "checkpoint_every": 0,
                                             "log_dir": None, "progress": False, "num_threads": threads})
    Trainer(model, config).fit(lambda epoch, generator: batches[:warmup])
    return Trainer(model, config).fit(lambda epoch, generator: batches)["train_seconds"] / len(batches)


def measure(run_dir: Path, n_batches: int, threads: int, peaks: dict[str, float]) -> dict | None:
    config, dataset, model = pipeline.load_run(run_dir)
    if not hasattr(model, "loss"):
        return None  # closed form (popularity): no training step
    precision = config.train.precision
    batches, per_epoch = sample_batches(model, dataset, config.train.batch_size, n_batches)
    flops = step_flops(model, batches, precision)
    seconds = step_seconds(model, config.train, batches, threads)
    gflops = flops / seconds / 1e9
    return {"run_dir": str(run_dir.relative_to(ROOT)) if run_dir.is_relative_to(ROOT) else str(run_dir),
            "model": config.model.name, "precision": precision, "batch_size": config.train.batch_size,
            "batches_sampled": len(batches), "steps_per_epoch": per_epoch, "gflop_per_step": round(flops / 1e9, 3),
            "step_seconds": round(seconds, 4), "gflops": round(gflops, 1),
            "of_own_peak": round(gflops / peaks[precision], 3), "of_fp32_peak": round(gflops / peaks["fp32"], 3),
            "epoch_seconds_estimate": round(seconds * per_epoch, 1)}


def default_runs(rows: list[dict]) -> list[tuple[str, Path]]:
    """One run directory per (data, model) of reproduce.json's rows that exists here, the lowest seed first."""
    found: dict[tuple[str, str], Path] = {}
    for row in sorted(rows, key=lambda r: r["seed"]):
        path = ROOT / row["run_dir"]
        if (row["data"], row["model"]) not in found and RunLayout(path).model.exists():
            found[(row["data"], row["model"])] = path
    return [(f"{data} / {model}", path) for (data, model), path in found.items()]


def render(result: dict) -> str:
    peaks = result["peaks_gflops"]
    lines = ["# Training-step throughput (`benchmarks/step_throughput.py`)", "",
             f"{result['date']}, commit {result['commit']}, {result['cpu']}, {result['threads']} threads, torch "
             f"{result['torch']}. Matmul peak (n = 2048): fp32 {peaks['fp32']:.1f} GFLOP/s, bf16 {peaks['bf16']:.1f} "
             f"GFLOP/s. Each row: {result['batches_sampled']} batches sampled (seed 0) from the run's first epoch; "
             "FLOPs of forward + backward by FlopCounterMode; seconds per step by the project's Trainer in the run's "
             "precision (optimizer included). Epoch estimate = s/step x steps per epoch (training only).", "",
             "| run | model | precision | batch | GFLOP/step | s/step | GFLOP/s | of own peak | of fp32 peak | steps/epoch | epoch s (est.) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, row in result["rows"].items():
        lines.append(f"| {label} | {row['model']} | {row['precision']} | {row['batch_size']} | {row['gflop_per_step']} | "
                     f"{row['step_seconds']} | {row['gflops']} | {row['of_own_peak']:.0%} | {row['of_fp32_peak']:.0%} | "
                     f"{row['steps_per_epoch']} | {row['epoch_seconds_estimate']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", type=Path, help="run directories (default: one per model of reproduce.json)")
    parser.add_argument("--batches", type=int, default=12, help="batches sampled per run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    flush_subnormals()
    torch.set_num_threads(args.threads)
    rows = read_json(ROOT / "benchmarks" / "results" / "reproduce.json")
    runs = [(str(path), path.resolve()) for path in args.runs] if args.runs else default_runs(rows)
    if not runs:
        raise SystemExit("no run directories: pass --runs, or run benchmarks/reproduce.py first")
    peaks = {name: matmul_peak(dtype) for name, dtype in DTYPES.items()}
    rows = {}
    for label, path in runs:
        row = measure(path, args.batches, args.threads, peaks)
        if row is not None:
            rows[label] = row
            print(label, row, flush=True)
    result = {**run_facts(), "batches_sampled": args.batches,
              "peaks_gflops": {k: round(v, 1) for k, v in peaks.items()}, "rows": rows}
    write_json(args.out.with_suffix(".json"), result)
    with atomic_path(args.out.with_suffix(".md")) as tmp:
        tmp.write_text(render(result))
    print(render(result))


if __name__ == "__main__":
    main()
