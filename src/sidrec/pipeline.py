"""Runs the stages of a preset, each writing its artifact under one run directory.

    RUN_DIR/config.yaml      the resolved configuration
    RUN_DIR/dataset.json     dataset statistics and where its cache lives
    RUN_DIR/model/           model.json + model.safetensors
    RUN_DIR/checkpoints/     trainer state for --resume
    RUN_DIR/train.json       per-epoch losses and validation metrics
    RUN_DIR/metrics.json     {"valid": .., "test": .., "seconds": .., "config": ..}
    RUN_DIR/report.md        the results table

Validation picks the model; the test split is read once, at the end.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
import yaml

from sidrec.config import RunConfig
from sidrec.data import Dataset, load_dataset
from sidrec.evaluation import evaluate
from sidrec.evaluation.report import results_table
from sidrec.io import atomic_path, read_json, write_json
from sidrec.models import Recommender, build_model
from sidrec.training import Trainer
from sidrec.training.distributed import rank_and_world

log = logging.getLogger(__name__)


def save_config(config: RunConfig, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))


def prepare(config: RunConfig, run_dir: Path | None = None) -> Dataset:
    dataset = load_dataset(config.data)
    if run_dir is not None:
        write_json(run_dir / "dataset.json", {"name": dataset.name, "stats": dataset.stats(), **dataset.info})
    return dataset


def train(config: RunConfig, dataset: Dataset, run_dir: Path, resume: bool = False) -> tuple[Recommender, dict]:
    """Build the configured model and fit it; validation NDCG@10 selects the epoch."""
    torch.manual_seed(config.train.seed)
    model = build_model(config.model.name, config.model.options(), dataset.n_items)
    start = time.perf_counter()
    if hasattr(model, "fit_counts"):
        model.fit_counts(dataset.item_popularity())
        summary = {"train_seconds": round(time.perf_counter() - start, 3)}
    else:
        trainer = Trainer(model, config.train, run_dir)
        summary = trainer.fit(model.make_batches(dataset, config.train.batch_size),
                              lambda m: evaluate(m, dataset, "valid", config.eval), resume=resume)
    if rank_and_world()[0] == 0:
        model.save(run_dir / "model")
        write_json(run_dir / "train.json", summary)
    return model, summary


def run(config: RunConfig, run_dir: str | Path, resume: bool = False) -> dict:
    """All stages of one preset; returns (and writes) the metrics."""
    run_dir = Path(run_dir)
    start = time.perf_counter()
    rank = rank_and_world()[0]
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, run_dir / "config.yaml")
    dataset = prepare(config, run_dir if rank == 0 else None)
    model, summary = train(config, dataset, run_dir, resume=resume)
    metrics = {
        "model": config.model.name,
        "dataset": dataset.name,
        "valid": evaluate(model, dataset, "valid", config.eval),
        "test": evaluate(model, dataset, "test", config.eval),
        "train": {k: v for k, v in summary.items() if k != "history"},
        "seconds": round(time.perf_counter() - start, 3),
        "seed": config.train.seed,
        "config": config.model_dump(mode="json"),
    }
    if rank == 0:
        write_json(run_dir / "metrics.json", metrics)
        with atomic_path(run_dir / "report.md") as tmp:
            tmp.write_text(results_table([metrics]) + "\n")
    return metrics


def load_run(run_dir: str | Path) -> tuple[RunConfig, Dataset, Recommender]:
    """Reopen a finished run: its config, dataset and trained model."""
    run_dir = Path(run_dir)
    config_path = run_dir / "config.yaml"
    if not config_path.exists():
        raise FileNotFoundError(f"{config_path}: not a run directory (no config.yaml)")
    config = RunConfig.model_validate(yaml.safe_load(config_path.read_text()))
    return config, load_dataset(config.data), Recommender.load(run_dir / "model")


def read_metrics(run_dir: str | Path) -> dict:
    return read_json(Path(run_dir) / "metrics.json")
