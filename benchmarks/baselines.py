"""Popularity and SASRec on real benchmarks: accuracy, time per epoch, total time.

    .venv/bin/python benchmarks/baselines.py --datasets amazon-beauty amazon-sports ml-1m

Writes benchmarks/results/baselines.{md,json}. Each run is a normal `sidrec run` directory under
--runs, so its config, per-epoch history and metrics can be inspected afterwards.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

from sidrec import pipeline
from sidrec.cli import flush_subnormals
from sidrec.config import load_config, resolve_preset
from sidrec.evaluation.report import results_table
from sidrec.io import write_json

ROOT = Path(__file__).resolve().parents[1]
PAPER = {"amazon-beauty": {"recall@10": 0.0740, "ndcg@10": 0.0423}}  # independent SASRec-CE reproduction


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["amazon-beauty", "amazon-sports", "ml-1m"])
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--max-seconds", type=float, default=1500, help="training budget per SASRec run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "benchmarks")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "baselines")
    parser.add_argument("--set", action="append", default=[], help="extra overrides for the SASRec runs")
    args = parser.parse_args()
    flush_subnormals()  # as the sidrec command does (subnormal activations slow training ~1.8x)
    torch.set_num_threads(args.threads)

    runs = []
    for name in args.datasets:
        for preset in ("popularity", "sasrec"):
            overrides = [f"data.name={name}", f"train.seed={args.seed}", "train.progress=false"]
            if preset == "sasrec":
                overrides += [f"train.max_seconds={args.max_seconds}", "model.dropout=0.5",
                              "train.batch_size=256", "train.patience=10", *args.set]
            config = load_config(resolve_preset(preset), overrides)
            start = time.perf_counter()
            metrics = pipeline.run(config, args.runs / f"{name}-{preset}-seed{args.seed}")
            history = metrics["train"]
            epochs = history.get("epochs")
            train_seconds = history.get("train_seconds", 0.0)
            metrics["label"] = preset
            metrics["epochs"] = epochs
            metrics["seconds_per_epoch"] = round(train_seconds / epochs, 2) if epochs else None
            metrics["wall_seconds"] = round(time.perf_counter() - start, 1)
            runs.append(metrics)
            print(f"{name} {preset}: test R@10 {metrics['test']['recall@10']:.4f} "
                  f"N@10 {metrics['test']['ndcg@10']:.4f} ({metrics['wall_seconds']} s)", flush=True)

    lines = ["# Baselines: popularity and SASRec", "",
             f"Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
             f"{args.threads} threads, seed {args.seed}. Command: `python benchmarks/baselines.py "
             f"--datasets {' '.join(args.datasets)}`.", "",
             results_table(runs), "",
             "| data | model | epochs run | s/epoch (train, incl. validation) | best epoch | stopped | total s | target R@10 / N@10 |",
             "|---|---|---|---|---|---|---|---|"]
    for run in runs:
        target = PAPER.get(run["dataset"]) if run["label"] == "sasrec" else None
        lines.append(f"| {run['dataset']} | {run['label']} | {run['epochs'] or '–'} | {run['seconds_per_epoch'] or '–'} | "
                     f"{run['train'].get('best_epoch') or '–'} | {run['train'].get('stopped') or '–'} | {run['wall_seconds']} | "
                     + (f"{target['recall@10']:.4f} / {target['ndcg@10']:.4f}" if target else "–") + " |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    (args.out.with_suffix(".md")).write_text("\n".join(lines) + "\n")
    write_json(args.out.with_suffix(".json"), [{k: v for k, v in r.items() if k != "config"} | {"config": r["config"]}
                                               for r in runs])
    print("\n".join(lines))


if __name__ == "__main__":
    main()
