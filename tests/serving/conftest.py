"""Tiny trained runs shared by the serving tests (built once per session on the cyclic catalogue)."""

import socket
import threading
import time

import httpx
import pytest
import torch
import uvicorn

from sidrec import pipeline
from sidrec.config import load_config
from synthetic import cyclic_raw

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def data_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serving-data")
    raw = cyclic_raw(n_users=40, length=7)
    lines = [" ".join([user, *group["item_id"]]) for user, group in raw.interactions.groupby("user_id", sort=False)]
    (folder / "seq.txt").write_text("\n".join(lines) + "\n")
    raw.items.to_json(folder / "items.jsonl", orient="records", lines=True)
    return folder


def run_overrides(folder, *extra: str) -> list[str]:
    """Overrides for a run on the cyclic p5 fixture in `folder` (caches kept inside it)."""
    return ["data.name=custom", "data.format=p5", f"data.path={folder / 'seq.txt'}",
            f"data.items_path={folder / 'items.jsonl'}", f"data.cache_dir={folder / 'cache'}",
            f"cache_dir={folder / 'stages'}", "train.progress=false", *extra]


@pytest.fixture(scope="session")
def overrides():
    return run_overrides


@pytest.fixture(scope="session")
def sasrec_run(data_files, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "sasrec"
    pipeline.run(load_config(None, run_overrides(data_files, "model.name=sasrec", "model.hidden=16",
                                                 "model.ffn=32", "model.layers=1", "train.epochs=2")), run_dir)
    return run_dir


@pytest.fixture(scope="session")
def popularity_run(data_files, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "popularity"
    pipeline.run(load_config(None, run_overrides(data_files, "model.name=popularity")), run_dir)
    return run_dir


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    """uvicorn serving `app` on a free loopback port in a background thread."""

    def __init__(self, app):
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def live_server():
    def start(app) -> LiveServer:
        return LiveServer(app)
    return start


@pytest.fixture
def client_for():
    """httpx client against a live server: `with client_for(server) as http: http.get(...)`."""
    return lambda server: httpx.Client(base_url=server.url, timeout=30)
