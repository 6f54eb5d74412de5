"""The `sidrec` command line: one typer app over the pipeline stages."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Optional

import click
import torch
import typer
from rich.console import Console
from rich.markup import escape
from typer.exceptions import TyperException
from rich.table import Table

from sidrec import pipeline
from sidrec.config import AlgorithmSpec, ConfigError, RunConfig, env_flag, load_config, resolve_preset
from sidrec.data import DATASETS, DataFormatError, load_dataset
from sidrec.evaluation import evaluate
from sidrec.evaluation.report import results_table
from sidrec.io import ArtifactError, atomic_path, write_json
from sidrec.manifest import verify_run, write_manifest
from sidrec.rundir import RunDirError, RunLayout

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Generative recommendation with Semantic IDs: prepare data, train, evaluate, serve.")
console = Console()
DEMO_PRESETS = ["popularity", "sasrec", "tiger", "card", "asymrec", "card_asymrec"]
# The demo's own small, epoch-bounded settings on ML-100K (no wall-clock budget): the same table on
# any machine, fast or slow, in 7-8 minutes on 2 cores. The presets themselves train to convergence.
# TIGER and CARD use the small generator in history_once mode: ML-100K histories are long, so one
# encoder pass per window instead of one per prefix makes an epoch ~9x cheaper (per-prefix epochs of
# the small generator took ~165 s here). The demo turns their dropout off: attention then runs in SDPA's
# fused kernel instead of materialising the weights to drop them (a step 1.4x cheaper in one measurement).
_SMALL_TIGER = ["model.preset=small", "model.sample_mode=history_once", "train.batch_size=128", "train.lr=0.005",
                "train.warmup_steps=100", "train.precision=fp32", "eval.select_users=null", "model.dropout=0.0"]
DEMO_OVERRIDES: dict[str, list[str]] = {
    "sasrec": ["train.epochs=20"],
    "tiger": [*_SMALL_TIGER, "train.epochs=3"],
    "card": [*_SMALL_TIGER, "train.epochs=3", "collaborative.train.epochs=10"],
    "asymrec": ["train.epochs=10"],
    "card_asymrec": ["train.epochs=5", "collaborative.train.epochs=10"],
}

SetOption = typer.Option(None, "--set", "-s", help="dotted override, e.g. --set train.lr=1e-3 (repeatable)")


def _config(config: Optional[str], overrides: Optional[list[str]]) -> RunConfig:
    return load_config(resolve_preset(config) if config else None, overrides or [])


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="log every epoch")) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


@app.command()
def datasets(data_dir: str = typer.Option("../shared/data", help="folder with the amazon-* datasets")) -> None:
    """List the named datasets and whether their files are available here."""
    table = Table("name", "description", "available")
    for name, sources in DATASETS.items():
        description = DATASETS.describe(name)
        if name == "custom":
            table.add_row(name, description, "–")
            continue
        try:
            files, _ = sources(RunConfig().data.model_copy(update={"name": name, "data_dir": data_dir}))
            ok = all(f.exists() for f in files if not f.name.endswith(".item"))
        except DataFormatError:
            ok = False
        table.add_row(name, description, "yes" if ok else "no")
    console.print(table)


@app.command()
def prepare(config: Optional[str] = typer.Argument(None, help="preset name or YAML file"),
            data: Optional[str] = typer.Option(None, "--data", help="dataset name (shortcut for --set data.name=..)"),
            overrides: Optional[list[str]] = SetOption) -> None:
    """Read, filter, split and cache a dataset; print its statistics."""
    overrides = (overrides or []) + ([f"data.name={data}"] if data else [])
    dataset = load_dataset(_config(config, overrides).data)
    table = Table("statistic", "value", title=f"dataset {dataset.name}")
    for key, value in dataset.stats().items():
        table.add_row(key, f"{value:,}" if isinstance(value, int) else str(value))
    console.print(table)


@app.command()
def train(config: str = typer.Argument(..., help="preset name or YAML file"),
          out: Path = typer.Option(..., "--out", help="run directory"),
          overrides: Optional[list[str]] = SetOption,
          resume: bool = typer.Option(False, "--resume", help="continue from RUN_DIR/checkpoints/last")) -> None:
    """Train the configured model (validation selects the epoch); the test split is not read."""
    cfg = _config(config, overrides)
    with pipeline.writing(cfg, out, resume):
        _, summary = pipeline.train(cfg, pipeline.build_artifacts(cfg, out, resume=resume), out, resume=resume)
        if pipeline.rank_and_world()[0] == 0:
            write_manifest(out)
    console.print({k: v for k, v in summary.items() if k != "history"})


@app.command("evaluate")
def evaluate_command(run_dir: Path = typer.Argument(..., help="run directory made by `train` or `run`"),
                     split: str = typer.Option("valid", help="valid or test"),
                     exclude_history: Optional[bool] = typer.Option(None, help="override eval.exclude_history")) -> None:
    """Evaluate a trained run on the validation (default) or test split (its manifest is checked first)."""
    layout = RunLayout(run_dir)
    if not layout.manifest.exists():
        raise ArtifactError(f"{run_dir}: no {layout.manifest.name}, so not a finished run (it is written when `run` or `train` ends)")
    verify_run(run_dir)
    cfg, dataset, model = pipeline.load_run(run_dir)
    eval_config = cfg.eval if exclude_history is None else cfg.eval.model_copy(update={"exclude_history": exclude_history})
    metrics = evaluate(model, dataset, split, eval_config, progress=True)
    write_json(layout.evaluation(split), metrics)
    console.print(metrics)


def _run_dir_config(run_dir: Path, config: Optional[str], overrides: Optional[list[str]],
                    section: str, name: Optional[str]) -> RunConfig:
    """The run directory's own config (else a preset), with `section` switched to algorithm `name`."""
    saved = RunLayout(run_dir).config
    source = saved if saved.exists() and not config else None
    raw = load_config(source or (resolve_preset(config) if config else None)).model_dump(mode="json")
    if name:
        if (raw.get(section) or {}).get("name") != name:
            raw[section] = None  # a new algorithm starts from its own defaults
        overrides = [f"{section}.name={name}", *(overrides or [])]
    raw = {key: value for key, value in raw.items() if value is not None}
    cfg = load_config(None, overrides or [], base=raw)
    if getattr(cfg, section) is None:
        raise ConfigError(f"no `{section}` section in the config: pass --{'encoder' if section == 'embed' else 'tokenizer'}")
    run_dir.mkdir(parents=True, exist_ok=True)
    pipeline.save_config(cfg, saved)
    return cfg


@app.command()
def embed(run_dir: Path = typer.Argument(..., help="run directory (created if missing)"),
          encoder: Optional[str] = typer.Option(None, help="text | image | card | fusion | collaborative"),
          config: Optional[str] = typer.Option(None, "--config", help="preset or YAML (default: RUN_DIR/config.yaml)"),
          overrides: Optional[list[str]] = SetOption) -> None:
    """Encode every item of the dataset into RUN_DIR/embed/embeddings.safetensors."""
    cfg = _run_dir_config(run_dir, config, overrides, "embed", encoder)
    art = pipeline.build_artifacts(cfg, run_dir, until="embed")
    console.print(f"{art.embeddings.encoder}: {art.embeddings.n_items} items x {art.embeddings.dim} "
                  f"-> {RunLayout(run_dir).embeddings} ({art.seconds})")


@app.command()
def tokenize(run_dir: Path = typer.Argument(..., help="run directory (created if missing)"),
             tokenizer: Optional[str] = typer.Option(None, help="rqvae | nurqvae | rkmeans | nu-rkmeans | pq | opq | nu-pq | nu-opq | mhq"),
             config: Optional[str] = typer.Option(None, "--config", help="preset or YAML (default: RUN_DIR/config.yaml)"),
             overrides: Optional[list[str]] = SetOption) -> None:
    """Turn the run's item embeddings into semantic IDs, with a quality report and plots."""
    cfg = _run_dir_config(run_dir, config, overrides, "tokenize", tokenizer)
    if cfg.embed is None:
        cfg = cfg.model_copy(update={"embed": AlgorithmSpec(name="text")})
    pipeline.build_artifacts(cfg, run_dir, until="tokenize")
    report = json.loads(RunLayout(run_dir).sids_report.read_text())
    console.print({k: report[k] for k in ("tokenizer", "resolution", "fit_seconds") if k in report}
                  | {k: v for k, v in report.items() if "collision" in k})
    console.print(f"report: {RunLayout(run_dir).sids_report}")


@app.command("render-units")
def render_units(run_dir: Path = typer.Argument(..., help="run directory with a config (card preset)"),
                 items: int = typer.Option(8, "--items", help="how many items to draw"),
                 out: Path = typer.Option(..., "--out", help="folder for the PNGs"),
                 config: Optional[str] = typer.Option(None, "--config", help="preset or YAML (default: RUN_DIR/config.yaml)"),
                 overrides: Optional[list[str]] = SetOption) -> None:
    """Draw CARD visual semantic units as PNGs so a person can look at them."""
    from sidrec.features import nearest_neighbours, write_units

    cfg = _run_dir_config(run_dir, config, overrides, "embed", None if config or RunLayout(run_dir).config.exists() else "card")
    art = pipeline.build_artifacts(cfg, run_dir, until="collaborative")
    layout = {k: v for k, v in cfg.embed.options().items() if k in ("size", "image_ratio", "strip_ratio", "k")}
    neighbours = nearest_neighbours(art.collaborative, layout.get("k", 3)) if art.collaborative is not None else None
    paths = write_units(art.dataset.items, out, neighbours, rows=range(min(items, art.dataset.n_items)), **layout)
    console.print(f"wrote {len(paths)} units to {out}")


@app.command()
def recommend(run_dir: Path = typer.Argument(..., help="trained run directory"),
              user: Optional[str] = typer.Option(None, "--user", help="external user id (uses the whole history)"),
              history: Optional[str] = typer.Option(None, "--history", help="comma-separated external item ids"),
              all_users: bool = typer.Option(False, "--all-users", help="every user, written to --out"),
              out: Optional[Path] = typer.Option(None, "--out", help="Parquet file for --all-users"),
              k: int = typer.Option(10, "--k", min=1),
              chunk_users: int = typer.Option(4096, help="users per model call with --all-users"),
              exclude_history: bool = typer.Option(False, help="leave out items already in the history")) -> None:
    """Top-k items with titles for one user or history, or for every user into a Parquet file."""
    from sidrec.evaluation.protocol import rank_items
    from sidrec.serving import export_recommendations, open_run

    if sum([user is not None, history is not None, all_users]) != 1:
        raise typer.BadParameter("give exactly one of --user, --history or --all-users")
    if all_users:
        if out is None:
            raise typer.BadParameter("--all-users needs --out FILE.parquet")
        console.print(export_recommendations(run_dir, out, k=k, chunk_users=chunk_users, exclude_history=exclude_history))
        return
    served = open_run(run_dir)
    max_len = served.config.eval.max_len
    if user is not None:
        matches = (served.dataset.user_ids == user).nonzero()[0]
        if not len(matches):
            raise ValueError(f"unknown user id {user!r}")
        seq = served.dataset.user_history(int(matches[0]), max_len)
    else:
        wanted = [h.strip() for h in history.split(",") if h.strip()]
        index = served.catalogue.lookup(wanted)
        if (index < 0).any():
            raise ValueError(f"unknown item ids: {', '.join(w for w, i in zip(wanted, index) if i < 0)}")
        seq = torch.as_tensor(index[-max_len:], dtype=torch.long)[None]
    items, scores = rank_items(served.model, seq, k, exclude_history)
    table = Table("rank", "item_id", "score", "title")
    for rank, (item, score) in enumerate(zip(items[0].tolist(), scores[0].tolist()), start=1):
        if item >= 0:
            table.add_row(str(rank), str(served.catalogue.item_ids[item]), f"{score:.4f}",
                          str(served.catalogue.titles[item] or ""))
    console.print(table)


@app.command("add-items")
def add_items(run_dir: Path = typer.Argument(..., help="trained run directory (generative model)"),
              items: Path = typer.Option(..., "--items", help="JSONL/CSV/Parquet with item_id and text fields")) -> None:
    """Give new items semantic IDs with the frozen tokenizer so they can be recommended without retraining."""
    from sidrec.serving import add_items as add

    console.print(add(run_dir, items))


@app.command()
def serve(run_dir: Path = typer.Argument(..., help="trained run directory"),
          host: str = typer.Option("127.0.0.1", help="interface to bind"),
          port: int = typer.Option(8000, help="TCP port"),
          max_history: int = typer.Option(200, help="longest history accepted"),
          max_k: int = typer.Option(100, help="largest k accepted"),
          max_batch: int = typer.Option(64, help="requests per micro-batch / per /recommend/batch call"),
          max_wait_ms: float = typer.Option(2.0, help="longest wait to fill a micro-batch"),
          max_queue: int = typer.Option(256, help="queued requests before answering 503"),
          unknown_items: str = typer.Option("error", help="error | ignore unknown item ids in histories"),
          max_body_bytes: int = typer.Option(1 << 20, min=1, help="larger request bodies answer 413 unread")) -> None:
    """HTTP recommendation service (FastAPI + uvicorn) with micro-batching."""
    from sidrec.serving import serve as run_server

    run_server(run_dir, host=host, port=port, max_history=max_history, max_k=max_k, max_batch=max_batch,
               max_wait_ms=max_wait_ms, max_queue=max_queue, unknown_items=unknown_items, max_body_bytes=max_body_bytes)


@app.command()
def run(config: str = typer.Argument(..., help="preset name or YAML file"),
        out: Path = typer.Option(..., "--out", help="run directory"),
        overrides: Optional[list[str]] = SetOption,
        resume: bool = typer.Option(False, "--resume", help="continue training from the last checkpoint")) -> None:
    """Run every stage of a preset and write RUN_DIR/metrics.json and report.md."""
    metrics = pipeline.run(_config(config, overrides), out, resume=resume)
    print(results_table([metrics]))


@app.command()
def report(run_dirs: Optional[list[Path]] = typer.Argument(None, help="run directories"),
           split: str = typer.Option("test", help="valid or test (markdown table)"),
           html: Optional[Path] = typer.Option(None, "--html", help="write a static HTML site to this folder"),
           results: Optional[Path] = typer.Option(None, "--results", help="also render a benchmark results file "
                                                  "(benchmarks/results/reproduce.json) as a comparison page"),
           users: int = typer.Option(20, "--users", min=0,
                                     help="HTML: test and validation users each in the user inspector (0 = none)"),
           gallery: int = typer.Option(12, "--gallery", min=0, help="HTML: CARD units in the gallery (0 = none)")) -> None:
    """A markdown table of the runs' metrics, or with --html a self-contained site: run pages,
    semantic-ID explorer, user inspector, CARD gallery and comparison (opens from file://)."""
    if html is None:
        if results is not None or not run_dirs:
            raise typer.BadParameter("give run directories; --results needs --html")
        print(results_table([pipeline.read_metrics(d) for d in run_dirs], split))
        return
    from sidrec.reporting import build_site

    pages = build_site(run_dirs or [], html, results=results, users=users, gallery=gallery)
    console.print(f"wrote {len(pages)} pages: open {pages[0]}")


@app.command()
def demo(out: Path = typer.Option(Path("runs/demo"), "--out", help="parent folder of the runs"),
         presets: str = typer.Option(",".join(DEMO_PRESETS), help="comma-separated presets"),
         overrides: Optional[list[str]] = SetOption) -> None:
    """The main job: every preset on ML-100K with the demo's small epoch-bounded settings, one table."""
    start = time.perf_counter()
    runs = []
    for name in presets.split(","):
        console.print(f"[bold]== {name}[/bold]")
        cfg = _config(name, ["data.name=ml-100k", *DEMO_OVERRIDES.get(name, []), *(overrides or [])])
        metrics = pipeline.run(cfg, out / name)
        metrics["label"] = name
        runs.append(metrics)
    minutes, seconds = divmod(round(time.perf_counter() - start), 60)
    table = results_table(runs) + f"\n\nAll {len(runs)} presets: {minutes} min {seconds} s wall clock (stage cache included)."
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text(table + "\n")
    print(table)


def flush_subnormals() -> None:
    """Treat subnormal floats as zero in this process, unless SIDREC_KEEP_DENORMALS=1.

    Attention weights and activations of a trained model underflow into subnormals, which x86 CPUs
    handle ~20x slower: a TIGER step of a model trained for 4 epochs took 0.54 s instead of 0.30 s.
    Only values below 1.2e-38 change. It must run before torch starts its worker threads (they
    inherit it), so the command line does it first; a library user calls
    `torch.set_flush_denormal(True)` at the start of the program.
    """
    if not env_flag("SIDREC_KEEP_DENORMALS"):
        torch.set_flush_denormal(True)


def entry() -> None:
    """Console entry point: known failures print one clear line instead of a traceback."""
    flush_subnormals()
    try:
        app(standalone_mode=False)
    except (click.exceptions.Exit, typer.Exit) as exc:
        sys.exit(exc.exit_code)
    except (click.ClickException, TyperException) as exc:  # typer >= 0.26 raises its own copy of click's errors
        exc.show()
        sys.exit(exc.exit_code)
    except (ConfigError, DataFormatError, ArtifactError, RunDirError, FileNotFoundError, NotADirectoryError,
            ValueError) as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")  # a message's [brackets] are text, not markup
        sys.exit(2)


if __name__ == "__main__":
    entry()
