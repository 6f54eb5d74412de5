"""Benchmark AsymRec (MSP inputs, MHQ targets) against SASRec and most-popular, plus its ablations.

Per dataset: MiniLM text embeddings (sidrec.features TextEncoder, cached) -> MHQ semantic IDs
(dedup-resolved) -> models trained under a wall-clock budget with validation NDCG@10 selecting the
epoch (patience 3); the test split is read once per run. Also: ablations (SID inputs, one expert,
regression targets, MHQ without balance/orthogonality), TIGER (small preset, RQ-VAE SIDs of the same
text embeddings, same budget and learning rate), effective rank of the output hidden states
(discrete vs continuous targets) and a small M x L grid (scientific only). Histories are NOT
excluded from the ranking (EvalConfig default).

    .venv/bin/python benchmarks/asymrec.py [--budget 90] [--small-budget 45] [--threads 2]

Writes benchmarks/results/asymrec.{json,md}. Small budgets on a shared 2-core CPU: numbers are
under-trained relative to the papers and only comparable within this file.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from sidrec.cli import flush_subnormals
from sidrec.config import EvalConfig, TrainConfig
from sidrec.data import Dataset, load_dataset
from sidrec.evaluation import evaluate
from sidrec.features.embeddings import ItemEmbeddings
from sidrec.io import atomic_path, read_json, write_json
from sidrec.models import build_model
from sidrec.models.asymrec import effective_rank  # also registers "asymrec"
from sidrec.tokenizers import tokenize
from sidrec.training import Trainer

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SEED = 42
EVAL = EvalConfig(ks=[5, 10, 20], max_len=50)
MHQ = {"n_views": 8, "n_levels": 3, "codebook_size": 256, "epochs": 10, "seed": SEED}
ASYMREC = {"hidden": 64, "layers": 2, "heads": 2, "ffn": 256, "dropout": 0.2, "max_len": 50, "experts": 4,
           "expert_hidden": 128}
TIGER = {"preset": "small", "max_history": 20, "beam_width": 20}
RQVAE = {"n_levels": 3, "codebook_size": 256, "latent_dim": 32, "epochs": 100, "seed": SEED}
SASREC = {"hidden": 64, "layers": 2, "heads": 2, "ffn": 256, "dropout": 0.2, "max_len": 50}
GRID = [(m, levels) for m in (2, 4, 8) for levels in (1, 2, 3)]


def text_embeddings(ds: Dataset) -> ItemEmbeddings:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sidrec.features.text import TextEncoder

    encoder = TextEncoder(max_seq_length=128, show_progress=False, device="cpu",
                          cache_dir=ROOT / ".cache" / "sidrec" / "embeddings")
    return encoder.encode(ds.items)


def mhq_sids(emb: ItemEmbeddings, **options) -> tuple[object, dict]:
    """Fit MHQ, resolve collisions by dedup; summary of code quality (energy per view included)."""
    tok, sids, report = tokenize(emb, "mhq", "dedup", {**MHQ, **options})
    quality = tok.report(emb.vectors)
    summary = {
        "options": {k: tok.options[k] for k in ("n_views", "n_levels", "codebook_size", "proj_dim", "epochs",
                                                "balance_weight", "ortho_weight", "transform")},
        "fit_seconds": round(report["fit_seconds"], 1),
        "collision_rate_before": report["collision_rate_before"],
        "dedup_level_size": sids.info.get("dedup_level_size", 0),
        "mean_utilisation": sum(c["utilisation"] for c in quality["codes"]) / len(quality["codes"]),
        "mean_perplexity": sum(c["perplexity"] for c in quality["codes"]) / len(quality["codes"]),
        "energy_share_per_view": [round(e, 4) for e in quality["energy_share_per_view"]],
        "balance": quality["balance"],
        "ortho": quality["ortho"],
        "relative_recon_error": quality["relative_recon_error"],
    }
    return sids, summary


@torch.no_grad()
def output_rank(model, ds: Dataset) -> float:
    """Effective rank of the last-position hidden states on the validation histories."""
    _, histories, _ = ds.split("valid", EVAL.max_len)
    states = torch.cat([model.last_states(h) for h in histories.split(1024)])
    return effective_rank(states)


def run(ds: Dataset, label: str, name: str, options: dict, budget: float, threads: int, batch_size: int,
        **context) -> dict:
    torch.manual_seed(SEED)
    start = time.perf_counter()
    model = build_model(name, options, ds.n_items, **context)
    if name == "popularity":
        model.fit_counts(ds.item_popularity())
        summary = {"epochs": 0, "stopped": None}
    else:
        config = TrainConfig(epochs=200, batch_size=batch_size, lr=1e-3, patience=3, max_seconds=budget,
                             seed=SEED, num_threads=threads, progress=False)
        summary = Trainer(model, config).fit(model.make_batches(ds, batch_size),
                                             lambda m: evaluate(m, ds, "valid", EVAL))
    model.eval()
    out = {"label": label, "model": name, "options": options,
           "train": {k: summary.get(k) for k in ("epochs", "best_epoch", "stopped", "train_seconds")},
           "valid": evaluate(model, ds, "valid", EVAL),
           "test": evaluate(model, ds, "test", EVAL)}  # the one test read of this run
    if hasattr(model, "last_states"):
        out["effective_rank"] = output_rank(model, ds)
    out["seconds"] = round(time.perf_counter() - start, 1)
    t = out["test"]
    print(f"  {label:28s} valid N@10 {out['valid']['ndcg@10']:.4f}  test R@10 {t['recall@10']:.4f} "
          f"N@10 {t['ndcg@10']:.4f} tail R@10 {t['recall@10_tail']:.4f}  {out['seconds']}s", flush=True)
    return out


def bench_dataset(name: str, args) -> dict:
    ds = load_dataset(name)
    t0 = time.perf_counter()
    emb = text_embeddings(ds)
    embed_seconds = round(time.perf_counter() - t0, 1)
    sids, mhq = mhq_sids(emb)
    print(f"{name}: {ds.stats()} | MHQ {mhq}", flush=True)
    bs = 128 if ds.stats()["mean_length"] > 50 else 256
    ctx = {"embeddings": emb, "sids": sids}
    big, small = args.budget, args.small_budget
    runs = [
        run(ds, "popularity", "popularity", {}, 0, args.threads, bs),
        run(ds, "SASRec", "sasrec", SASREC, big, args.threads, bs),
        run(ds, "TIGER (RQ-VAE SIDs)", "tiger", TIGER, big, args.threads, bs,
            sids=tokenize(emb, "rqvae", "dedup", RQVAE)[1]),
        run(ds, "AsymRec (MSP + MHQ)", "asymrec", ASYMREC, big, args.threads, bs, **ctx),
        run(ds, "ablation: regression targets", "asymrec", {**ASYMREC, "targets": "regression"}, small,
            args.threads, bs, **ctx),
    ]
    result = {"dataset": name, "stats": ds.stats(), "embed": {"encoder": emb.encoder, "dim": emb.dim,
                                                              "seconds_incl_cache": embed_seconds},
              "mhq": mhq, "batch_size": bs, "runs": runs}
    if name not in args.ablations_on:
        return result
    runs += [
        run(ds, "ablation: SID inputs (symmetric)", "asymrec", {**ASYMREC, "inputs": "sid"}, small, args.threads,
            bs, **ctx),
        run(ds, "ablation: 1 expert", "asymrec", {**ASYMREC, "experts": 1}, small, args.threads, bs, **ctx),
    ]
    plain, plain_mhq = mhq_sids(emb, balance_weight=0.0, ortho_weight=0.0)
    result["mhq_no_balance_ortho"] = plain_mhq
    runs.append(run(ds, "ablation: MHQ w/o balance+ortho", "asymrec", ASYMREC, small, args.threads, bs,
                    embeddings=emb, sids=plain))
    if name not in args.grid_on:
        return result
    grid = []
    for m, levels in GRID:
        grid_sids, grid_mhq = (sids, mhq) if (m, levels) == (8, 3) else mhq_sids(emb, n_views=m, n_levels=levels)
        cell = run(ds, f"grid M={m} L={levels}", "asymrec", ASYMREC, small, args.threads, bs,
                   embeddings=emb, sids=grid_sids)
        grid.append({"M": m, "L": levels, "mhq": grid_mhq, **cell})
    best = max(grid, key=lambda c: c["valid"]["ndcg@10"])
    result["grid"] = grid
    result["grid_selected_on_valid"] = {"M": best["M"], "L": best["L"]}
    return result


def fmt(x: float | None) -> str:
    return "n/a" if x is None or x != x else f"{x:.4f}"


def markdown(results: dict) -> str:
    lines = ["# AsymRec benchmark", "",
             f"Generated {results['date']} on {results['machine']} ({results['threads']} torch threads, CPU), seed "
             f"{SEED}. Wall-clock budget per run: {results['budget']} s (main), {results['small_budget']} s "
             "(ablations, grid); early stopping on validation NDCG@10 (patience 3), best-validation epoch kept, "
             "test read once per run. Full-catalogue ranking, history items **not** excluded. Tail = the 80% "
             "least popular items (training counts). Item text: MiniLM-L6-v2 over title/brand/categories/"
             "description (ML-100K: title + genres), 384-d. MHQ: M=8 views x L=3 levels x K=256, D=128, "
             f"{results['mhq_epochs']} epochs (batch 256); codes dedup-resolved. No hyper-parameter tuning for any model.", ""]
    for res in results["datasets"]:
        s, q = res["stats"], res["mhq"]
        lines += [f"## {res['dataset']}", "",
                  f"{s['users']} users, {s['items']} items, {s['interactions']} interactions; batch "
                  f"{res['batch_size']}. MHQ fit {q['fit_seconds']} s: collisions before dedup "
                  f"{q['collision_rate_before']:.4f}, mean utilisation {q['mean_utilisation']:.3f}, mean perplexity "
                  f"{q['mean_perplexity']:.1f}, energy share per view {q['energy_share_per_view']}, balance "
                  f"{q['balance']:.3f}, ortho {q['ortho']:.4f}, relative recon error {q['relative_recon_error']:.3f}.",
                  "", "| run | valid N@10 | test R@10 | test N@10 | R@10 head | R@10 tail | cov@10 | eff. rank | "
                  "epochs (best) | stop | s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in res["runs"]:
            t, tr = r["test"], r["train"]
            lines.append(f"| {r['label']} | {fmt(r['valid']['ndcg@10'])} | {fmt(t['recall@10'])} | "
                         f"{fmt(t['ndcg@10'])} | {fmt(t['recall@10_head'])} | {fmt(t['recall@10_tail'])} | "
                         f"{fmt(t['coverage@10'])} | {fmt(r.get('effective_rank'))} | {tr['epochs']} "
                         f"({tr.get('best_epoch')}) | {tr.get('stopped') or '-'} | {r['seconds']} |")
        if "grid" in res:
            lines += ["", "M x L grid (AsymRec, same budget as the ablations; selected on validation: "
                      f"M={res['grid_selected_on_valid']['M']}, L={res['grid_selected_on_valid']['L']}):", "",
                      "| M | L | codes | collisions | valid N@10 | test N@10 | test R@10 tail |", "|---|---|---|---|---|---|---|"]
            for c in res["grid"]:
                lines.append(f"| {c['M']} | {c['L']} | {c['M'] * c['L']} | {c['mhq']['collision_rate_before']:.4f} | "
                             f"{fmt(c['valid']['ndcg@10'])} | {fmt(c['test']['ndcg@10'])} | "
                             f"{fmt(c['test']['recall@10_tail'])} |")
        if "mhq_no_balance_ortho" in res:
            p = res["mhq_no_balance_ortho"]
            lines += ["", f"MHQ without balance/orthogonality: energy share per view {p['energy_share_per_view']}, "
                      f"balance {p['balance']:.3f}, relative recon error {p['relative_recon_error']:.3f}, collisions "
                      f"{p['collision_rate_before']:.4f}."]
        lines.append("")
    lines += ["## Reading", "", results.get("notes", "").strip(), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=90.0, help="seconds per main training run")
    parser.add_argument("--small-budget", type=float, default=45.0, help="seconds per ablation / grid run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--datasets", nargs="+", default=["amazon-scientific", "ml-100k"])
    parser.add_argument("--notes", type=Path, default=None, help="markdown file appended as the 'Reading' section")
    parser.add_argument("--render-only", action="store_true", help="rewrite asymrec.md from asymrec.json (+ notes)")
    parser.add_argument("--ablations-on", nargs="*", default=["amazon-scientific"],
                        help="datasets that also get the SID-input / 1-expert / plain-MHQ ablations")
    parser.add_argument("--grid-on", nargs="*", default=["amazon-scientific"],
                        help="datasets (among --ablations-on) that also get the M x L grid")
    parser.add_argument("--mhq-epochs", type=int, default=MHQ["epochs"])
    args = parser.parse_args()
    MHQ["epochs"] = args.mhq_epochs
    if args.render_only:
        results = read_json(RESULTS / "asymrec.json")
        if args.notes is not None:
            results["notes"] = args.notes.read_text()
            write_json(RESULTS / "asymrec.json", results)
        with atomic_path(RESULTS / "asymrec.md") as tmp:
            tmp.write_text(markdown(results))
        return
    flush_subnormals()  # as the sidrec command does (subnormal activations slow training ~1.8x)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    results = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
               "threads": args.threads, "budget": args.budget, "small_budget": args.small_budget, "seed": SEED,
               "mhq_epochs": MHQ["epochs"],
               "eval": EVAL.model_dump(), "datasets": [bench_dataset(name, args) for name in args.datasets]}
    results["total_seconds"] = round(time.perf_counter() - start, 1)
    if args.notes is not None:
        results["notes"] = args.notes.read_text()
    write_json(RESULTS / "asymrec.json", results)
    with atomic_path(RESULTS / "asymrec.md") as tmp:
        tmp.write_text(markdown(results))
    print(f"total {results['total_seconds']} s -> {RESULTS / 'asymrec.md'}")


if __name__ == "__main__":
    main()
