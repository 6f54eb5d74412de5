"""Runs the stages of a preset, each writing its artifact under one run directory.

    RUN_DIR/config.yaml      the resolved configuration
    RUN_DIR/dataset.json     dataset statistics, content digest and where its cache lives
    RUN_DIR/dataset/         the dataset snapshot the run was trained on (evaluate, recommend, serve read it)
    RUN_DIR/collaborative/   collaborative model + item_embeddings.safetensors   (if configured)
    RUN_DIR/embed/           embeddings.safetensors                              (if configured)
    RUN_DIR/tokenize/        tokenizer/, sids.safetensors, sids_report.json, plots (if configured)
    RUN_DIR/model/           model.json + model.safetensors
    RUN_DIR/checkpoints/     trainer state for --resume
    RUN_DIR/train.json       per-epoch losses and validation metrics
    RUN_DIR/metrics.json     {"valid": .., "test": .., "seconds": .., "config": ..}
    RUN_DIR/report.md        the results table
    RUN_DIR/manifest.json    sha256 and size of every artifact, package version

Stages before the model are keyed by a fingerprint of their configuration, the *content* of their
inputs (the dataset's digest, chained through every stage) and the code (package version and the
stage's revision), and kept in `cache_dir`: a second run that only changes the generator reuses
embeddings and semantic IDs; an edited title, interaction or a fixed stage never serves a stale one.
Validation picks the model; the test split is read once, at the end.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch
import yaml

from sidrec import __version__, rundir
from sidrec.config import ConfigError, RunConfig
from sidrec.data import DataFormatError, Dataset, load_dataset
from sidrec.evaluation import evaluate
from sidrec.extras import require
from sidrec.evaluation.report import results_table
from sidrec.features import ItemEmbeddings, build_encoder, encoder_requirements
from sidrec.io import ArtifactError, atomic_path, read_json, write_json
from sidrec.manifest import write_manifest
from sidrec.models import Recommender, build_model
from sidrec.models.base import model_options
from sidrec.tokenizers import SemanticIDs, build_tokenizer
from sidrec.tokenizers.api import SIDS_FILE, tokenize
from sidrec.tokenizers.collisions import RESOLUTIONS
from sidrec.training import Trainer
from sidrec.training.tensorboard_log import summary_writer_class
from sidrec.training.distributed import rank_and_world

log = logging.getLogger(__name__)
# Bump a stage's revision when a change to its code changes what it produces: its cached artifacts go stale.
STAGE_REVISIONS = {"data": 1, "collaborative": 1, "embed": 1, "tokenize": 3}  # 3: Kumaraswamy MLE on flat dims
SNAPSHOT = "dataset"


def save_config(config: RunConfig, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))


def prepare(config: RunConfig, run_dir: Path | None = None, resume: bool = False) -> tuple[Dataset, str]:
    """The dataset and its content digest, snapshotted into RUN_DIR; a resumed run keeps the snapshot it started on."""
    if resume and run_dir is not None and (run_dir / SNAPSHOT / "manifest.json").exists():
        dataset = Dataset.load(run_dir / SNAPSHOT)
        return dataset, dataset.digest()
    dataset = load_dataset(config.data)
    digest = dataset.digest()
    if run_dir is not None and rank_and_world()[0] == 0:
        if not ((run_dir / SNAPSHOT / "manifest.json").exists() and (run_dir / "dataset.json").exists()
                and read_json(run_dir / "dataset.json").get("digest") == digest):
            dataset.save(run_dir / SNAPSHOT)
        write_json(run_dir / "dataset.json", {"name": dataset.name, "stats": dataset.stats(), "digest": digest,
                                              **dataset.info})
    return dataset, digest


@dataclass
class Artifacts:
    """What the stages before the model produced, and fingerprints of how."""

    dataset: Dataset
    fingerprint: str
    collaborative: ItemEmbeddings | None = None
    embeddings: ItemEmbeddings | None = None
    sids: SemanticIDs | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    resume: bool = False  # a resumed run keeps the stage folders it was started with


def fingerprint(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cached_stage(name: str, key: str, config: RunConfig, run_dir: Path, build: Callable[[Path], None],
                 resume: bool = False) -> Path:
    """Build a stage's folder once per fingerprint (atomically, in the cache); rank 0 copies it into the run.

    A resumed run reads the folder already in RUN_DIR: its checkpoint was trained on those semantic IDs,
    and a stage rebuilt under newer code (another key) could hand it different ones.
    """
    target = run_dir / name
    if resume and (target / "stage.json").exists():
        log.info("stage %s: resuming with the run's own %s", name, target)
        return target
    cache = Path(config.cache_dir) / f"{name}-{key}"
    if not (cache / "stage.json").exists():
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=cache.parent))
        try:
            start = time.perf_counter()
            build(tmp)
            write_json(tmp / "stage.json", {"stage": name, "fingerprint": key,
                                            "seconds": round(time.perf_counter() - start, 3)})
            if cache.exists():
                shutil.rmtree(cache)
            os.replace(tmp, cache)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    else:
        log.info("stage %s: reusing %s", name, cache)
    if rank_and_world()[0] == 0 and not (target.exists() and read_json(target / "stage.json") == read_json(cache / "stage.json")):
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(cache, target)
    return cache


def fit_model(model: Recommender, dataset: Dataset, train_config, eval_config, out_dir: Path | None,
              resume: bool = False) -> dict:
    """Fit popularity-style models in closed form, the rest with the trainer under early stopping."""
    start = time.perf_counter()
    if hasattr(model, "fit_counts"):
        model.fit_counts(dataset.item_popularity())
        return {"train_seconds": round(time.perf_counter() - start, 3)}
    if int((dataset.train_lengths() - 1).clamp(min=0).sum()) == 0:
        raise DataFormatError(f"dataset {dataset.name!r} ({dataset.info.get('source', 'no source')}) has no training "
                              f"transitions: no user's training part (all but the last 2 items) holds 2 items, so "
                              f"{type(model).__name__} has no next item to learn; only `popularity` fits such data")
    trainer = Trainer(model, train_config, out_dir, select_metric=eval_config.select_metric)
    return trainer.fit(model.make_batches(dataset, train_config.batch_size),
                       lambda m: evaluate(m, dataset, "valid", eval_config, sample=eval_config.select_users),
                       resume=resume)


def collaborative_stage(config: RunConfig, art: Artifacts, run_dir: Path) -> None:
    """Train the collaborative model on the training split; keep its item embeddings."""
    section = config.collaborative
    key = fingerprint("collaborative", STAGE_REVISIONS["collaborative"], art.fingerprint, section.model_dump(mode="json", exclude={"train": {"log_dir"}}))

    def build(folder: Path) -> None:
        torch.manual_seed(section.train.seed)
        model = build_model(section.model.name, section.model.options(), art.dataset.n_items)
        summary = fit_model(model, art.dataset, section.train, config.eval, None)
        model.save(folder / "model")
        write_json(folder / "train.json", summary)
        ItemEmbeddings(model.item_embeddings().detach(), f"collaborative:{section.model.name}",
                       {f"best_valid_{config.eval.select_metric}": summary.get(f"best_valid_{config.eval.select_metric}")}).save(folder / "item_embeddings.safetensors")

    folder = cached_stage("collaborative", key, config, run_dir, build, art.resume)
    art.collaborative = ItemEmbeddings.load(folder / "item_embeddings.safetensors")
    art.fingerprint = key


def embed_stage(config: RunConfig, art: Artifacts, run_dir: Path) -> None:
    key = fingerprint("embed", STAGE_REVISIONS["embed"], art.fingerprint, config.embed.model_dump(mode="json"))

    def build(folder: Path) -> None:
        encoder = build_encoder(config.embed.name, **config.embed.options())
        encoder.encode(art.dataset.items, collaborative=art.collaborative).save(folder / "embeddings.safetensors")

    folder = cached_stage("embed", key, config, run_dir, build, art.resume)
    art.embeddings = ItemEmbeddings.load(folder / "embeddings.safetensors")
    art.fingerprint = key


def tokenize_stage(config: RunConfig, art: Artifacts, run_dir: Path) -> None:
    if art.embeddings is None:
        raise ValueError("a `tokenize` section needs an `embed` section to tokenize")
    options = config.tokenize.options()
    resolution = options.pop("resolution", "dedup")
    # Keyed by the tokenizer's resolved options, defaults included: a changed default (NU-RQ-VAE's input
    # standardisation) is a different tokenizer, never served from a stage cached before the change.
    resolved = build_tokenizer(config.tokenize.name, **options).options
    key = fingerprint("tokenize", STAGE_REVISIONS["tokenize"], art.fingerprint, config.tokenize.name, resolution, resolved)

    def build(folder: Path) -> None:
        tokenize(art.embeddings, config.tokenize.name, resolution=resolution, options=options, out_dir=folder)

    folder = cached_stage("tokenize", key, config, run_dir, build, art.resume)
    art.sids = SemanticIDs.load(folder / SIDS_FILE)
    art.fingerprint = key


def build_artifacts(config: RunConfig, run_dir: Path, until: str | None = None, resume: bool = False) -> Artifacts:
    """Every stage before the model (or up to `until`), each reused from cache when its inputs are unchanged."""
    dataset, digest = prepare(config, run_dir, resume)
    art = Artifacts(dataset, fingerprint("data", STAGE_REVISIONS["data"], __version__,
                                         config.data.model_dump(exclude={"cache_dir", "data_dir"}), digest),
                    resume=resume)
    for name, needed, stage in (("collaborative", config.collaborative, collaborative_stage),
                                ("embed", config.embed, embed_stage), ("tokenize", config.tokenize, tokenize_stage)):
        if needed is not None:
            start = time.perf_counter()
            stage(config, art, run_dir)
            art.seconds[name] = round(time.perf_counter() - start, 3)
        if name == until:
            break
    return art


def train(config: RunConfig, art: Artifacts, run_dir: Path, resume: bool = False) -> tuple[Recommender, dict]:
    """Build the configured model on the upstream artifacts and fit it; validation NDCG@10 selects the epoch."""
    torch.manual_seed(config.train.seed)
    model = build_model(config.model.name, config.model.options(), art.dataset.n_items,
                        sids=art.sids, embeddings=art.embeddings)
    summary = fit_model(model, art.dataset, config.train, config.eval, run_dir, resume)
    if rank_and_world()[0] == 0:
        model.save(run_dir / "model")
        write_json(run_dir / "train.json", summary)
    return model, summary


def validate(config: RunConfig) -> None:
    """Every stage's options, checked before anything is read, trained or written (ConfigError)."""
    needs: list[tuple[str, str, str]] = []  # optional packages the configured stages import
    checks = [("model", lambda: model_options(config.model.name, config.model.options()))]
    if config.collaborative is not None:
        spec = config.collaborative.model
        checks.append(("collaborative.model", lambda: model_options(spec.name, spec.options(), "collaborative.model")))
    if config.embed is not None:
        checks.append(("embed", lambda: needs.extend(encoder_requirements(build_encoder(config.embed.name,
                                                                                        **config.embed.options())))))
    if config.tokenize is not None:
        options = config.tokenize.options()
        resolution = options.pop("resolution", "dedup")
        checks.append(("tokenize", lambda: needs.extend(build_tokenizer(config.tokenize.name, **options).requirements())))
        if resolution not in RESOLUTIONS:
            raise ConfigError(f"tokenize.resolution: {resolution!r} is not one of {list(RESOLUTIONS)}")
    if config.train.log_dir or (config.collaborative is not None and config.collaborative.train.log_dir):
        checks.append(("train.log_dir", summary_writer_class))  # before the slow stages, not when training starts
    for section, check in checks:
        try:
            check()
        except (ValueError, TypeError, KeyError) as exc:
            message = str(exc.args[0]) if exc.args else str(exc)
            raise ConfigError(message if message.startswith(section) else f"{section}: {message}") from exc
    for need in needs:  # a missing extra stops here, before the run directory is touched
        require(*need)


@contextlib.contextmanager
def writing(config: RunConfig, run_dir: Path, resume: bool = False) -> Iterator[None]:
    """Validate, then hold RUN_DIR's writer lock while the run writes it; a resume must keep the config."""
    validate(config)
    if rank_and_world()[0] != 0:
        yield
        return
    with rundir.exclusive(run_dir):
        if resume:
            rundir.check_resume(run_dir, config.model_dump(mode="json"))
        save_config(config, run_dir / "config.yaml")
        yield


def run(config: RunConfig, run_dir: str | Path, resume: bool = False) -> dict:
    """All stages of one preset; returns (and writes) the metrics."""
    run_dir = Path(run_dir)
    with writing(config, run_dir, resume):
        return _run(config, run_dir, resume)


def _run(config: RunConfig, run_dir: Path, resume: bool) -> dict:
    start = time.perf_counter()
    rank = rank_and_world()[0]
    art = build_artifacts(config, run_dir, resume=resume)
    model, summary = train(config, art, run_dir, resume=resume)
    metrics = {
        "model": config.model.name,
        "dataset": art.dataset.name,
        "valid": evaluate(model, art.dataset, "valid", config.eval),
        "test": evaluate(model, art.dataset, "test", config.eval),
        "train": {k: v for k, v in summary.items() if k != "history"},
        "stage_seconds": art.seconds,
        "seconds": round(time.perf_counter() - start, 3),
        "seed": config.train.seed,
        "config": config.model_dump(mode="json"),
    }
    if rank == 0:
        write_json(run_dir / "metrics.json", metrics)
        with atomic_path(run_dir / "report.md") as tmp:
            tmp.write_text(results_table([metrics]) + "\n")
        write_manifest(run_dir)
    return metrics


def load_run(run_dir: str | Path) -> tuple[RunConfig, Dataset, Recommender]:
    """Reopen a finished run: its config, dataset and trained model."""
    run_dir = Path(run_dir)
    config_path = run_dir / "config.yaml"
    if not config_path.exists():
        raise FileNotFoundError(f"{config_path}: not a run directory (no config.yaml)")
    config = RunConfig.model_validate(yaml.safe_load(config_path.read_text()))
    return config, run_dataset(run_dir, config), Recommender.load(run_dir / "model")


def run_dataset(run_dir: Path, config: RunConfig) -> Dataset:
    """The dataset RUN_DIR was trained on: its snapshot, never the live source file (which may have changed).

    Runs written before snapshots existed load the source and must match the recorded digest (or, older
    still, the recorded counts); a mismatch is an error, not a silently different catalogue.
    """
    if (run_dir / SNAPSHOT / "manifest.json").exists():
        return Dataset.load(run_dir / SNAPSHOT)
    dataset = load_dataset(config.data)
    recorded = read_json(run_dir / "dataset.json") if (run_dir / "dataset.json").exists() else {}
    if "digest" in recorded and recorded["digest"] != dataset.digest():
        raise ArtifactError(f"{run_dir / 'dataset.json'}: the dataset source {config.data.name!r} has changed "
                            "since this run was trained (content digest differs) and the run has no snapshot")
    if "stats" in recorded and recorded["stats"] != dataset.stats():
        raise ArtifactError(f"{run_dir / 'dataset.json'}: the dataset now loaded ({dataset.stats()}) is not "
                            f"the one this run was trained on ({recorded['stats']})")
    return dataset


def read_metrics(run_dir: str | Path) -> dict:
    return read_json(Path(run_dir) / "metrics.json")
