"""Stages wired end to end on a tiny catalogue: text -> residual k-means -> TIGER, with stage reuse."""

import json
import os
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from sidrec import pipeline
from sidrec.cli import app
from sidrec.config import load_config
from sidrec.models import Recommender

os.environ.setdefault("HF_HUB_OFFLINE", "1")
runner = CliRunner()


@pytest.fixture
def tiger_config(tmp_path, p5_files):
    return ["data.name=custom", "data.format=p5", f"data.path={p5_files / 'seq.txt'}",
            f"data.items_path={p5_files / 'items.jsonl'}", f"data.cache_dir={tmp_path / 'data'}",
            f"cache_dir={tmp_path / 'stages'}", "embed.name=text", f"embed.cache_dir={tmp_path / 'emb'}",
            "embed.show_progress=false", "tokenize.name=rkmeans", "tokenize.n_levels=2", "tokenize.codebook_size=3",
            "model.name=tiger", "model.preset=small", "model.n_encoder_layers=1", "model.n_decoder_layers=1",
            "model.dropout=0.0", "train.epochs=2", "train.progress=false", "train.batch_size=64"]


def test_tiger_pipeline_runs_and_reuses_upstream_stages(tmp_path, tiger_config):
    config = load_config(None, tiger_config)
    metrics = pipeline.run(config, tmp_path / "run1")
    run1 = tmp_path / "run1"
    for path in ("embed/embeddings.safetensors", "tokenize/sids.safetensors", "tokenize/sids_report.json",
                 "model/model.safetensors", "model/sids.safetensors", "metrics.json", "report.md"):
        assert (run1 / path).exists(), path
    assert metrics["test"]["users"] == 40 and 0.0 <= metrics["test"]["recall@10"] <= 1.0
    report = json.loads((run1 / "tokenize" / "sids_report.json").read_text())
    assert report["tokenizer"] == "rkmeans"

    # Every recommended item is a real catalogue item with a unique code.
    model = Recommender.load(run1 / "model")
    _, histories, _ = pipeline.load_dataset(config.data).split("test")
    items, _ = model.recommend(histories, 5)
    assert ((items >= 0) & (items < 12)).all()
    assert torch.unique(model.sids.codes, dim=0).shape[0] == 12

    # Changing only the generator reuses embeddings and semantic IDs from the stage cache.
    cached = sorted(p.name for p in (tmp_path / "stages").iterdir())
    stamp = (tmp_path / "stages" / cached[-1] / "stage.json").stat().st_mtime_ns
    pipeline.run(load_config(None, tiger_config + ["model.beam_width=12"]), tmp_path / "run2")
    assert sorted(p.name for p in (tmp_path / "stages").iterdir()) == cached
    assert (tmp_path / "stages" / cached[-1] / "stage.json").stat().st_mtime_ns == stamp
    assert (tmp_path / "run2" / "tokenize" / "sids.safetensors").read_bytes() == \
        (run1 / "tokenize" / "sids.safetensors").read_bytes()


def test_embed_and_tokenize_commands(tmp_path, tiger_config):
    sets = [arg for kv in tiger_config if kv.startswith(("data.", "cache_dir", "embed.cache", "embed.show"))
            for arg in ("--set", kv)]
    result = runner.invoke(app, ["embed", str(tmp_path / "r"), "--encoder", "text", *sets])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r" / "embed" / "embeddings.safetensors").exists()
    result = runner.invoke(app, ["tokenize", str(tmp_path / "r"), "--tokenizer", "rkmeans",
                                 "--set", "tokenize.codebook_size=4", "--set", "tokenize.n_levels=2"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r" / "tokenize" / "sids_report.json").read_text())
    assert report["codebook_sizes"][:2] == [4, 4]


def test_model_that_needs_sids_without_tokenize_section_is_refused(tmp_path, tiger_config):
    config = load_config(None, [kv for kv in tiger_config if not kv.startswith("tokenize.")])
    with pytest.raises(ValueError, match="needs a `tokenize` section"):
        pipeline.run(config, tmp_path / "run")


def test_card_and_collaborative_embeddings_get_a_collaborative_model_by_default():
    assert load_config(None, ["embed.name=collaborative"]).collaborative.model.name == "sasrec"
    assert load_config(None, ["embed.name=card"]).collaborative is not None
    assert load_config(None, ["embed.name=text"]).collaborative is None


def test_data_without_training_transitions_is_refused_in_one_line(tmp_path):
    # Every user has 3 items: 1 training item, no next item to learn (was `cannot convert float NaN to integer`).
    (tmp_path / "seq.txt").write_text("".join(f"u{u} i{u % 5} i{(u + 1) % 5} i{(u + 2) % 5}\n" for u in range(20)))
    sets = ["data.name=custom", "data.format=p5", f"data.path={tmp_path / 'seq.txt'}", f"data.cache_dir={tmp_path / 'd'}",
            f"cache_dir={tmp_path / 's'}", "train.progress=false"]
    result = subprocess.run([sys.executable, "-m", "sidrec.cli", "run", "sasrec", *[a for kv in sets for a in ("--set", kv)],
                             "--out", str(tmp_path / "r")], capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert "has no training transitions" in " ".join(result.stdout.split()) and "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "r" / "model").exists()
    config = load_config(None, [*sets, "model.name=popularity"])  # closed form: needs no transitions
    assert pipeline.run(config, tmp_path / "p")["test"]["users"] == 20
