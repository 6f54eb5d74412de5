"""The run directory: its layout (every path inside a run is spelled here and nowhere else), one writer at
a time, and `--resume` only with the same configuration.

    RUN_DIR/config.yaml      the resolved configuration
    RUN_DIR/dataset.json     dataset statistics, content digest and where its cache lives
    RUN_DIR/dataset/         the dataset snapshot the run was trained on (evaluate, recommend, serve read it)
    RUN_DIR/collaborative/   collaborative model/, train.json, item_embeddings.safetensors   (if configured)
    RUN_DIR/embed/           embeddings.safetensors                                          (if configured)
    RUN_DIR/tokenize/        tokenizer/, sids.safetensors, sids_report.json, plots           (if configured)
    RUN_DIR/model/           model.json + model.safetensors (+ added_items.parquet after `add-items`)
    RUN_DIR/checkpoints/     trainer state for --resume
    RUN_DIR/train.json       per-epoch losses and validation metrics
    RUN_DIR/metrics.json     {"valid": .., "test": .., "seconds": .., "config": ..}
    RUN_DIR/eval_<split>.json  what `sidrec evaluate` measured
    RUN_DIR/report.md        the results table
    RUN_DIR/manifest.json    sha256 and size of every artifact, package version

Two `sidrec run` into one `--out` used to both proceed and leave a mix of two models behind; a
`--resume` with a changed option used to overwrite the finished run's config.yaml before failing.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import yaml
from pydantic import ValidationError

from sidrec.config import RunConfig
from sidrec.tokenizers.api import REPORT_FILE, SIDS_FILE, TOKENIZER_DIR

LOCK = ".lock"  # a dot-file: never part of the manifest
MANIFEST = "manifest.json"
# A stage folder holds the same files in the stage cache and in a run.
STAGE_RECORD = "stage.json"
STAGE_MODEL, STAGE_TRAIN_LOG = "model", "train.json"
COLLABORATIVE_EMBEDDINGS = "item_embeddings.safetensors"
EMBEDDINGS = "embeddings.safetensors"
ADDED_ITEMS = "added_items.parquet"
# Keys that change how a run is shown, not what it computes: a resume may change them.
PRESENTATION_KEYS = {"train.progress", "train.num_threads", "train.log_dir", "collaborative.train.log_dir"}


class RunDirError(RuntimeError):
    """A run directory cannot be written as asked; the message says why and what to do."""


@dataclass(frozen=True)
class RunLayout:
    """Where each artifact of the run rooted at `root` lives."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    def stage(self, name: str) -> Path:
        """The folder of stage `name` (collaborative, embed, tokenize)."""
        return self.root / name

    def evaluation(self, split: str) -> Path:
        return self.root / f"eval_{split}.json"

    config = property(lambda self: self.root / "config.yaml")
    dataset_record = property(lambda self: self.root / "dataset.json")
    snapshot = property(lambda self: self.root / "dataset")
    model = property(lambda self: self.root / "model")
    added_items = property(lambda self: self.model / ADDED_ITEMS)
    checkpoints = property(lambda self: self.root / "checkpoints")
    train_log = property(lambda self: self.root / "train.json")
    metrics = property(lambda self: self.root / "metrics.json")
    report = property(lambda self: self.root / "report.md")
    manifest = property(lambda self: self.root / MANIFEST)
    lock = property(lambda self: self.root / LOCK)
    collaborative_embeddings = property(lambda self: self.stage("collaborative") / COLLABORATIVE_EMBEDDINGS)
    embeddings = property(lambda self: self.stage("embed") / EMBEDDINGS)
    tokenizer = property(lambda self: self.stage("tokenize") / TOKENIZER_DIR)
    sids = property(lambda self: self.stage("tokenize") / SIDS_FILE)
    sids_report = property(lambda self: self.stage("tokenize") / REPORT_FILE)


@contextlib.contextmanager
def exclusive(run_dir: str | Path) -> Iterator[Path]:
    """Hold RUN_DIR's writer lock (released when the block ends or the process dies)."""
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except (NotADirectoryError, FileExistsError) as exc:
        raise RunDirError(f"{run_dir}: cannot create the run directory ({exc.strerror})") from exc
    fd = os.open(RunLayout(run_dir).lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunDirError(f"{run_dir}: another sidrec process is writing this run directory; "
                          "wait for it or choose another --out") from None
    try:
        yield run_dir
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested configuration dictionaries."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [k for key in keys for k in changed_keys(old.get(key), new.get(key), f"{prefix}{key}.")]
    return [] if old == new else [prefix.rstrip(".")]


def check_resume(run_dir: str | Path, config: dict) -> None:
    """Refuse to resume RUN_DIR under a configuration other than the one it was started with.

    The saved configuration is read through today's `RunConfig` first, so an option added since the run
    started takes its default (defaults keep the old behaviour) instead of counting as a change.
    """
    path = RunLayout(run_dir).config
    if not path.exists():
        return
    saved = yaml.safe_load(path.read_text()) or {}
    try:
        saved = RunConfig.model_validate(saved).model_dump(mode="json")
    except ValidationError:
        pass  # compared as written: the keys today's code rejects show up as differences
    differ = [k for k in changed_keys(saved, config) if k not in PRESENTATION_KEYS]
    if differ:
        raise RunDirError(f"{run_dir}: --resume with a configuration that differs from {path.name} in "
                          f"{', '.join(differ)}; drop --resume to start over, or use another --out")
