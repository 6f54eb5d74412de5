"""Training killed with SIGKILL mid-run resumes from its last checkpoint to the same final metrics."""

import json
import os
import signal
import subprocess
import sys
import time

from sidrec import pipeline
from sidrec.config import load_config
from sidrec.training.trainer import checkpoint_metadata

TRAIN = ["model.name=sasrec", "model.hidden=16", "model.ffn=32", "model.layers=1", "model.dropout=0.3",
         "train.epochs=25", "train.batch_size=4", "train.patience=1000", "train.checkpoint_every=7",
         "train.num_threads=1", "train.seed=7"]


def cli(run_dir, overrides, *extra) -> list[str]:
    sets = [arg for kv in overrides for arg in ("--set", kv)]
    return [sys.executable, "-m", "sidrec.cli", "run", "sasrec", "--out", str(run_dir), *sets, *extra]


def test_sigkill_then_resume_matches_uninterrupted_run(data_files, overrides, tmp_path):
    config = overrides(data_files, *TRAIN)
    reference = pipeline.run(load_config(None, config), tmp_path / "reference")

    run_dir = tmp_path / "killed"
    state = run_dir / "checkpoints" / "last.safetensors"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cli(run_dir, config), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen = None
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if state.exists():
            stamp = state.stat().st_mtime_ns
            if seen is not None and stamp != seen:  # a second checkpoint just landed: kill between checkpoints
                proc.send_signal(signal.SIGKILL)
                break
            seen = stamp
        time.sleep(0.002)
    assert proc.wait(timeout=30) == -signal.SIGKILL, "the run finished before it could be killed"
    checkpoint = checkpoint_metadata(state)["trainer"]
    assert 0 < checkpoint["epoch"] < 25 and not (run_dir / "metrics.json").exists()

    resumed = subprocess.run(cli(run_dir, config, "--resume"), env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    final = json.loads((run_dir / "metrics.json").read_text())
    assert final["test"] == {**reference["test"], "seconds": final["test"]["seconds"]}
    assert final["valid"]["ndcg@10"] == reference["valid"]["ndcg@10"]
    assert final["train"]["best_epoch"] == reference["train"]["best_epoch"]
