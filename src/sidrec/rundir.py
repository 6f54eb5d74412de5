"""Writing a run directory safely: one writer at a time, and `--resume` only with the same configuration.

Two `sidrec run` into one `--out` used to both proceed and leave a mix of two models behind; a
`--resume` with a changed option used to overwrite the finished run's config.yaml before failing.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Any, Iterator

import yaml

LOCK = ".lock"  # a dot-file: never part of the manifest
# Keys that change how a run is shown, not what it computes: a resume may change them.
PRESENTATION_KEYS = {"train.progress", "train.num_threads", "train.log_dir", "collaborative.train.log_dir"}


class RunDirError(RuntimeError):
    """A run directory cannot be written as asked; the message says why and what to do."""


@contextlib.contextmanager
def exclusive(run_dir: str | Path) -> Iterator[Path]:
    """Hold RUN_DIR's writer lock (released when the block ends or the process dies)."""
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except (NotADirectoryError, FileExistsError) as exc:
        raise RunDirError(f"{run_dir}: cannot create the run directory ({exc.strerror})") from exc
    fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
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
    """Refuse to resume RUN_DIR under a configuration other than the one it was started with."""
    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        return
    differ = [k for k in changed_keys(yaml.safe_load(path.read_text()) or {}, config) if k not in PRESENTATION_KEYS]
    if differ:
        raise RunDirError(f"{run_dir}: --resume with a configuration that differs from {path.name} in "
                          f"{', '.join(differ)}; drop --resume to start over, or use another --out")
