"""Markdown results tables built from `metrics.json` dictionaries."""

from __future__ import annotations

COLUMNS = [("recall@5", "R@5"), ("recall@10", "R@10"), ("recall@20", "R@20"), ("ndcg@5", "N@5"),
           ("ndcg@10", "N@10"), ("ndcg@20", "N@20"), ("coverage@10", "Cov@10"),
           ("recall@10_head", "R@10 head"), ("recall@10_tail", "R@10 tail")]


TRAINING = [("epochs", "epochs", "{}"), ("seconds_per_epoch", "s/epoch", "{:.1f}"),
            ("samples_per_second", "train samples/s", "{:.0f}")]


def _tail_fraction(run: dict) -> float:
    """The run's own `eval.tail_fraction` (the table must not claim 80 % when a run used another)."""
    return float(((run.get("config") or {}).get("eval") or {}).get("tail_fraction", 0.8))


def _cell(value, fmt: str = "{:.4f}") -> str:
    return "–" if value is None or value != value else fmt.format(value)


def results_table(runs: list[dict], split: str = "test") -> str:
    """One row per run; states the split, the seed and whether history items were excluded."""
    present = [(key, label) for key, label in COLUMNS if any(key in run[split] for run in runs)]
    training = [t for t in TRAINING if any(t[0] in (run.get("train") or {}) for run in runs)]
    header = ["model", "data", *[label for _, label in present], *[label for _, label, _ in training], "seconds", "seed"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for run in runs:
        train = run.get("train") or {}
        cells = [run.get("label", run["model"]), run["dataset"], *[_cell(run[split].get(key)) for key, _ in present],
                 *[_cell(train.get(key), fmt) for key, _, fmt in training], f"{run['seconds']:.1f}", str(run.get("seed", "–"))]
        lines.append("| " + " | ".join(cells) + " |")
    excluded = {run[split].get("exclude_history") for run in runs}
    note = {True: "history items excluded from the ranking", False: "history items NOT excluded from the ranking"}
    lines.append("")
    lines.append(f"Split: {split}, leave-one-out, full-catalogue ranking; "
                 + "; ".join(note[bool(e)] for e in sorted(excluded, key=str)) + ". "
                 + "Tail = " + "; ".join(f"{t:.0%}" for t in sorted({_tail_fraction(run) for run in runs}))
                 + " least popular items by training count."
                 + (" s/epoch = mean training time of the epochs that ran to the end (– when the time budget cut"
                    " the first one); train samples/s includes validation." if training else ""))
    return "\n".join(lines)
