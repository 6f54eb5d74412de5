"""The command line end to end on a small custom dataset."""

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from sidrec.cli import app

runner = CliRunner()


def custom(tmp_path) -> list[str]:
    return ["--set", "data.name=custom", "--set", "data.format=p5", "--set", f"data.path={tmp_path / 'seq.txt'}",
            "--set", f"data.items_path={tmp_path / 'items.jsonl'}", "--set", f"data.cache_dir={tmp_path / 'cache'}"]


def test_run_writes_metrics_and_sasrec_beats_popularity(p5_files):
    out = p5_files / "runs"
    result = runner.invoke(app, ["run", "popularity", "--out", str(out / "pop"), *custom(p5_files)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["run", "sasrec", "--out", str(out / "sas"), *custom(p5_files),
                                 "--set", "train.epochs=25", "--set", "train.progress=false",
                                 "--set", "model.dropout=0.0", "--set", "train.lr=0.005"])
    assert result.exit_code == 0, result.output
    pop, sas = (json.loads((out / name / "metrics.json").read_text()) for name in ("pop", "sas"))
    for metrics in (pop, sas):
        assert {"valid", "test", "seconds", "config"} <= set(metrics)
        assert {"recall@5", "recall@10", "ndcg@5", "ndcg@10", "recall@20", "ndcg@20"} <= set(metrics["test"])
    assert sas["test"]["ndcg@10"] > pop["test"]["ndcg@10"] + 0.3
    assert "NOT excluded" in (out / "sas" / "report.md").read_text()

    result = runner.invoke(app, ["evaluate", str(out / "sas"), "--split", "valid"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "sas" / "eval_valid.json").read_text())["ndcg@10"] == pytest.approx(sas["valid"]["ndcg@10"])
    result = runner.invoke(app, ["report", str(out / "pop"), str(out / "sas")])
    assert "| sasrec | custom |" in result.output


def test_bad_config_exits_with_a_clear_message(tmp_path):
    result = subprocess.run([sys.executable, "-m", "sidrec.cli", "run", "sasrec", "--out", str(tmp_path),
                             "--set", "train.lr=fast"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "train.lr" in result.stdout and "Traceback" not in result.stdout + result.stderr


def test_demo_prints_one_table_of_every_preset_with_its_wall_clock(tmp_path):
    result = runner.invoke(app, ["demo", "--presets", "popularity,sasrec", "--out", str(tmp_path / "demo"),
                                 "--set", "train.epochs=1", "--set", "train.progress=false",
                                 "--set", f"cache_dir={tmp_path / 'stages'}",
                                 "--set", f"data.cache_dir={tmp_path / 'datasets'}"])
    assert result.exit_code == 0, result.output
    report = (tmp_path / "demo" / "report.md").read_text()
    assert "| popularity | ml-100k |" in report and "| sasrec | ml-100k |" in report
    assert "s/epoch" in report.splitlines()[0] and "All 2 presets:" in report
    assert report.strip() in result.output.strip()


def test_presets_and_demo_settings_stop_by_epochs_not_by_wall_clock():
    from sidrec.cli import DEMO_OVERRIDES, DEMO_PRESETS, _config
    from sidrec.config import PRESETS

    for path in PRESETS.glob("*.yaml"):
        cfg = _config(str(path), [])
        sections = [cfg.train] + ([cfg.collaborative.train] if cfg.collaborative else [])
        assert all(train.max_seconds is None for train in sections), path.name
    assert set(DEMO_OVERRIDES) == set(DEMO_PRESETS) - {"popularity"}  # every trained preset: a small demo
    for name, overrides in DEMO_OVERRIDES.items():
        cfg = _config(name, ["data.name=ml-100k", *overrides])
        assert cfg.train.max_seconds is None and cfg.train.epochs <= 30, name


@pytest.mark.parametrize("args, message", [(["recommend", "r", "--history", "i1", "--k", "0"], "Invalid value for '--k'"),
                                           (["serve", "r", "--port", "abc"], "Invalid value for '--port'")])
def test_bad_option_values_print_the_usage_error_not_a_traceback(tmp_path, args, message):
    """typer >= 0.26 raises its own copy of click's errors: they once escaped as an 80-line traceback."""
    result = subprocess.run([sys.executable, "-m", "sidrec.cli", *args], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr + result.stdout


def test_catalogue_titles_of_items_without_metadata_are_empty_not_nan():
    import pandas as pd

    from sidrec.serving.catalogue import Catalogue

    for titles in (["one", None], [float("nan"), float("nan")]):
        catalogue = Catalogue(pd.DataFrame({"item_id": ["a", "b"], "title": titles}))
        assert catalogue.titles[1] is None


def test_error_messages_keep_their_brackets(tmp_path):
    """rich read "pip install 'sidrec[text]'" as markup and printed "pip install 'sidrec'"."""
    result = subprocess.run([sys.executable, "-m", "sidrec.cli", "run", "sasrec", "--set", "data.name=custom",
                             "--set", "data.format=p5", "--set", "data.path=sidrec[text]/seq.txt", "--out", "r"],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2 and "sidrec[text]/seq.txt" in result.stdout.replace("\n", ""), result.stdout
