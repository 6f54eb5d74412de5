"""Run-directory manifest: sha256 and size of every artifact plus the package version.

A run directory is only trustworthy if every file is the one training wrote. `write_manifest`
records them once a run (or an `add-items`) is complete; `verify_run` re-hashes the listed files and
names the first one that is missing, truncated or altered, before anything is loaded from it.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path

import sidrec
from sidrec.io import ArtifactError, file_sha256, read_json, write_json
from sidrec.rundir import RunLayout

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


def _artifacts(run_dir: Path) -> list[Path]:
    """Every regular file under the run, except the manifest and in-flight temporaries (dot-files)."""
    return sorted(p for p in run_dir.rglob("*") if p.is_file() and p != RunLayout(run_dir).manifest
                  and not any(part.startswith(".") for part in p.relative_to(run_dir).parts))


def write_manifest(run_dir: str | Path) -> dict:
    """Hash every artifact of `run_dir` into RUN_DIR/manifest.json (atomically); returns the manifest."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ArtifactError(f"{run_dir}: not a directory")
    files = {p.relative_to(run_dir).as_posix(): {"sha256": file_sha256(p), "bytes": p.stat().st_size}
             for p in _artifacts(run_dir)}
    manifest = {"format_version": FORMAT_VERSION, "package": "sidrec", "version": sidrec.__version__,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "files": files}
    write_json(RunLayout(run_dir).manifest, manifest)
    return manifest


def verify_run(run_dir: str | Path) -> dict:
    """Check every file listed in RUN_DIR/manifest.json; raise `ArtifactError` naming the first bad one.

    Files added after the manifest was written are not checked (e.g. a later `eval_valid.json`). A
    different package version only logs a warning: the artifact formats are versioned on their own.
    """
    run_dir = Path(run_dir)
    manifest = read_json(RunLayout(run_dir).manifest)
    if manifest.get("format_version") != FORMAT_VERSION or not isinstance(manifest.get("files"), dict):
        raise ArtifactError(f"{RunLayout(run_dir).manifest}: not a sidrec run manifest (format_version {FORMAT_VERSION})")
    if manifest.get("version") != sidrec.__version__:
        log.warning("%s was written by sidrec %s, this is %s", run_dir, manifest.get("version"), sidrec.__version__)
    for name, entry in manifest["files"].items():
        path = run_dir / name
        if not path.is_file():
            raise ArtifactError(f"{path}: listed in manifest.json but missing")
        size = path.stat().st_size
        if size != entry["bytes"]:
            state = "truncated" if size < entry["bytes"] else "larger than recorded"
            raise ArtifactError(f"{path}: {state} ({size} bytes, manifest.json records {entry['bytes']})")
        if file_sha256(path) != entry["sha256"]:
            raise ArtifactError(f"{path}: sha256 does not match manifest.json (file was modified)")
    return manifest
