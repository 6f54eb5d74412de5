"""What the report shows, read from run directories or a benchmark results file (no model loaded).

Both sources become `Entry` rows, so the comparison page treats `runs/*/` and
`benchmarks/results/reproduce.json` the same way.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sidrec.io import read_json
from sidrec.rundir import RunLayout


class ReportError(ValueError):
    """A run directory or results file the report cannot read (names the file)."""


@dataclass
class Entry:
    """One trained run: what it is (label, data, seed) and what it measured."""

    label: str
    data: str
    seed: int | None
    test: dict[str, Any]
    valid: dict[str, Any]
    curve: list[tuple[int, float, float]] = field(default_factory=list)  # (epoch, cumulative s, valid ndcg@10)
    train: dict[str, Any] = field(default_factory=dict)
    page: str | None = None  # relative link to the run's page, when the site has one


@dataclass
class RunSummary:
    path: Path
    name: str
    config: dict[str, Any]
    metrics: dict[str, Any]
    train: dict[str, Any]
    sids_report: dict[str, Any] | None

    @property
    def model(self) -> str:
        return self.config["model"]["name"]

    @property
    def is_card(self) -> bool:
        return (self.config.get("embed") or {}).get("name") == "card"

    def entry(self) -> Entry:
        history = self.train.get("history") or []
        return Entry(self.name, self.metrics.get("dataset", self.config["data"]["name"]), self.metrics.get("seed"),
                     self.metrics.get("test") or {}, self.metrics.get("valid") or {},
                     curve_of(history, select=(self.config.get("eval") or {}).get("select_metric", "ndcg@10")),
                     {k: v for k, v in self.train.items() if k != "history"})


def curve_of(history: list[dict], select: str = "ndcg@10") -> list[tuple[int, float, float]]:
    """(epoch, seconds of training + validation so far, validation metric) per validated epoch."""
    out, elapsed = [], 0.0
    for epoch in history:
        elapsed += float(epoch.get("seconds") or 0) + float((epoch.get("valid") or {}).get("seconds") or 0)
        value = (epoch.get("valid") or {}).get(select)
        if value is not None:
            out.append((int(epoch["epoch"]), round(elapsed, 1), float(value)))
    return out


def _json(path: Path) -> dict:
    try:
        return read_json(path)
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path}: line {exc.lineno}: invalid JSON ({exc.msg})") from exc


def read_run(path: str | Path) -> RunSummary:
    """A finished run directory: config.yaml and metrics.json are required, the rest is optional."""
    layout = RunLayout(path)
    for required in (layout.config, layout.metrics):
        if not required.is_file():
            raise ReportError(f"{layout.root}: not a finished run directory (no {required.name}; train it with `sidrec run`)")
    try:
        config = yaml.safe_load(layout.config.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ReportError(f"{layout.config}: invalid YAML ({exc})") from exc
    train = _json(layout.train_log) if layout.train_log.is_file() else {}
    report = layout.sids_report
    return RunSummary(layout.root, layout.root.name, config, _json(layout.metrics), train,
                      _json(report) if report.is_file() else None)


def unique_names(runs: list[RunSummary]) -> None:
    """Runs named alike (`a/tiger`, `b/tiger`) get their parent folder prefixed, so pages do not collide."""
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.name] = counts.get(run.name, 0) + 1
    for run in runs:
        if counts[run.name] > 1:
            run.name = f"{run.path.resolve().parent.name}-{run.name}"
    seen = set()
    for run in runs:
        if run.name in seen:
            raise ReportError(f"{run.path}: given twice")
        seen.add(run.name)


def read_results(path: str | Path) -> list[Entry]:
    """Rows of a `benchmarks/reproduce.py` results file (`reproduce.json`)."""
    path = Path(path)
    if not path.is_file():
        raise ReportError(f"{path}: no such results file")
    rows = _json(path)
    if not isinstance(rows, list):
        raise ReportError(f"{path}: expected a JSON list of result rows, got {type(rows).__name__}")
    entries = []
    for number, row in enumerate(rows):
        missing = [key for key in ("data", "model", "test") if key not in row]
        if missing:
            raise ReportError(f"{path}: row {number}: missing {', '.join(missing)}")
        curve = [(int(e), float(s), float(v)) for e, s, v in row.get("curve") or []]
        entries.append(Entry(row["model"], row["data"], row.get("seed"), row["test"], row.get("valid") or {},
                             curve=curve, train={k: row.get(k) for k in ("epochs", "best_epoch", "stopped",
                                                                           "train_seconds", "seconds_per_epoch")}))
    return entries


SEED_SUFFIX = re.compile(r"[-_]?seed\d+$")


def group_label(label: str) -> str:
    """`amazon-beauty-tiger-seed42` and `...-seed43` are one method over seeds."""
    return SEED_SUFFIX.sub("", label) or label
