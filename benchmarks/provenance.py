"""Where a benchmark's figures came from (the CPU model, the commit with `+dirty` for uncommitted edits) and where
they go (a marked block of the README)."""

from __future__ import annotations

import datetime
import platform
import subprocess
from pathlib import Path

import torch

from sidrec.io import atomic_path

ROOT = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (platform.processor() where there is none)."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), platform.processor())


def commit(*paths: str, root: Path = ROOT) -> str:
    """Short HEAD of the checkout `root`, plus `+dirty` when tracked files (under `paths`, default all) differ from it."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", *paths], cwd=root,
                            capture_output=True, text=True).stdout.strip()
    return head + ("+dirty" if status else "")


def run_facts(*paths: str) -> dict:
    """What every benchmark table states about its run: date, CPU model, commit (dirty-checked under `paths`), torch,
    Python and torch's thread count."""
    return {"date": datetime.date.today().isoformat(), "cpu": cpu_model(), "commit": commit(*paths),
            "torch": torch.__version__, "python": platform.python_version(), "threads": torch.get_num_threads()}


def replace_marked(path: Path, marker: str, text: str) -> bool:
    """Replace what lies between `<!-- marker -->` and `<!-- /marker -->` in `path` by `text`; False without them."""
    start, end = f"<!-- {marker} -->", f"<!-- /{marker} -->"
    content = path.read_text()
    if start not in content or end not in content:
        return False
    head, rest = content.split(start, 1)
    with atomic_path(path) as tmp:
        tmp.write_text(f"{head}{start}\n{text}\n{end}{rest.split(end, 1)[1]}")
    return True
