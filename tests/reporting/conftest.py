"""Tiny trained runs for the report tests, built once per session on the cyclic catalogue:
TIGER (text -> residual k-means), SASRec over two seeds, and CARD units -> MHQ with the
non-uniform transform -> AsymRec (collaborative neighbours, gallery, latents, energy per view)."""

import json
import os

import pytest
import torch

from sidrec import pipeline
from sidrec.reporting import build_site
from sidrec.config import load_config, resolve_preset
from synthetic import cyclic_raw

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def report_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("report-data")
    raw = cyclic_raw(n_users=40, length=7)
    raw.items.loc[3, "title"] = "item number 3 <b>bold</b> & co"  # markup in a title must stay text
    lines = [" ".join([user, *group["item_id"]]) for user, group in raw.interactions.groupby("user_id", sort=False)]
    (folder / "seq.txt").write_text("\n".join(lines) + "\n")
    raw.items.to_json(folder / "items.jsonl", orient="records", lines=True)
    return folder


def _overrides(folder, *extra):
    return ["data.name=custom", "data.format=p5", f"data.path={folder / 'seq.txt'}",
            f"data.items_path={folder / 'items.jsonl'}", f"data.cache_dir={folder / 'cache'}",
            f"cache_dir={folder / 'stages'}", "train.progress=false", "train.epochs=2", *extra]


TINY_SASREC = ["model.name=sasrec", "model.hidden=16", "model.ffn=32", "model.layers=1"]


@pytest.fixture(scope="session")
def report_runs(report_data, tmp_path_factory):
    """{name: run dir} of four finished runs in one parent folder (as `runs/*` would be)."""
    parent = tmp_path_factory.mktemp("runs")
    configs = {
        "tiger": [None, ["embed.name=text", "embed.show_progress=false", f"embed.cache_dir={report_data / 'emb'}",
                         "tokenize.name=rkmeans", "tokenize.n_levels=2", "tokenize.codebook_size=4",
                         "model.name=tiger", "model.preset=small", "model.n_encoder_layers=1",
                         "model.n_decoder_layers=1", "model.d_model=16", "model.d_ff=32", "model.beam_width=12",
                         "train.batch_size=64", "eval.ks=[5,10]"]],
        "sasrec-seed1": [None, [*TINY_SASREC, "train.seed=1"]],
        "sasrec-seed2": [None, [*TINY_SASREC, "train.seed=2"]],
        "card_asymrec": ["card_asymrec", [
            "collaborative.model.hidden=16", "collaborative.model.ffn=32", "collaborative.model.layers=1",
            "collaborative.train.epochs=1", "collaborative.train.progress=false",
            f"embed.cache_dir={report_data / 'emb'}", "embed.size=128",
            "tokenize.n_views=2", "tokenize.n_levels=2", "tokenize.codebook_size=4", "tokenize.proj_dim=8",
            "tokenize.epochs=2", "model.hidden=16", "model.ffn=32", "model.layers=1", "model.experts=2",
            "model.expert_hidden=16", "train.batch_size=64", "eval.ks=[5,10]"]],
    }
    for name, (preset, extra) in configs.items():
        pipeline.run(load_config(preset and resolve_preset(preset), _overrides(report_data, *extra)), parent / name)
    (parent / "report.md").write_text("a file among the runs, as in runs/demo/*\n")
    return {name: parent / name for name in configs}


@pytest.fixture(scope="session")
def site(report_runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    results = tmp_path_factory.mktemp("results") / "reproduce.json"
    results.write_text(json.dumps([
        {"data": "toy", "model": "sasrec", "seed": s, "test": {"recall@10": r, "ndcg@10": r / 2},
         "curve": [[1, 10.0, r / 4], [2, 20.0, r / 3]], "epochs": 2, "train_seconds": 20.0}
        for s, r in ((42, 0.30), (43, 0.40))]))
    parent = next(iter(report_runs.values())).parent
    build_site(sorted(parent.iterdir()), out, results=results, users=8, gallery=4)
    return out
