"""Load test of the HTTP service: a trained ML-100K SASRec behind uvicorn on 127.0.0.1.

A bounded asyncio load generator (C keep-alive connections, each with one request in flight) sends
`POST /recommend` for real test-split histories at concurrency 1, 8 and 64 and records p50/p99
latency, requests/s, errors (must be 0) and the server's RSS before and after. Served lists are
checked against the CLI: `sidrec recommend RUN --user U` for a few users (subprocess, table parsed)
and the CLI's own code path (`load_run` + `Dataset.user_history` + `top_k`) for every user.

    python benchmarks/serving.py [--run-dir RUN] [--epochs 3] [--threads 1] [--requests 1500]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import torch

from sidrec import pipeline
from sidrec.config import load_config, resolve_preset
from sidrec.evaluation.protocol import top_k
from sidrec.io import atomic_path, write_json
from sidrec.serving import write_manifest

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parents[1]
CONCURRENCY = (1, 8, 64, 64)  # the last level repeats 64 to show RSS settles (no growth per request)


def trained_run(run_dir: Path, epochs: int) -> Path:
    """Reuse `run_dir` if it holds a finished run, else train SASRec on ML-100K there."""
    if not (run_dir / "metrics.json").exists():
        config = load_config(resolve_preset("sasrec"),
                             ["data.name=ml-100k", f"train.epochs={epochs}", "train.progress=false"])
        pipeline.run(config, run_dir)
    write_manifest(run_dir)
    return run_dir


def rss_mib(pid: int) -> float:
    """Resident set size from /proc (psutil is not a dependency)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"no VmRSS for pid {pid}")


def start_server(run_dir: Path, port: int, threads: int) -> subprocess.Popen:
    code = (f"from sidrec.serving import serve; serve({str(run_dir)!r}, port={port}, threads={threads}, "
            "max_batch=64, max_queue=1024)")
    proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.2)
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
    proc.kill()
    raise RuntimeError("server did not answer /health within 120 s")


async def post_loop(host: str, port: int, bodies: list[bytes], counter, latencies: list, statuses: list) -> None:
    """One keep-alive HTTP/1.1 connection sending `POST /recommend` until `counter` runs out.

    A raw asyncio client: a general-purpose client (httpx) costs more CPU per request than the
    server under test and, sharing the same two cores, would measure itself at high concurrency.
    """
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for i in counter:
            body = bodies[i % len(bodies)]
            t0 = time.perf_counter()
            writer.write(b"POST /recommend HTTP/1.1\r\nHost: %b\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%b" % (host.encode(), len(body), body))
            status = int((await reader.readline()).split()[1])
            length = 0
            while (header := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = header.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - t0)
            statuses.append(status)
    finally:
        writer.close()


async def load(host: str, port: int, bodies: list[bytes], concurrency: int, total: int) -> dict:
    """`concurrency` connections share `total` requests; each keeps exactly one request in flight."""
    latencies, statuses = [], []
    counter = iter(range(total))
    start = time.perf_counter()
    await asyncio.gather(*(post_loop(host, port, bodies, counter, latencies, statuses) for _ in range(concurrency)))
    seconds = time.perf_counter() - start
    latencies.sort()
    return {"concurrency": concurrency, "requests": total, "errors": sum(s != 200 for s in statuses) + total - len(statuses),
            "seconds": round(seconds, 3), "requests_per_s": round(total / seconds, 1),
            "p50_ms": round(1000 * statistics.median(latencies), 2),
            "p99_ms": round(1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 2)}


def cli_top(run_dir: Path, user: str, k: int) -> list[str]:
    """Item ids printed by `sidrec recommend RUN --user U` (rich table: rank | item_id | title)."""
    out = subprocess.run([sys.executable, "-m", "sidrec.cli", "recommend", str(run_dir), "--user", user, "--k", str(k)],
                         capture_output=True, text=True, check=True, env={**os.environ, "COLUMNS": "200"}).stdout
    return [m.group(1) for m in re.finditer(r"^\S\s+\d+\s+\S\s+(\S+)\s+\S", out, re.MULTILINE)]


def parity(url: str, run_dir: Path, k: int, cli_users: int) -> dict:
    """Served lists vs the CLI for every user (its code path) and a few users (the real command)."""
    config, dataset, model = pipeline.load_run(run_dir)
    users = [str(u) for u in dataset.user_ids]
    with torch.inference_mode():
        histories = torch.cat([dataset.user_history(u, config.eval.max_len) for u in range(len(users))])
        expected = [[str(dataset.item_ids[i]) for i in row] for row in top_k(model, histories, k, False).tolist()]
    served = []
    with httpx.Client(base_url=url, timeout=60) as client:
        for start in range(0, len(users), 64):
            batch = [{"user_id": u, "k": k, "exclude_history": False} for u in users[start:start + 64]]
            served += [r["items"] for r in client.post("/recommend/batch", json={"requests": batch}).json()["results"]]
    cli_checked = [u for u in users[:cli_users] if cli_top(run_dir, u, k) == served[users.index(u)]]
    return {"users": len(users), "equal_to_top_k": sum(s == e for s, e in zip(served, expected)),
            "cli_users": cli_users, "equal_to_cli": len(cli_checked)}


def markdown(result: dict) -> str:
    rows = ["| concurrency | requests | errors | req/s | p50 ms | p99 ms | mean batch | server RSS MiB after |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["levels"]:
        label = f"{r['concurrency']} (again)" if r["repeat"] else r["concurrency"]
        rows.append(f"| {label} | {r['requests']} | {r['errors']} | {r['requests_per_s']} | {r['p50_ms']} | "
                    f"{r['p99_ms']} | {r['mean_batch']} | {r['rss_mib_after']} |")
    p = result["parity"]
    return "\n".join([
        "# Serving load test", "",
        f"`python benchmarks/serving.py` — {result['model']} on {result['dataset']} ({result['items']} items), "
        f"uvicorn on 127.0.0.1, 1 process, torch threads {result['threads']}, `POST /recommend` with real test-split "
        f"histories, k={result['k']}, exclude_history=false. Load generator: raw asyncio HTTP/1.1 keep-alive "
        f"connections, one request in flight each, on the same machine ({result['machine']}; load average "
        f"{result['load_average']} at start), so client and server share the CPUs. (An httpx.AsyncClient load "
        "generator saturated the shared CPUs itself: about 150 req/s at concurrency 64.)",
        "", *rows, "",
        f"Server RSS: {result['rss_mib_start']} MiB after start-up, {result['rss_mib_warm']} MiB after warm-up, "
        f"{result['rss_mib_end']} MiB at the end.",
        f"Parity: {p['equal_to_top_k']}/{p['users']} users' served top-{result['k']} equal the CLI code path "
        f"(`top_k` over `user_history`); {p['equal_to_cli']}/{p['cli_users']} equal `sidrec recommend --user` output.",
        "", "Mean batch = model rows per model call during that level (the micro-batcher's grouping).", ""])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run-dir", type=Path, default=ROOT / "runs" / "bench-serving-sasrec")
    ap.add_argument("--epochs", type=int, default=3, help="training epochs when the run must be trained")
    ap.add_argument("--threads", type=int, default=1, help="torch threads in the server")
    ap.add_argument("--requests", type=int, default=1500, help="requests per concurrency level (x1/5 at level 1)")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--cli-users", type=int, default=3, help="users also checked through the real CLI")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    run_dir = trained_run(args.run_dir, args.epochs)
    config, dataset, model = pipeline.load_run(run_dir)
    _, histories, _ = dataset.split("test", config.eval.max_len)
    bodies = [json.dumps({"history": [str(dataset.item_ids[i]) for i in row[row >= 0].tolist()], "k": args.k,
                          "exclude_history": False}).encode() for row in histories]
    url = f"http://127.0.0.1:{args.port}"
    result = {"model": model.name, "dataset": dataset.name, "items": dataset.n_items, "k": args.k,
              "threads": args.threads, "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
              "load_average": round(os.getloadavg()[0], 2), "levels": []}
    server = start_server(run_dir, args.port, args.threads)
    try:
        result["rss_mib_start"] = rss_mib(server.pid)
        asyncio.run(load("127.0.0.1", args.port, bodies, 8, 200))  # warm-up
        result["rss_mib_warm"] = rss_mib(server.pid)
        previous = httpx.get(f"{url}/health").json()["batching"]
        for repeat, concurrency in enumerate(CONCURRENCY):
            total = args.requests // 5 if concurrency == 1 else args.requests
            level = asyncio.run(load("127.0.0.1", args.port, bodies, concurrency, total))
            stats = httpx.get(f"{url}/health").json()["batching"]
            level["mean_batch"] = round((stats["rows"] - previous["rows"]) / max(stats["batches"] - previous["batches"], 1), 2)
            level["rss_mib_after"] = rss_mib(server.pid)
            level["repeat"] = concurrency in CONCURRENCY[:repeat]
            previous = stats
            result["levels"].append(level)
            print(level, flush=True)
        result["rss_mib_end"] = rss_mib(server.pid)
        result["parity"] = parity(url, run_dir, args.k, args.cli_users)
        print(result["parity"])
    finally:
        server.terminate()
        server.wait(timeout=30)
    errors = sum(level["errors"] for level in result["levels"])
    write_json(args.out / "serving.json", result)
    with atomic_path(args.out / "serving.md") as tmp:
        tmp.write_text(markdown(result))
    if errors or result["parity"]["equal_to_top_k"] != result["parity"]["users"]:
        sys.exit(f"FAILED: {errors} errors, parity {result['parity']}")


if __name__ == "__main__":
    main()
