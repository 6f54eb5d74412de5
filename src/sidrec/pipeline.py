"""Runs the stages of a preset, each writing its artifact under one run directory (its layout: `sidrec.rundir`).

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
from typing import Any, Callable, Iterator

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
from sidrec.rundir import (COLLABORATIVE_EMBEDDINGS, EMBEDDINGS, STAGE_MODEL, STAGE_RECORD, STAGE_TRAIN_LOG,
                           RunLayout)
from sidrec.semantic_ids import SemanticIDs
from sidrec.tokenizers import build_tokenizer
from sidrec.tokenizers.api import SIDS_FILE, tokenize
from sidrec.tokenizers.collisions import RESOLUTIONS
from sidrec.training import Trainer
from sidrec.training.tensorboard_log import summary_writer_class
from sidrec.training.distributed import leave_process_group, rank_and_world

log = logging.getLogger(__name__)
# Bump a stage's revision when a change to its code changes what it produces: its cached artifacts go stale.
STAGE_REVISIONS = {"data": 1, "collaborative": 1, "embed": 1, "tokenize": 3}  # 3: Kumaraswamy MLE on flat dims


def save_config(config: RunConfig, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))


def prepare(config: RunConfig, run_dir: Path | None = None, resume: bool = False) -> tuple[Dataset, str]:
    """The dataset and its content digest, snapshotted into RUN_DIR; a resumed run keeps the snapshot it started on."""
    layout = RunLayout(run_dir) if run_dir is not None else None
    if resume and layout is not None and Dataset.exists(layout.snapshot):
        dataset = Dataset.load(layout.snapshot)
        return dataset, dataset.digest()
    dataset = load_dataset(config.data)
    digest = dataset.digest()
    if layout is not None and rank_and_world()[0] == 0:
        if not (Dataset.exists(layout.snapshot) and layout.dataset_record.exists()
                and read_json(layout.dataset_record).get("digest") == digest):
            dataset.save(layout.snapshot)
        write_json(layout.dataset_record, {"name": dataset.name, "stats": dataset.stats(), "digest": digest,
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
    target = RunLayout(run_dir).stage(name)
    if resume and (target / STAGE_RECORD).exists():
        log.info("stage %s: resuming with the run's own %s", name, target)
        return target
    cache = Path(config.cache_dir) / f"{name}-{key}"
    if not (cache / STAGE_RECORD).exists():
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=cache.parent))
        try:
            start = time.perf_counter()
            build(tmp)
            write_json(tmp / STAGE_RECORD, {"stage": name, "fingerprint": key,
                                            "seconds": round(time.perf_counter() - start, 3)})
            if cache.exists():
                shutil.rmtree(cache)
            os.replace(tmp, cache)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    else:
        log.info("stage %s: reusing %s", name, cache)
    if rank_and_world()[0] == 0 and not (target.exists() and read_json(target / STAGE_RECORD) == read_json(cache / STAGE_RECORD)):
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
    trainer = Trainer(model, train_config, RunLayout(out_dir).checkpoints if out_dir else None, select_metric=eval_config.select_metric)
    return trainer.fit(model.make_batches(dataset, train_config.batch_size),
                       lambda m: evaluate(m, dataset, "valid", eval_config, sample=eval_config.select_users),
                       resume=resume)


@dataclass(frozen=True)
class Stage:
    """One cached step before the model.

    `section` picks its part of the run config (None: the run has no such stage); `needs` names the artifacts
    of earlier stages it reads; `options` is what, besides those inputs' content, its output depends on;
    `build` fills a folder; `load` reads the artifact back from one. Its cache key chains the fingerprint of
    every earlier stage (the dataset's content first), its options, and its code revision (`STAGE_REVISIONS`).
    """

    name: str
    artifact: str  # the `Artifacts` field it fills
    section: Callable[[RunConfig], Any]
    options: Callable[[RunConfig], Any]
    build: Callable[[RunConfig, Artifacts, Path], None]
    load: Callable[[Path], Any]
    needs: tuple[str, ...] = ()

    def key(self, config: RunConfig, art: Artifacts) -> str:
        return fingerprint(self.name, STAGE_REVISIONS[self.name], art.fingerprint, self.options(config))

    def run(self, config: RunConfig, art: Artifacts, run_dir: Path) -> None:
        """Fill `art` with this stage's artifact: from the cache when its key is there, else built."""
        missing = [need for need in self.needs if getattr(art, need) is None]
        if missing:
            raise ValueError(f"a `{self.name}` section needs {' and '.join(f'the `{STAGE_OF[m]}` section' for m in missing)} "
                             f"to {self.name}")
        key = self.key(config, art)
        folder = cached_stage(self.name, key, config, run_dir, lambda out: self.build(config, art, out), art.resume)
        setattr(art, self.artifact, self.load(folder))
        art.fingerprint = key


def _build_collaborative(config: RunConfig, art: Artifacts, folder: Path) -> None:
    """Train the collaborative model on the training split; keep its item embeddings."""
    section = config.collaborative
    torch.manual_seed(section.train.seed)
    model = build_model(section.model.name, section.model.options(), art.dataset.n_items)
    summary = fit_model(model, art.dataset, section.train, config.eval, None)
    model.save(folder / STAGE_MODEL)
    write_json(folder / STAGE_TRAIN_LOG, summary)
    metric = f"best_valid_{config.eval.select_metric}"
    ItemEmbeddings(model.item_embeddings().detach(), f"collaborative:{section.model.name}",
                   {metric: summary.get(metric)}).save(folder / COLLABORATIVE_EMBEDDINGS)


def _build_embeddings(config: RunConfig, art: Artifacts, folder: Path) -> None:
    encoder = build_encoder(config.embed.name, **config.embed.options())
    encoder.encode(art.dataset.items, collaborative=art.collaborative).save(folder / EMBEDDINGS)


def _tokenize_options(config: RunConfig) -> tuple[str, dict]:
    options = config.tokenize.options()
    return options.pop("resolution", "dedup"), options


def _tokenize_key(config: RunConfig) -> list:
    """The tokenizer's resolved options, defaults included: a changed default (NU-RQ-VAE's input
    standardisation) is a different tokenizer, never served from a stage cached before the change."""
    resolution, options = _tokenize_options(config)
    return [config.tokenize.name, resolution, build_tokenizer(config.tokenize.name, **options).options]


def _build_sids(config: RunConfig, art: Artifacts, folder: Path) -> None:
    resolution, options = _tokenize_options(config)
    tokenize(art.embeddings, config.tokenize.name, resolution=resolution, options=options, out_dir=folder)


STAGES = (
    Stage("collaborative", "collaborative", lambda c: c.collaborative,
          lambda c: c.collaborative.model_dump(mode="json", exclude={"train": {"log_dir"}}), _build_collaborative,
          lambda folder: ItemEmbeddings.load(folder / COLLABORATIVE_EMBEDDINGS)),
    Stage("embed", "embeddings", lambda c: c.embed, lambda c: c.embed.model_dump(mode="json"), _build_embeddings,
          lambda folder: ItemEmbeddings.load(folder / EMBEDDINGS)),
    Stage("tokenize", "sids", lambda c: c.tokenize, _tokenize_key, _build_sids,
          lambda folder: SemanticIDs.load(folder / SIDS_FILE), needs=("embeddings",)),
)
STAGE_OF = {stage.artifact: stage.name for stage in STAGES}


def build_artifacts(config: RunConfig, run_dir: Path, until: str | None = None, resume: bool = False) -> Artifacts:
    """Every stage before the model (or up to `until`), each reused from cache when its inputs are unchanged."""
    dataset, digest = prepare(config, run_dir, resume)
    art = Artifacts(dataset, fingerprint("data", STAGE_REVISIONS["data"], __version__,
                                         config.data.model_dump(exclude={"cache_dir", "data_dir"}), digest),
                    resume=resume)
    for stage in STAGES:
        if stage.section(config) is not None:
            start = time.perf_counter()
            stage.run(config, art, run_dir)
            art.seconds[stage.name] = round(time.perf_counter() - start, 3)
        if stage.name == until:
            break
    return art


def train(config: RunConfig, art: Artifacts, run_dir: Path, resume: bool = False) -> tuple[Recommender, dict]:
    """Build the configured model on the upstream artifacts and fit it; validation NDCG@10 selects the epoch."""
    torch.manual_seed(config.train.seed)
    model = build_model(config.model.name, config.model.options(), art.dataset.n_items,
                        sids=art.sids, embeddings=art.embeddings)
    summary = fit_model(model, art.dataset, config.train, config.eval, run_dir, resume)
    if rank_and_world()[0] == 0:
        model.save(RunLayout(run_dir).model)
        write_json(RunLayout(run_dir).train_log, summary)
    return model, summary


def validate(config: RunConfig) -> None:
    """Every stage's options, checked before anything is read, trained or written (ConfigError).

    Each check builds its stage's object (or validates its options) and returns the optional packages that
    object imports; a missing one stops here too, before the run directory is touched.
    """
    def model_check(spec, section: str) -> Callable[[], list]:
        return lambda: model_options(spec.name, spec.options(), section) and []

    checks: list[tuple[str, Callable[[], list]]] = [("model", model_check(config.model, "model"))]
    if config.collaborative is not None:
        checks.append(("collaborative.model", model_check(config.collaborative.model, "collaborative.model")))
    if config.embed is not None:
        checks.append(("embed", lambda: encoder_requirements(build_encoder(config.embed.name, **config.embed.options()))))
    if config.tokenize is not None:
        options = config.tokenize.options()
        resolution = options.pop("resolution", "dedup")
        checks.append(("tokenize", lambda: build_tokenizer(config.tokenize.name, **options).requirements()))
        if resolution not in RESOLUTIONS:
            raise ConfigError(f"tokenize.resolution: {resolution!r} is not one of {list(RESOLUTIONS)}")
    if config.train.log_dir or (config.collaborative is not None and config.collaborative.train.log_dir):
        checks.append(("train.log_dir", lambda: summary_writer_class() and []))  # before the slow stages
    needs: list[tuple[str, str, str]] = []
    for section, check in checks:
        try:
            needs.extend(check())
        except (ValueError, TypeError, KeyError) as exc:
            message = str(exc.args[0]) if exc.args else str(exc)
            raise ConfigError(message if message.startswith(section) else f"{section}: {message}") from exc
    for need in needs:
        require(*need)


@contextlib.contextmanager
def writing(config: RunConfig, run_dir: Path, resume: bool = False) -> Iterator[None]:
    """Validate, then hold RUN_DIR's writer lock while the run writes it (a resume must keep the
    config); when it is written, every rank leaves the process group together."""
    validate(config)
    if rank_and_world()[0] != 0:
        yield
    else:
        with rundir.exclusive(run_dir):
            if resume:
                rundir.check_resume(run_dir, config.model_dump(mode="json"))
            save_config(config, RunLayout(run_dir).config)
            yield
    leave_process_group()


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
        "diagnostics": model.diagnostics(art.dataset, config.eval.max_len),
        "stage_seconds": art.seconds,
        "seconds": round(time.perf_counter() - start, 3),
        "seed": config.train.seed,
        "config": config.model_dump(mode="json"),
    }
    if rank == 0:
        write_json(RunLayout(run_dir).metrics, metrics)
        with atomic_path(RunLayout(run_dir).report) as tmp:
            tmp.write_text(results_table([metrics]) + "\n")
        write_manifest(run_dir)
    return metrics


def load_run(run_dir: str | Path) -> tuple[RunConfig, Dataset, Recommender]:
    """Reopen a finished run: its config, dataset and trained model."""
    layout = RunLayout(run_dir)
    if not layout.config.exists():
        raise FileNotFoundError(f"{layout.config}: not a run directory (no {layout.config.name})")
    config = RunConfig.model_validate(yaml.safe_load(layout.config.read_text()))
    return config, run_dataset(layout.root, config), Recommender.load(layout.model)


def run_dataset(run_dir: Path, config: RunConfig) -> Dataset:
    """The dataset RUN_DIR was trained on: its snapshot, never the live source file (which may have changed).

    Runs written before snapshots existed load the source and must match the recorded digest (or, older
    still, the recorded counts); a mismatch is an error, not a silently different catalogue.
    """
    layout = RunLayout(run_dir)
    if Dataset.exists(layout.snapshot):
        return Dataset.load(layout.snapshot)
    dataset = load_dataset(config.data)
    recorded = read_json(layout.dataset_record) if layout.dataset_record.exists() else {}
    if "digest" in recorded and recorded["digest"] != dataset.digest():
        raise ArtifactError(f"{layout.dataset_record}: the dataset source {config.data.name!r} has changed "
                            "since this run was trained (content digest differs) and the run has no snapshot")
    if "stats" in recorded and recorded["stats"] != dataset.stats():
        raise ArtifactError(f"{layout.dataset_record}: the dataset now loaded ({dataset.stats()}) is not "
                            f"the one this run was trained on ({recorded['stats']})")
    return dataset


def read_metrics(run_dir: str | Path) -> dict:
    return read_json(RunLayout(run_dir).metrics)
