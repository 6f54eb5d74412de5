"""benchmarks/reproduce.py: rows, curves and tables are computed from runs, never typed in."""

import subprocess

import pytest
from benchmark_module import load_benchmark


@pytest.fixture(scope="module")
def reproduce():
    return load_benchmark("reproduce")


def _row(model, seed, ndcg, best=2):
    test = {k: ndcg for k in ("recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20",
                              "recall@10_head", "recall@10_tail", "coverage@10")}
    return {"data": "amazon-beauty", "model": model, "seed": seed, "test": test, "valid": test, "epochs": 3,
            "best_epoch": best, "stopped": "early stopping", "train_seconds": 30.0, "seconds_per_epoch": 9.0,
            "seconds_to_best": 20.0, "select_users": None, "curve": [(1, 10.0, .01), (2, 20.0, ndcg)],
            "run_dir": "runs/x", "date": "2026-12-01", "cpu": "test CPU", "commit": "abc", "threads": 2}


def test_curve_accumulates_training_and_validation_seconds(reproduce):
    history = [{"epoch": 1, "seconds": 10.0, "valid": {"ndcg@10": .01, "seconds": 2.0}},
               {"epoch": 2, "seconds": 11.0},
               {"epoch": 3, "seconds": 9.0, "valid": {"ndcg@10": .03, "seconds": 3.0}}]
    assert reproduce.curve_of(history) == [(1, 12.0, .01), (3, 35.0, .03)]


def test_tables_give_mean_and_std_over_seeds_and_name_every_seed(reproduce, tmp_path):
    rows = [_row("sasrec", 42, .04), _row("sasrec", 43, .06, best=3), _row("tiger", 42, .03), _row("popularity", 42, .01, best=None)]
    table = reproduce.headline(rows)
    assert "| amazon-beauty | sasrec | 42,43 | 0.0500 ± 0.0141 |" in table
    assert "| 2/3 / 3/3 |" in table  # best epochs per seed / last epochs per seed
    assert "| 0.0100 | – |" in table  # a closed-form model has no epochs
    assert "| amazon-beauty | tiger | 42 | 0.0300 |" in table
    reproduce.render(rows, tmp_path / "reproduce")
    text = (tmp_path / "reproduce.md").read_text()
    assert "0.0500 ± 0.0141" in text and "test CPU" in text and (tmp_path / "reproduce-amazon-beauty.png").stat().st_size > 1000


def test_rows_carry_the_claims_figures_of_a_real_run(reproduce, tmp_path, p5_files):
    """An AsymRec run's row holds its effective rank and the per-level usage and energy share of its MHQ codes;
    `refresh` recomputes the same figures for a row written before they were recorded; the table shows them."""
    from sidrec import pipeline
    from sidrec.config import load_config

    overrides = ["data.name=custom", "data.format=p5", f"data.path={p5_files / 'seq.txt'}",
                 f"data.items_path={p5_files / 'items.jsonl'}", f"data.cache_dir={tmp_path / 'data'}",
                 f"cache_dir={tmp_path / 'stages'}", f"embed.cache_dir={tmp_path / 'emb'}", "embed.show_progress=false",
                 "tokenize.n_views=2", "tokenize.n_levels=2", "tokenize.codebook_size=4", "tokenize.proj_dim=8",
                 "tokenize.epochs=2", "model.hidden=16", "model.ffn=32", "model.expert_hidden=16", "model.max_len=10",
                 "train.epochs=2", "train.progress=false", "eval.max_len=10"]
    config = load_config(reproduce.resolve_preset("asymrec"), overrides)
    run_dir = tmp_path / "run"
    metrics = pipeline.run(config, run_dir)
    row = reproduce.make_row("amazon-beauty", "asymrec", 42, metrics, run_dir, {"cpu": "test CPU", "commit": "abc", "threads": 2})
    rank, codes = row["diagnostics"]["effective_rank"], row["codes"]
    assert 1.0 < rank <= 16
    assert len(codes["utilisation"]) == len(codes["perplexity"]) == 4  # M x L code positions
    assert all(0 < u <= 1 for u in codes["utilisation"]) and all(1 <= p <= 4 for p in codes["perplexity"])
    assert sum(codes["energy_share_per_view"]) == pytest.approx(1.0, abs=1e-3) and 0 <= codes["collision_rate_before"] < 1
    assert len(codes["prefix_agreement"]) == len(codes["prefix_chance"]) >= 4  # M x L codes (+ a dedup level)
    assert codes["prefix_agreement"] == sorted(codes["prefix_agreement"], reverse=True)  # a longer prefix is rarer
    old = {**{k: v for k, v in row.items() if k != "diagnostics"}, "codes": {k: v for k, v in codes.items() if "prefix" not in k}}
    old["run_dir"] = str(run_dir)
    refreshed = reproduce.refresh(old)
    assert refreshed["diagnostics"]["effective_rank"] == pytest.approx(rank, rel=1e-5) and refreshed["codes"] == codes
    reproduce.render([row], tmp_path / "reproduce")
    assert f"| asymrec | 42 | {rank:.1f} |" in (tmp_path / "reproduce.md").read_text()


def test_marked_blocks_are_replaced_and_the_rest_kept(tmp_path):
    from provenance import replace_marked

    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- t -->\nold\n<!-- /t -->\noutro\n")
    assert replace_marked(readme, "t", "new")
    assert readme.read_text() == "intro\n<!-- t -->\nnew\n<!-- /t -->\noutro\n"
    assert not replace_marked(readme, "other", "x") and "new" in readme.read_text()


def test_commit_is_dirty_only_for_edits_under_the_paths_it_is_scoped_to(tmp_path):
    from provenance import commit

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    for name in ("src", "results"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "f.txt").write_text("v1")
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "init")
    (tmp_path / "results" / "f.txt").write_text("v2")
    assert commit("src", root=tmp_path).endswith("+dirty") is False
    assert commit(root=tmp_path).endswith("+dirty")
    (tmp_path / "src" / "f.txt").write_text("v2")
    assert commit("src", root=tmp_path).endswith("+dirty")
