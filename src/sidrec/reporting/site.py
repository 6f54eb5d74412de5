"""`sidrec report ... --html OUT`: a static site that opens from `file://` with no network.

Pages: an index, one page per run (config, metrics, curves, tokenizer, timings), its semantic-ID
explorer, user inspector and (CARD) unit gallery, and a comparison page over all runs or a
benchmark results file. CSS and JS are inlined; charts are inline SVG.
"""

from __future__ import annotations

import json
import math
import statistics
from html import escape
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Sequence

import yaml
from tqdm import tqdm

from sidrec.io import atomic_path
from sidrec.rundir import RunLayout
from sidrec.reporting.collect import Entry, ReportError, RunSummary, group_label, read_results, read_run, unique_names
from sidrec.reporting.svg import BarGroup, Series, bar_chart, histogram_series, line_chart

METRIC_COLUMNS = [("recall@5", "R@5"), ("recall@10", "R@10"), ("recall@20", "R@20"), ("ndcg@5", "N@5"),
                  ("ndcg@10", "N@10"), ("ndcg@20", "N@20"), ("recall@10_head", "R@10 head"),
                  ("recall@10_tail", "R@10 tail"), ("coverage@10", "Cov@10")]


def _asset(name: str) -> str:
    return resources.files("sidrec.reporting").joinpath("assets", name).read_text(encoding="utf-8")


def _script_json(value: Any) -> str:
    """JSON that is safe inside a <script> element (no `</script>` can end it early)."""
    return json.dumps(value, ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _num(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return escape(str(value))


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], numeric_from: int = 1) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(
        f'<td class="num">{_num(c)}</td>' if i >= numeric_from and not isinstance(c, str) else f"<td>{escape(str(c))}</td>"
        for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f'<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def page(title: str, body: str, nav: Sequence[tuple[str, str]], current: str, scripts: Sequence[str] = ()) -> str:
    links = "".join(f'<a href="{escape(href)}"{" class=current" if label == current else ""}>{escape(label)}</a>'
                    for label, href in nav)
    js = "".join(f"<script>{s}</script>" for s in scripts)
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)} · sidrec</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_asset("site.css")}</style>'
            f'</head><body><header><span class="brand">sidrec report</span>{links}</header>'
            f"<main><h1>{escape(title)}</h1>{body}</main>{js}</body></html>")


def write_page(path: Path, html: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(html, encoding="utf-8")


# --- one run ----------------------------------------------------------------------------------------

def metrics_table(run: RunSummary) -> str:
    rows = [[split, *[run.metrics.get(split, {}).get(key) for key, _ in METRIC_COLUMNS],
             run.metrics.get(split, {}).get("users")] for split in ("test", "valid") if run.metrics.get(split)]
    tail = ((run.config.get("eval") or {}).get("tail_fraction", 0.8))
    excluded = (run.config.get("eval") or {}).get("exclude_history", False)
    return (table(["split", *[label for _, label in METRIC_COLUMNS], "users"], rows) +
            f'<p class="note">Leave-one-out, full-catalogue ranking; history items '
            f'{"excluded" if excluded else "NOT excluded"}; tail = the {tail:.0%} least popular items by training count.</p>')


def curves(history: list[dict], select: str) -> str:
    """Loss (left axis) and validation metrics (right axis) per epoch; cumulative seconds on the top axis."""
    epochs = [e["epoch"] for e in history]
    if not epochs:
        return '<p class="note">No training history (a closed-form model).</p>'
    elapsed, top = 0.0, []
    for e in history:
        elapsed += float(e.get("seconds") or 0) + float((e.get("valid") or {}).get("seconds") or 0)
        top.append((e["epoch"], f"{elapsed:.0f}s"))
    stride = max(1, math.ceil(len(top) / 8))
    series = [Series("train loss", epochs, [e.get("loss") for e in history])]
    for key in dict.fromkeys([select, "recall@10", "ndcg@10"]):
        series.append(Series(f"valid {key}", epochs, [(e.get("valid") or {}).get(key) for e in history], right_axis=True))
    return line_chart(series, title="training loss and validation per epoch", x_label="epoch", y_label="loss",
                      right_label="validation", top_axis=top[::stride], top_label="wall clock (training + validation)")


def tokenizer_section(run: RunSummary, views: dict | None) -> str:
    report = run.sids_report
    if report is None:
        return ""
    parts = ["<h2>Tokenizer</h2>",
             f'<p>{escape(str(report.get("tokenizer")))} on {escape(str(report.get("encoder")))} embeddings, '
             f'resolution {escape(str(report.get("resolution")))}, {report.get("n_items")} items, fitted in '
             f'{_num(report.get("fit_seconds"), 1)} s, reconstruction MSE {_num(report.get("recon_mse"), 6)}.</p>']
    levels = report.get("levels") or []
    parts.append(table(["level", "used", "utilisation", "perplexity", "Gini"],
                       [[str(lv.get("level", i)), lv.get("used"), lv.get("utilisation"), lv.get("perplexity"), lv.get("gini")]
                        for i, lv in enumerate(levels)]))
    parts.append(table(["", "collision rate", "items sharing a code", "largest group"],
                       [["before resolution", report.get("collision_rate_before"), report.get("items_sharing_code_before"),
                         report.get("max_group_size_before")],
                        ["after resolution", report.get("collision_rate_after"), report.get("items_sharing_code_after"),
                         report.get("max_group_size_after")]]))
    charts = []
    if views:
        usage = views["usage"][:12]
        charts.append(line_chart([Series(f"L{u['level']}: ppl {u['perplexity']:.0f}, Gini {u['gini']:.2f}",
                                         list(range(1, len(u["sorted_counts"]) + 1)), u["sorted_counts"], markers=False)
                                  for u in usage],
                                 title="code usage per level (codes sorted by use; flat = even)",
                                 x_label="code rank", y_label="items"))
        if "latents" in views:
            before, after = views["latents"]["before"], views["latents"]["after"]
            charts.append(line_chart([histogram_series(before, "before the transform")],
                                     title="latent values before the non-uniform transform", x_label="value", y_label="share"))
            charts.append(line_chart([histogram_series(after, "after the transform")],
                                     title="latent values after the non-uniform transform", x_label="value", y_label="share"))
        if "energy_share_per_view" in views:
            shares = views["energy_share_per_view"]
            charts.append(bar_chart([f"view {m}" for m in range(len(shares))], [BarGroup("", shares)],
                                    title="MHQ: share of the projected energy per view", y_label="share"))
    parts.append(f'<div class="charts">{"".join(charts)}</div>')
    return "".join(parts)


def timings(run: RunSummary) -> str:
    rows = [[stage, float(seconds)] for stage, seconds in (run.metrics.get("stage_seconds") or {}).items()]
    if run.train.get("train_seconds") is not None:
        rows.append(["train (with validation)", float(run.train["train_seconds"])])
    for split in ("valid", "test"):
        if (run.metrics.get(split) or {}).get("seconds") is not None:
            rows.append([f"final {split} evaluation", float(run.metrics[split]["seconds"])])
    if run.metrics.get("seconds") is not None:
        rows.append(["whole run", float(run.metrics["seconds"])])
    train = run.train
    note = (f'<p class="note">{train.get("epochs")} epochs, best {train.get("best_epoch")}, stopped by '
            f'{escape(str(train.get("stopped") or "the epoch limit / early stopping"))}, '
            f'{_num(train.get("seconds_per_epoch"), 1)} s per epoch.</p>') if train else ""
    return "<h2>Timings</h2>" + table(["stage", "seconds"], rows) + note


def run_page(run: RunSummary, views: dict | None, nav: list, sub: list) -> str:
    select = (run.config.get("eval") or {}).get("select_metric", "ndcg@10")
    body = [f'<p class="note">{escape(str(run.path))} · model {escape(run.model)} · data '
            f'{escape(str(run.metrics.get("dataset")))} · seed {escape(str(run.metrics.get("seed")))}</p>',
            _subnav(sub, "overview"), "<h2>Metrics</h2>", metrics_table(run),
            "<h2>Training</h2>", f'<div class="charts">{curves(run.train.get("history") or [], select)}</div>',
            tokenizer_section(run, views), timings(run),
            "<h2>Resolved config</h2>", f'<pre class="config">{escape(yaml.safe_dump(run.config, sort_keys=False))}</pre>']
    return page(run.name, "".join(body), nav, run.name)


def _subnav(sub: list[tuple[str, str]], current: str) -> str:
    return "<p>" + " · ".join(f"<strong>{escape(label)}</strong>" if label == current else
                              f'<a href="{escape(href)}">{escape(label)}</a>' for label, href in sub) + "</p>"


def explorer_page(run: RunSummary, sid_data: dict, nav: list, sub: list) -> str:
    body = (_subnav(sub, "semantic IDs") +
            f'<p class="note">{len(sid_data["ids"])} items, {sid_data["levels"]} levels (codebooks '
            f'{escape(str(sid_data["codebook_sizes"]))}). Click a code to descend; search an item by id or title.</p>'
            '<div id="explorer"><div class="panel"><h2>Code tree</h2><div id="tree"></div></div>'
            '<div class="panel"><h2>Find an item</h2><input type="search" id="search" placeholder="item id or title">'
            '<div id="results"></div><div id="detail"></div></div></div>'
            f'<script type="application/json" id="sid-data">{_script_json(sid_data)}</script>')
    return page(f"{run.name}: semantic-ID explorer", body, nav, run.name, [_asset("explorer.js")])


def _prefix_summary(recs: list[dict]) -> str:
    """The beam's prefixes: the distinct code prefixes among the top-k at each level, with how many items each leads to."""
    if not recs or "code" not in recs[0]:
        return ""
    levels = len(recs[0]["code"])
    lines = []
    for level in range(1, levels):
        counts: dict[tuple, int] = {}
        for r in recs:
            key = tuple(r["code"][:level])
            counts[key] = counts.get(key, 0) + 1
        lines.append(f"level {level}: " + ", ".join(f"&lt;{' '.join(map(str, k))}&gt; ×{v}" for k, v in counts.items()))
    return '<p class="note code">prefixes of the top-k: ' + "<br>".join(lines) + "</p>"


def users_page(run: RunSummary, users: list[dict], nav: list, sub: list) -> str:
    generative = any("code_log_probs" in r for u in users for r in u["recommendations"])
    explain = {"tiger": "Scores are the beam's log-probabilities (SID tokens + eos); per-code columns are the decoder's "
                        "log-probability of each token given the earlier ones (the beam's path).",
               "asymrec": "Scores are exact sums of the heads' code log-probabilities; per-code columns are each "
                          "head's log-probability of the item's code (the dedup code is not scored)."}.get(run.model, "")
    parts = [_subnav(sub, "users"),
             f'<p class="note">A fixed, seeded sample of users per split. {escape(explain)}</p>']
    for i, u in enumerate(users):
        if i == 0 or u["part"] != users[i - 1]["part"]:
            parts.append(f'<h2>{escape(u["part"])} users</h2>')
        hit = f"hit at rank {u['hit_rank']}" if u["hit_rank"] else "no hit in the top-10"
        rows = []
        for r in u["recommendations"]:
            cells = [f"<td>{r['rank']}</td><td>{escape(r['id'])}</td><td>{escape(r['title'])}</td>",
                     f'<td class="num">{r["score"]:.4f}</td>']
            if "code" in r:
                cells.append(f'<td class="code">{escape(" ".join(map(str, r["code"])))}</td>')
            if generative:
                cells.append(f'<td class="code">{escape(" ".join(f"{v:.2f}" for v in r.get("code_log_probs", [])))}</td>')
            rows.append(f'<tr class="{"hit" if r["hit"] else ""}" data-item="{escape(r["id"])}">{"".join(cells)}</tr>')
        header = "<th>rank</th><th>item</th><th>title</th><th>score</th>" + \
                 ("<th>code</th>" if u["recommendations"] and "code" in u["recommendations"][0] else "") + \
                 ("<th>log p per code</th>" if generative else "")
        history = "".join(f"<li>{escape(h['id'])} — {escape(h['title'])}</li>" for h in u["history"][-20:])
        target = u["target"]
        parts.append(
            f'<details class="user" data-user="{escape(u["user"])}" data-part="{escape(u["part"])}"><summary>user {escape(u["user"])} · '
            f'{len(u["history"])} history items · {hit}</summary>'
            f'<h3>history (last 20, oldest first)</h3><ol>{history}</ol>'
            f'<h3>target</h3><p>{escape(target["id"])} — {escape(target["title"])}'
            + (f' <span class="code">&lt;{escape(" ".join(map(str, target["code"])))}&gt;</span>' if target.get("code") else "")
            + f'</p><h3>top-{len(u["recommendations"])}</h3><table class="recs"><thead><tr>{header}</tr></thead>'
              f'<tbody>{"".join(rows)}</tbody></table>{_prefix_summary(u["recommendations"])}</details>')
    return page(f"{run.name}: user inspector", "".join(parts), nav, run.name)


def gallery_page(run: RunSummary, units: list[dict], nav: list, sub: list) -> str:
    figures = "".join(
        f'<figure><img src="gallery/{escape(u["file"])}" alt="visual semantic unit of {escape(u["id"])}">'
        f'<figcaption><strong>{escape(u["id"])}</strong> {escape(u["title"])}<br>neighbours: '
        + "; ".join(f"{escape(n['id'])} {escape(n['title'])}" for n in u["neighbours"]) + "</figcaption></figure>"
        for u in units)
    body = (_subnav(sub, "CARD gallery") +
            '<p class="note">Each item rendered as CARD\'s visual semantic unit (picture, text, and its collaborative '
            f'neighbours in the strip), with the run\'s layout; a seeded sample of {len(units)} items.</p>'
            f'<div class="gallery">{figures}</div>')
    return page(f"{run.name}: CARD gallery", body, nav, run.name)


# --- comparison -----------------------------------------------------------------------------------

def _mean_std(values: list[float]) -> tuple[float | None, float]:
    values = [v for v in values if v is not None]
    if not values:
        return None, 0.0
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def groups_of(entries: list[Entry]) -> list[tuple[str, str, list[Entry]]]:
    """(data, label without seed, entries) in first-seen order: repeated seeds of one method together."""
    out: dict[tuple[str, str], list[Entry]] = {}
    for e in entries:
        out.setdefault((e.data, group_label(e.label)), []).append(e)
    return [(data, label, group) for (data, label), group in out.items()]


def comparison_page(entries: list[Entry], nav: list, title: str, source: str) -> str:
    if not entries:
        raise ReportError("nothing to compare: no runs or result rows")
    parts = [f'<p class="note">{escape(source)}. Test split, leave-one-out, full ranking; ± = standard deviation over '
             "seeds where a method ran with several.</p>"]
    for data in dict.fromkeys(e.data for e in entries):
        groups = [(label, g) for d, label, g in groups_of(entries) if d == data]
        rows = []
        for label, group in groups:
            cells = [label, ", ".join(str(e.seed) for e in group)]
            for key in ("recall@10", "ndcg@10", "recall@10_head", "recall@10_tail", "coverage@10"):
                mean, std = _mean_std([e.test.get(key) for e in group])
                cells.append("–" if mean is None else (f"{mean:.4f} ± {std:.4f}" if len(group) > 1 else f"{mean:.4f}"))
            epochs = [e.train.get("epochs") for e in group]
            seconds, _ = _mean_std([e.train.get("train_seconds") for e in group])
            cells += [", ".join(str(x) for x in epochs if x is not None) or "–", _num(seconds, 0)]
            link = next((e.page for e in group if e.page), None)
            if link:
                cells[0] = f'<a href="{escape(link)}">{escape(label)}</a>'
            rows.append(cells)
        head = "".join(f"<th>{h}</th>" for h in ["method", "seeds", "R@10", "N@10", "R@10 head", "R@10 tail",
                                                   "Cov@10", "epochs", "train s"])
        body = "".join("<tr>" + "".join(f"<td>{c if i == 0 else escape(str(c))}</td>" for i, c in enumerate(row)) + "</tr>"
                       for row in rows)
        parts.append(f"<h2>{escape(data)}</h2><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        labels = [label for label, _ in groups]

        def bars(key: str) -> BarGroup:
            stats = [_mean_std([e.test.get(key) for e in g]) for _, g in groups]
            return BarGroup(key, [m if m is not None else float("nan") for m, _ in stats], [s for _, s in stats])

        charts = [bar_chart(labels, [bars("recall@10"), bars("ndcg@10")], title=f"{data}: R@10 and N@10 (test)", y_label="value"),
                  bar_chart(labels, [bars("recall@10_head"), bars("recall@10_tail")], title=f"{data}: R@10 head vs tail",
                            y_label="recall@10")]
        runs = [e for _, g in groups for e in g if e.curve]
        names = [f"{e.label}" + (f" s{e.seed}" if e.seed is not None and group_label(e.label) != e.label else "") for e in runs]
        charts.append(line_chart([Series(n, [c[0] for c in e.curve], [c[2] for c in e.curve]) for n, e in zip(names, runs)],
                                 title=f"{data}: validation NDCG@10 by epoch", x_label="epoch", y_label="NDCG@10"))
        charts.append(line_chart([Series(n, [c[1] for c in e.curve], [c[2] for c in e.curve]) for n, e in zip(names, runs)],
                                 title=f"{data}: validation NDCG@10 by wall clock", x_label="seconds (training + validation)",
                                 y_label="NDCG@10"))
        parts.append(f'<div class="charts">{"".join(charts)}</div>')
    return page(title, "".join(parts), nav, title)


# --- the site ---------------------------------------------------------------------------------------

def build_site(run_dirs: Sequence[str | Path], out: str | Path, *, results: str | Path | None = None,
               users: int = 20, gallery: int = 12) -> list[Path]:
    """Write the site under `out`; returns the pages written. Everything is read first, so a bad
    run directory fails before any page is written."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ReportError(f"{out}: exists and is not a directory")
    skipped = [Path(d) for d in run_dirs if Path(d).is_file()]  # `runs/demo/*` also matches runs/demo/report.md
    runs = [read_run(d) for d in run_dirs if not Path(d).is_file()]
    if skipped:
        print(f"report: skipped {len(skipped)} file(s) that are not run directories: {', '.join(map(str, skipped))}")
    unique_names(runs)
    result_entries = read_results(results) if results is not None else []
    if not runs and not result_entries:
        raise ReportError("give at least one run directory or --results FILE")
    nav = [("index", "../../index.html")]
    top_nav = [("index", "index.html")]
    if len(runs) > 1:
        nav.append(("compare runs", "../../compare.html"))
        top_nav.append(("compare runs", "compare.html"))
    if result_entries:
        nav.append(("results", "../../results.html"))
        top_nav.append(("results", "results.html"))
    written = []
    for run in tqdm(runs, desc="report", unit="run", disable=len(runs) < 2):
        written += _write_run(run, out / "runs" / run.name, nav + [(run.name, "index.html")], users, gallery)
    entries = []
    for run in runs:
        entry = run.entry()
        entry.page = f"runs/{run.name}/index.html"
        entries.append(entry)
    if len(runs) > 1:
        write_page(out / "compare.html", comparison_page(entries, top_nav, "compare runs", f"{len(runs)} run directories"))
        written.append(out / "compare.html")
    if result_entries:
        write_page(out / "results.html", comparison_page(result_entries, top_nav, "results", f"results file {results}"))
        written.append(out / "results.html")
    index_rows = "".join(
        f'<tr><td><a href="runs/{escape(r.name)}/index.html">{escape(r.name)}</a></td><td>{escape(r.model)}</td>'
        f'<td>{escape(str(r.metrics.get("dataset")))}</td><td class="num">{_num((r.metrics.get("test") or {}).get("recall@10"))}</td>'
        f'<td class="num">{_num((r.metrics.get("test") or {}).get("ndcg@10"))}</td></tr>' for r in runs)
    index = (f'<p class="note">{len(runs)} runs' + (f", results file {escape(str(results))}" if results else "") + ".</p>" +
             (f"<table><thead><tr><th>run</th><th>model</th><th>data</th><th>R@10</th><th>N@10</th></tr></thead>"
              f"<tbody>{index_rows}</tbody></table>" if runs else ""))
    write_page(out / "index.html", page("runs", index, top_nav, "index"))
    return [out / "index.html", *written]


def _write_run(run: RunSummary, folder: Path, nav: list, users: int, gallery: int) -> list[Path]:
    from sidrec.reporting import inspect

    served = None
    if RunLayout(run.path).model.exists():
        from sidrec.serving.catalogue import open_run

        served = open_run(run.path)
    sub = [("overview", "index.html")]
    sids = inspect.run_sids(run.path) if served is not None else None
    sid_data = inspect.sid_table(served, sids) if sids is not None else None
    if sid_data:
        sub.append(("semantic IDs", "explorer.html"))
    user_rows = ([row for part in ("test", "valid") for row in inspect.inspect_users(served, sids, part, users)]
                 if served is not None and users else None)
    if user_rows is not None:
        sub.append(("users", "users.html"))
    units = inspect.card_gallery(served, folder / "gallery", gallery) if served is not None and run.is_card and gallery else None
    if units:
        sub.append(("CARD gallery", "gallery.html"))
    views = inspect.tokenizer_views(run.path)
    pages = {"index.html": run_page(run, views, nav, sub)}
    if sid_data:
        pages["explorer.html"] = explorer_page(run, sid_data, nav, sub)
    if user_rows is not None:
        pages["users.html"] = users_page(run, user_rows, nav, sub)
    if units:
        pages["gallery.html"] = gallery_page(run, units, nav, sub)
    for name, html in pages.items():
        write_page(folder / name, html)
    return [folder / name for name in pages]
