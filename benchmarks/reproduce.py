"""Converged results on the papers' benchmarks, reported as the papers' table.

    .venv/bin/python benchmarks/reproduce.py --data amazon-beauty --models sasrec asymrec --seeds 42 43 44
    .venv/bin/python benchmarks/reproduce.py --render-only

Every (data, model, seed) is an ordinary `sidrec.pipeline.run` of the preset `<model>` (src/sidrec/configs/<model>.yaml)
or of a named variant of one (`VARIANTS`: a preset plus overrides, e.g. TIGER's history-once mode;
no private fit loop, no private hyper-parameters), trained to early stopping on validation
NDCG@10. Rows are appended to benchmarks/results/reproduce.json one run at a time, so the table
grows over several sessions: a finished row is never rerun, an interrupted run continues from its
checkpoint (`--resume` semantics of the pipeline). Writes reproduce.md and one PNG per dataset
(validation NDCG@10 against wall-clock seconds of training + validation), and the README's
converged table (between its `reproduce-table` markers). `reproduce-reading.md`, if present, is
appended to the table as its "Reading" (what was investigated; the figures stay in the table).
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import statistics
from pathlib import Path

import torch

from sidrec import pipeline
from sidrec.cli import flush_subnormals
from sidrec.config import load_config, resolve_preset
from sidrec.data import Dataset
from sidrec.io import atomic_path, read_json, write_json
from sidrec.reporting.collect import curve_of
from sidrec.reporting.inspect import tokenizer_views
from sidrec.rundir import RunLayout
from sidrec.semantic_ids import SemanticIDs
from sidrec.tokenizers.metrics import prefix_agreement
from provenance import replace_marked, run_facts

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "reproduce"
MODELS = ["popularity", "sasrec", "tiger", "tiger_history_once", "tiger_grid", "tiger_grid_fast", "tiger_nurqvae",
          "tiger_grid_nurqvae", "tiger_grid_fast_rqvae", "tiger_grid_fast_nurqvae",
          "tiger_grid_fast_nurqvae_raw",
          "card", "card_history_once", "card_grid_fast", "rpg", "rpg_heads", "asymrec", "asymrec_rpg_heads",
          "asymrec_rpg_size", "asymrec_sid_inputs", "asymrec_regression", "asymrec_plain_mhq", "card_asymrec"]
# Named variants of a preset: (preset, overrides), stated in the run's config.yaml like any --set.
HISTORY_ONCE = ["model.sample_mode=history_once", "train.batch_size=128"]  # same accuracy as per-prefix, cheaper
# CARD's quantizer (NU-RQ-VAE 4 x 256, Sinkhorn last level) under the GRID recipe: against `tiger_grid` only the IDs differ.
NU_RQ_VAE = ["tokenize.name=nurqvae", "tokenize.resolution=sinkhorn", "tokenize.n_levels=4"]
# Its control: RQ-VAE with every NU-RQ-VAE setting but the transform (4 x 256, standardised inputs, Sinkhorn on the
# last level in training and for collisions, epoch chosen by collision rate): CARD's quantizer claim is this pair.
RQ_VAE_CONTROL = ["tokenize.name=rqvae", "tokenize.resolution=sinkhorn", "tokenize.n_levels=4", "tokenize.standardize_input=true",
                  "tokenize.sinkhorn_last=true", "tokenize.select=collisions"]
# NU-RQ-VAE on the raw text embeddings: its input standardisation (on by default, for CARD's near-identical unit
# embeddings) raised 3 x 256 collisions on text from .0067 to .0350 in tokenizers.md; this asks whether it costs TIGER.
RAW_INPUTS = ["tokenize.standardize_input=false"]
# The GRID recipe inside the 60-minute budget: twice its lr, annealed to 0 by a cosine over 16 epochs (the same
# mean lr as its constant 5e-4), validated every 2nd epoch.
FAST = ["train.lr=0.001", "train.schedule=cosine", "train.warmup_steps=100", "train.epochs=16", "train.eval_every=2"]
# CARD (its unit images, NU-RQ-VAE 4 x 256, the paper's generator) trained by the recipe above: against
# `tiger_grid_fast_nurqvae` only the item embeddings differ (CARD's unit images instead of the item text).
GRID_FAST_TRAINING = HISTORY_ONCE + ["train.weight_decay=0.000001"] + FAST
# AsymRec's ablations at convergence, for the papers' claims: SID inputs instead of MSP (the tail-item claim),
# regression onto the embeddings instead of MHQ codes (the collapse claim: effective rank of the output states).
SID_INPUTS = ["model.inputs=sid"]
REGRESSION = ["model.targets=regression"]
RPG_HEADS = ["model.head_type=rpg"]  # RPG's heads: residual MLP per code position, cosine logits vs tied code embeddings
# The network RPG reports on Beauty (hidden 448, 2 layers, 4 heads, FFN 1024, dropout 0.5, max length 50; the
# asymrec preset has the layers and length already), for picking AsymRec's size on validation.
RPG_SIZE = ["model.hidden=448", "model.heads=4", "model.ffn=1024", "model.dropout=0.5"]
PLAIN_MHQ = ["tokenize.balance_weight=0", "tokenize.ortho_weight=0"]  # MHQ without its balance and orthogonality terms
VARIANTS = {"tiger_history_once": ("tiger", HISTORY_ONCE), "card_history_once": ("card", HISTORY_ONCE),
            "tiger_grid_nurqvae": ("tiger_grid", NU_RQ_VAE), "tiger_grid_fast": ("tiger_grid", FAST),
            "tiger_grid_fast_nurqvae": ("tiger_grid", FAST + NU_RQ_VAE),
            "tiger_grid_fast_rqvae": ("tiger_grid", FAST + RQ_VAE_CONTROL),
            "tiger_grid_fast_nurqvae_raw": ("tiger_grid", FAST + NU_RQ_VAE + RAW_INPUTS),
            "card_grid_fast": ("card", GRID_FAST_TRAINING),
            "asymrec_sid_inputs": ("asymrec", SID_INPUTS), "asymrec_regression": ("asymrec", REGRESSION),
            "asymrec_plain_mhq": ("asymrec", PLAIN_MHQ), "rpg_heads": ("rpg", RPG_HEADS),
            "asymrec_rpg_heads": ("asymrec", RPG_HEADS), "asymrec_rpg_size": ("asymrec", RPG_SIZE)}
METRICS = ["recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20",
           "recall@10_head", "recall@10_tail", "coverage@10"]
LABELS = ["R@5", "R@10", "R@20", "N@5", "N@10", "N@20", "R@10 head", "R@10 tail", "Cov@10"]
# Published figures (test, full ranking, leave-one-out): R@5, R@10, N@5, N@10.
PUBLISHED = {
    "amazon-beauty": [("TIGER (paper)", .0454, .0648, .0321, .0384), ("TIGER (best repro, GRID)", .0452, .0655, .0304, .0369),
                      ("RPG (paper)", .0550, .0809, .0381, .0464), ("ActionPiece (paper)", .0511, .0775, .0340, .0424),
                      ("SASRec CE (tuned repro)", .0508, .0740, .0348, .0423)],
    "amazon-sports": [("TIGER (paper)", .0264, .0400, .0181, .0225), ("RPG (paper)", .0314, .0463, .0216, .0263)],
}
DATA_NOTES = {"amazon-beauty": "item text: full product title + category path (`items.jsonl` as of 2026-12)",
              "amazon-sports": "item text: short title fragment only",
              "amazon-scientific": "item text: title, description, brand, categories",
              "ml-1m": "item text: title + genres"}


def make_row(data: str, model: str, seed: int, metrics: dict, run_dir: Path, info: dict) -> dict:
    train = metrics["train"]
    log = RunLayout(run_dir).train_log
    history = read_json(log).get("history", []) if log.exists() else []
    points = curve_of(history)
    best = train.get("best_epoch")
    return {
        "data": data, "model": model, "seed": seed,
        "test": {k: metrics["test"][k] for k in METRICS}, "valid": {k: metrics["valid"][k] for k in METRICS},
        "epochs": train.get("epochs"), "best_epoch": best, "stopped": train.get("stopped") or ("closed form" if best is None else "max epochs"),
        "train_seconds": train.get("train_seconds"), "seconds_per_epoch": train.get("seconds_per_epoch"),
        "seconds_to_best": next((wall for epoch, wall, _ in points if epoch == best), None),
        "stage_seconds": metrics.get("stage_seconds", {}), "total_seconds": metrics["seconds"],
        "select_users": metrics["config"]["eval"].get("select_users"), "curve": points,
        "run_dir": str(run_dir.relative_to(ROOT)) if run_dir.is_relative_to(ROOT) else str(run_dir),
        "date": datetime.date.today().isoformat(), **info,
        "diagnostics": metrics.get("diagnostics", {}), "codes": code_summary(run_dir),
    }


def code_summary(run_dir: Path) -> dict:
    """Per-level utilisation, perplexity and Gini of the run's semantic IDs before collision resolution and their
    collision rate (the tokenize stage's report: CARD's codebook-balance claim), MHQ's energy share per view, and
    the prefix agreement of the resolved IDs with the training transitions."""
    layout = RunLayout(run_dir)
    if not layout.sids_report.exists():
        return {}
    report = read_json(layout.sids_report)
    out = {key: [round(level[key], 4) for level in report["levels"]] for key in ("utilisation", "perplexity", "gini")}
    out["collision_rate_before"] = report["collision_rate_before"]
    if report["tokenizer"] == "mhq":  # the energy share needs the fitted projection (recomputed from the stage)
        out["energy_share_per_view"] = [round(e, 4) for e in tokenizer_views(run_dir)["energy_share_per_view"]]
    agreement = prefix_agreement(SemanticIDs.load(layout.sids).codes, *Dataset.load(layout.snapshot).train_sequences())
    out["prefix_agreement"] = [round(a["next_item"], 4) for a in agreement]
    out["prefix_chance"] = [round(a["chance"], 5) for a in agreement]
    return out


def refresh(row: dict) -> dict:
    """Fill a row's diagnostics and code summary from its run directory, for rows written before they (or one
    of their figures) existed."""
    run_dir = ROOT / row["run_dir"]
    if "prefix_agreement" not in row.get("codes", {}) and RunLayout(run_dir).model.exists():
        config, dataset, model = pipeline.load_run(run_dir)
        row = {**row, "diagnostics": model.diagnostics(dataset, config.eval.max_len), "codes": code_summary(run_dir)}
    return row


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def render(rows: list[dict], out: Path) -> None:
    """Rewrite reproduce.md and the per-dataset plots from all rows."""
    lines = ["# Converged results (`benchmarks/reproduce.py`)", "",
             "Regenerated from `reproduce.json` by the script. Each row: the preset `<model>` (src/sidrec/configs/<model>.yaml), trained "
             "until early stopping on validation NDCG@10 (no wall-clock budget unless `stopped` says so). Test split: "
             "leave-one-out, all users, full-catalogue ranking, history items NOT excluded; the test split is read once. "
             "Metrics are mean ± std over the listed seeds (a single value = one seed). `select users` = size of the "
             "fixed, seeded sample of validation users that picks the epoch (– = all). Seconds: s/epoch = training only; "
             "to best / train = wall clock of training + validation up to the best / last epoch. 2-core CPU, one job at a time.", ""]
    for data in dict.fromkeys(r["data"] for r in rows):
        group = [r for r in rows if r["data"] == data]
        lines += [f"## {data}", "", DATA_NOTES.get(data, ""), "",
                  "| model | seeds | " + " | ".join(LABELS) + " | epochs | best epoch | stopped | s/epoch | to best s | train s | select users |",
                  "|---|---|" + "---|" * len(LABELS) + "---|---|---|---|---|---|---|"]
        for model in [m for m in MODELS if any(r["model"] == m for r in group)] + \
                sorted({r["model"] for r in group} - set(MODELS)):
            runs = [r for r in group if r["model"] == model]
            cells = [mean_std([r["test"][k] for r in runs]) for k in METRICS]
            def cell(key, fmt="{:.0f}"):
                values = [r[key] for r in runs if r.get(key) is not None]
                return "/".join(fmt.format(v) for v in values) if values else "–"
            lines.append(f"| {model} | {','.join(str(r['seed']) for r in runs)} | " + " | ".join(cells) +
                         f" | {cell('epochs')} | {cell('best_epoch')} | {'; '.join(dict.fromkeys(r['stopped'] for r in runs))} | "
                         f"{cell('seconds_per_epoch', '{:.1f}')} | {cell('seconds_to_best')} | {cell('train_seconds')} | "
                         f"{runs[0].get('select_users') or '–'} |")
        if data in PUBLISHED:
            lines += ["", "Published (R@5 / R@10 / N@5 / N@10): " + "; ".join(
                f"{name} {r5:.4f} / {r10:.4f} / {n5:.4f} / {n10:.4f}" for name, r5, r10, n5, n10 in PUBLISHED[data]) + "."]
        lines += mechanisms(group)
        lines += ["", "<details><summary>runs (seed, commit, date, CPU, threads)</summary>", "",
                  "| model | seed | commit | date | CPU | threads | run |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['model']} | {r['seed']} | {r['commit']} | {r['date']} | {r['cpu']} | {r['threads']} | `{r['run_dir']}` |"
                  for r in group]
        lines += ["", "</details>", "", f"![validation NDCG@10 vs seconds, {data}](reproduce-{data}.png)", ""]
        plot(group, out.parent / f"reproduce-{data}.png", data)
    reading = out.parent / f"{out.name}-reading.md"  # what was investigated, written by a person; numbers live above
    if reading.exists():
        lines += ["## Reading", "", reading.read_text().strip(), ""]
    with atomic_path(out.with_suffix(".md")) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    if out == RESULTS:
        update_readme(rows)


def mechanisms(group: list[dict]) -> list[str]:
    """The claims' figures per run: effective rank of the output states (collapse), per-level code usage of the
    semantic IDs before resolution (codebook balance), MHQ's energy share per view, and how often the next item
    of a training sequence shares its first codes with the current one (what the ID hierarchy gives a generator)."""
    measured = [r for r in group if r.get("diagnostics") or r.get("codes")]
    if not measured:
        return []
    def levels(values):
        if not values:
            return "–"
        fmt = "{:.2f}" if max(values) < 10 else "{:.0f}"
        if len(values) <= 6:
            return " / ".join(fmt.format(v) for v in values)
        return (f"{len(values)} levels: mean {fmt.format(statistics.mean(values))}, "
                f"{fmt.format(min(values))}–{fmt.format(max(values))}")
    lines = ["", "Mechanisms: usage and collisions of the semantic IDs before collision resolution; effective rank of "
             "the output states at the validation histories; how often consecutive items of the training sequences share "
             "their first 1 / 2 / 3 codes (resolved IDs), against a random pair:", "",
             "| model | seed | eff. rank | utilisation / level | perplexity / level | Gini / level | collisions | MHQ energy share | "
             "next item shares 1 / 2 / 3 codes (chance) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in measured:
        codes, rank = r.get("codes", {}), r.get("diagnostics", {}).get("effective_rank")
        collisions, energy = codes.get("collision_rate_before"), codes.get("energy_share_per_view")
        cells = [f"{rank:.1f}" if rank is not None else "–", *(levels(codes.get(k)) for k in ("utilisation", "perplexity", "gini")),
                 f"{collisions:.4f}" if collisions is not None else "–", f"{min(energy):.3f}–{max(energy):.3f}" if energy else "–",
                 " / ".join(f"{a:.4f} ({c:.4f})" for a, c in zip(codes["prefix_agreement"][:3], codes["prefix_chance"][:3]))
                 if "prefix_agreement" in codes else "–"]
        lines.append(f"| {r['model']} | {r['seed']} | " + " | ".join(cells) + " |")
    return lines


def headline(rows: list[dict]) -> str:
    """The README's converged table: test R@10 / N@10 (mean ± std over seeds), tail, cost."""
    lines = ["| data | model | seeds | R@10 | N@10 | R@10 tail | Cov@10 | best / last epoch | stopped | to best s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for data in dict.fromkeys(r["data"] for r in rows):
        for model in MODELS + sorted({r["model"] for r in rows} - set(MODELS)):
            runs = [r for r in rows if (r["data"], r["model"]) == (data, model)]
            if not runs:
                continue
            trained = [r for r in runs if r["best_epoch"]]
            epochs = " / ".join("/".join(str(r[k]) for r in trained) for k in ("best_epoch", "epochs")) if trained else "–"
            to_best = "/".join(f"{r['seconds_to_best']:.0f}" for r in runs if r.get("seconds_to_best")) or "–"
            lines.append(f"| {data} | {model} | {','.join(str(r['seed']) for r in runs)} | "
                         + " | ".join(mean_std([r["test"][k] for r in runs]) for k in ("recall@10", "ndcg@10", "recall@10_tail", "coverage@10"))
                         + f" | {epochs} | {'; '.join(dict.fromkeys(r['stopped'] for r in runs))} | {to_best} |")
    return "\n".join(lines)


def update_readme(rows: list[dict], readme: Path = ROOT / "README.md") -> None:
    """Replace the block between the README's reproduce-table markers with `headline(rows)`."""
    replace_marked(readme, "reproduce-table", headline(rows))


def plot(rows: list[dict], path: Path, data: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    colours = dict(zip(MODELS, itertools.cycle(plt.get_cmap("tab20").colors)))
    for r in rows:
        if r["curve"]:
            _, wall, ndcg = zip(*r["curve"])
            ax.plot(wall, ndcg, marker=".", color=colours.get(r["model"]), alpha=0.85,
                    label=r["model"] if r["seed"] == min(x["seed"] for x in rows if x["model"] == r["model"]) else None)
        else:  # closed form: one point at its fit time
            ax.axhline(r["valid"]["ndcg@10"], ls=":", color=colours.get(r["model"]), label=r["model"])
    ax.set(xlabel="wall-clock seconds (training + validation)", ylabel="validation NDCG@10", title=data)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", default=["amazon-beauty"])
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[42])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], help="overrides applied to every run (stated in the run's config)")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "reproduce")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--render-only", action="store_true", help="rewrite reproduce.md and plots from reproduce.json")
    parser.add_argument("--refresh", action="store_true",
                        help="fill diagnostics and code usage of rows written before they were recorded, from their runs")
    args = parser.parse_args()
    flush_subnormals()
    torch.set_num_threads(args.threads)
    json_path = args.out.with_suffix(".json")
    rows = read_json(json_path) if json_path.exists() else []
    if args.refresh:
        rows = [refresh(r) for r in rows]
        write_json(json_path, rows)
    if not args.render_only:
        info = run_facts("src", "benchmarks/*.py")  # code only: the results a previous row wrote do not mark it
        for data in args.data:
            for model in args.models:
                for seed in args.seeds:
                    if any((r["data"], r["model"], r["seed"]) == (data, model, seed) for r in rows):
                        print(f"{data} {model} seed {seed}: in {json_path.name} already", flush=True)
                        continue
                    preset, variant = VARIANTS.get(model, (model, []))
                    overrides = [f"data.name={data}", f"train.seed={seed}", "train.progress=false", *variant, *args.set]
                    config = load_config(resolve_preset(preset), overrides)
                    run_dir = args.runs / f"{data}-{model}-seed{seed}"
                    metrics = pipeline.run(config, run_dir, resume=RunLayout(run_dir).checkpoints.exists())
                    rows.append(make_row(data, model, seed, metrics, run_dir, info))
                    print(f"{data} {model} seed {seed}: test R@10 {metrics['test']['recall@10']:.4f} "
                          f"N@10 {metrics['test']['ndcg@10']:.4f} ({metrics['seconds']:.0f} s)", flush=True)
                    write_json(json_path, rows)
                    render(rows, args.out)
    render(rows, args.out)
    print(args.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
