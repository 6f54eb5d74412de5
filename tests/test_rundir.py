"""Run directories cannot be corrupted: validation before any write, one writer, resume keeps the config."""

import pytest
import yaml
from typer.testing import CliRunner

from sidrec import pipeline, rundir
from sidrec.cli import app
from sidrec.config import ConfigError, load_config
from sidrec.evaluation.report import results_table

runner = CliRunner()


def _config(p5_files, tmp_path, *extra):
    return load_config(None, ["data.name=custom", "data.format=p5", f"data.path={p5_files / 'seq.txt'}",
                              f"data.items_path={p5_files / 'items.jsonl'}", f"data.cache_dir={tmp_path / 'data'}",
                              f"cache_dir={tmp_path / 'stages'}", *extra])


def test_an_invalid_option_stops_before_the_run_directory_is_touched(p5_files, tmp_path):
    out = tmp_path / "run"
    pipeline.run(_config(p5_files, tmp_path), out)  # a finished popularity run
    before = (out / "config.yaml").read_text()
    bad = _config(p5_files, tmp_path, "model.name=sasrec", "model.hiddn=32")
    with pytest.raises(ConfigError, match="model.hiddn"):
        pipeline.run(bad, out)
    with pytest.raises(ConfigError, match="tokenize"):
        pipeline.run(_config(p5_files, tmp_path, "embed.name=text", "tokenize.name=rkmeans", "tokenize.levels=2"), out)
    assert (out / "config.yaml").read_text() == before


def test_a_second_writer_fails_at_once_with_a_clear_message(p5_files, tmp_path):
    out = tmp_path / "run"
    with rundir.exclusive(out):
        with pytest.raises(rundir.RunDirError, match="another sidrec process is writing"):
            pipeline.run(_config(p5_files, tmp_path), out)
    pipeline.run(_config(p5_files, tmp_path), out)  # released: works again
    assert (out / "metrics.json").exists()


def test_resume_refuses_a_changed_configuration_and_names_the_keys(p5_files, tmp_path):
    out = tmp_path / "run"
    sasrec = ["model.name=sasrec", "model.hidden=8", "model.heads=1", "model.ffn=16", "train.epochs=1",
              "train.progress=false"]
    pipeline.run(_config(p5_files, tmp_path, *sasrec), out)
    before = (out / "config.yaml").read_text()
    changed = _config(p5_files, tmp_path, *sasrec, "train.lr=0.01", "model.layers=1")
    with pytest.raises(rundir.RunDirError, match=r"model\.layers, train\.lr"):
        pipeline.run(changed, out, resume=True)
    assert (out / "config.yaml").read_text() == before
    pipeline.run(_config(p5_files, tmp_path, *sasrec, "train.progress=true"), out, resume=True)  # presentation only


def test_resume_accepts_a_run_started_before_an_option_existed(p5_files, tmp_path):
    """A run started before `eval.precision` existed resumes: the missing key takes its default."""
    out = tmp_path / "run"
    sasrec = ["model.name=sasrec", "model.hidden=8", "model.heads=1", "model.ffn=16", "train.epochs=1",
              "train.progress=false"]
    pipeline.run(_config(p5_files, tmp_path, *sasrec), out)
    saved = yaml.safe_load((out / "config.yaml").read_text())
    del saved["eval"]["precision"]  # as written by the older code
    (out / "config.yaml").write_text(yaml.safe_dump(saved))
    pipeline.run(_config(p5_files, tmp_path, *sasrec), out, resume=True)
    with pytest.raises(rundir.RunDirError, match=r"eval\.precision"):  # a non-default value is still a change
        (out / "config.yaml").write_text(yaml.safe_dump(saved))
        pipeline.run(_config(p5_files, tmp_path, *sasrec, "eval.precision=bf16"), out, resume=True)


def test_changed_keys_walks_nested_sections():
    old = {"train": {"lr": 1, "epochs": 2}, "model": {"name": "x"}}
    new = {"train": {"lr": 2, "epochs": 2}, "model": {"name": "x", "extra": 1}}
    assert rundir.changed_keys(old, new) == ["model.extra", "train.lr"]


@pytest.mark.parametrize("ks, metric, message", [
    ([5, 20], "ndcg@10", "needs 10 in eval.ks"), ([], "ndcg@10", "distinct positive"),
    ([0, 10], "ndcg@10", "distinct positive"), ([10], "auc", "must look like"),
])
def test_cut_offs_and_selection_metric_are_checked_before_training(ks, metric, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [f"eval.ks={ks}", f"eval.select_metric={metric}"])
    assert load_config(None, ["eval.ks=[5,20]", "eval.select_metric=recall@20"]).eval.select_metric == "recall@20"


def test_report_states_the_tail_fraction_the_run_used():
    run = {"model": "pop", "dataset": "d", "seconds": 1.0, "test": {"recall@10": 0.1, "exclude_history": False},
           "config": {"eval": {"tail_fraction": 0.5}}}
    assert "Tail = 50% least popular" in results_table([run])


def test_evaluate_checks_the_manifest_before_reading_the_run(p5_files, tmp_path):
    out = tmp_path / "run"
    sasrec = ["model.name=sasrec", "model.hidden=8", "model.heads=1", "model.ffn=16", "train.epochs=1",
              "train.progress=false"]
    pipeline.run(_config(p5_files, tmp_path, *sasrec), out)
    weights = out / "model" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # same size, different weights
    weights.write_bytes(bytes(data))
    result = runner.invoke(app, ["evaluate", str(out)])
    assert result.exit_code != 0 and "sha256 does not match" in str(result.exception or result.output)
    assert not (out / "eval_valid.json").exists()
    assert yaml.safe_load((out / "config.yaml").read_text())["model"]["name"] == "sasrec"


def test_the_layout_names_every_file_a_finished_run_holds(p5_files, tmp_path):
    """`RunLayout` is the one place a run's paths are spelled: a new artifact written anywhere else fails here."""
    out = tmp_path / "run"
    pipeline.run(_config(p5_files, tmp_path, "model.name=sasrec", "model.hidden=8", "train.epochs=1",
                         "train.progress=false", "embed.name=collaborative", "collaborative.train.epochs=1",
                         "collaborative.train.progress=false", "collaborative.model.name=sasrec",
                         "collaborative.model.hidden=8"), out)
    layout = rundir.RunLayout(out)
    named = {layout.config, layout.dataset_record, layout.snapshot, layout.model, layout.checkpoints, layout.train_log,
             layout.metrics, layout.report, layout.manifest, layout.lock, layout.stage("collaborative"),
             layout.stage("embed")}
    assert set(out.iterdir()) == named
    assert layout.collaborative_embeddings.is_file() and layout.embeddings.is_file()
    assert pipeline.read_metrics(out) == yaml.safe_load(layout.metrics.read_text())
