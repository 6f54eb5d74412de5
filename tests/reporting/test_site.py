"""`sidrec report --html`: what each page shows is what the run measured and the model ranks."""

import re

import pytest
import torch
from typer.testing import CliRunner

from sidrec.cli import app
from sidrec.evaluation.protocol import rank_items
from sidrec.reporting import ReportError, build_site
from sidrec.reporting.inspect import inspect_users, run_sids, sid_table
from sidrec.reporting.svg import BarGroup, Series, bar_chart, line_chart, nice_ticks
from sidrec.serving.catalogue import open_run

runner = CliRunner()


@pytest.mark.parametrize("lo, hi", [(0.0, 0.11), (1, 256), (-0.2, 0.13), (3.0, 3.0), (0.0012, 0.0409)])
def test_axis_ticks_cover_the_data(lo, hi):
    ticks = nice_ticks(lo, hi)
    assert ticks[0] <= lo and ticks[-1] >= hi and len(ticks) >= 2


def test_charts_draw_one_mark_per_series_and_escape_names():
    svg = line_chart([Series("a<b>", [1, 2, 3], [0.1, 0.3, 0.2]), Series("c", [1, 2], [5, 6], right_axis=True)],
                     title="t & u", x_label="epoch", y_label="loss", right_label="metric")
    assert svg.count('class="series"') == 2 and "a&lt;b&gt;" in svg and "<b>" not in svg and "t &amp; u" in svg
    bars = bar_chart(["x", "y"], [BarGroup("R", [0.2, 0.4], [0.01, 0.0]), BarGroup("N", [0.1, 0.2])], title="b", y_label="v")
    assert bars.count('class="bar"') == 4 and bars.count('class="whisker"') == 1


def test_code_log_probs_add_up_to_the_models_scores(report_runs):
    """The inspector's per-code columns explain the score: TIGER's beam score is the sum of its
    tokens' log-probs; AsymRec's exact score is the weighted sum of its heads' code log-probs."""
    for name in ("tiger", "card_asymrec"):
        served = open_run(report_runs[name])
        _, histories, _ = served.dataset.split("test")
        items, scores = served.model.recommend(histories[:6], 5)
        per_code = served.model.item_code_log_probs(histories[:6], items)
        weights = getattr(served.model, "code_weights", None)
        total = per_code.sum(-1) if weights is None else (per_code * weights).sum(-1)
        torch.testing.assert_close(total, scores.float(), atol=1e-4, rtol=1e-4)


def test_user_inspector_shows_the_models_ranking_and_marks_the_hit(report_runs):
    served = open_run(report_runs["tiger"])
    users = inspect_users(served, run_sids(served.run_dir), "test", n_users=8)
    _, histories, targets = served.dataset.split("test")
    by_user = {str(served.dataset.user_ids[int(u)]): row for row, u in enumerate(served.dataset.split("test")[0])}
    for user in users:
        row = by_user[user["user"]]
        items, _ = rank_items(served.model, histories[row:row + 1], 10, served.config.eval.exclude_history)
        assert [r["id"] for r in user["recommendations"]] == [served.catalogue.item_ids[i] for i in items[0] if i >= 0]
        target = served.catalogue.item_ids[int(targets[row])]
        assert user["target"]["id"] == target
        assert [r["hit"] for r in user["recommendations"]] == [r["id"] == target for r in user["recommendations"]]
        assert all(len(r["code_log_probs"]) == len(r["code"]) + 1 for r in user["recommendations"])  # + eos


def test_explorer_data_is_the_runs_semantic_ids(report_runs):
    served = open_run(report_runs["card_asymrec"])
    data = sid_table(served, run_sids(served.run_dir))
    assert data["codes"] == served.model.item_codes.tolist()
    assert data["ids"] == served.catalogue.item_ids.tolist() and "item number 3 <b>bold</b> & co" in data["titles"]


def test_site_has_every_page_and_never_renders_titles_as_markup(site):
    expected = ["index.html", "compare.html", "results.html", "runs/tiger/index.html", "runs/tiger/explorer.html",
                "runs/tiger/users.html", "runs/card_asymrec/gallery.html", "runs/sasrec-seed1/users.html"]
    for page in expected:
        assert (site / page).is_file(), page
    assert len(list((site / "runs" / "card_asymrec" / "gallery").glob("unit-*.png"))) == 4
    assert not (site / "runs" / "tiger" / "gallery.html").exists()  # not a CARD run
    for page in site.rglob("*.html"):
        html = page.read_text()
        assert "<b>bold</b>" not in html, page  # escaped in HTML, \u003c-encoded in the explorer's JSON
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", html), f"{page} loads something from the network"
    card = (site / "runs" / "card_asymrec" / "index.html").read_text()
    assert "after the non-uniform transform" in card and "energy per view" in card


def test_comparison_aggregates_seeds(site):
    html = (site / "results.html").read_text()
    assert "0.3500 ± 0.0707" in html  # R@10 over seeds 42 and 43: mean .35, sample std .0707
    compare = (site / "compare.html").read_text()
    assert "sasrec" in compare and "1, 2" in compare  # the two SASRec seeds form one row


def test_cli_report_html_and_errors(report_runs, tmp_path):
    result = runner.invoke(app, ["report", str(report_runs["sasrec-seed1"]), "--html", str(tmp_path / "s"), "--users", "3"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "s" / "runs" / "sasrec-seed1" / "users.html").is_file()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportError, match=r"empty: not a finished run directory \(no config\.yaml"):
        build_site([tmp_path / "empty"], tmp_path / "s2")
    assert not (tmp_path / "s2").exists()  # nothing written for a bad input
    with pytest.raises(ReportError, match="bad.json: expected a JSON list"):
        (tmp_path / "bad.json").write_text("{}")
        build_site([], tmp_path / "s3", results=tmp_path / "bad.json")
