"""benchmarks/step_throughput.py: FLOPs are those of forward + backward per step, rows come from a real run."""

import pytest
import torch
from torch import nn


@pytest.fixture(scope="module")
def throughput():
    import step_throughput  # benchmarks/ is on the tests' path (pyproject.toml)

    return step_throughput


class _Linear(nn.Module):
    def __init__(self, d: int, k: int):
        super().__init__()
        self.proj = nn.Linear(d, k, bias=False)

    def loss(self, batch):
        return self.proj(batch["x"]).square().sum(), torch.tensor(batch["x"].shape[0])


def test_a_step_counts_forward_and_backward_matmuls_per_batch(throughput):
    """y = x W: forward 2Bdk, backward 2Bdk for dW (x is data: no dx); the mean is per batch (B = 8), not summed."""
    model, (d, k) = _Linear(16, 8), (16, 8)
    batches = [{"x": torch.randn(b, d)} for b in (4, 12)]
    assert throughput.step_flops(model, batches, "fp32") == 4 * 8 * d * k
    assert model.proj.weight.grad is None  # the count leaves no gradient behind for the timed steps


def test_rows_of_a_real_run(throughput, tmp_path, p5_files):
    from sidrec import pipeline
    from sidrec.config import load_config, resolve_preset

    overrides = ["data.name=custom", "data.format=p5", f"data.path={p5_files / 'seq.txt'}",
                 f"data.items_path={p5_files / 'items.jsonl'}", f"data.cache_dir={tmp_path / 'data'}",
                 f"cache_dir={tmp_path / 'stages'}", "model.hidden=16", "model.max_len=10", "train.epochs=1",
                 "train.batch_size=8", "train.progress=false", "eval.max_len=10"]
    run_dir = tmp_path / "run"
    pipeline.run(load_config(resolve_preset("sasrec"), overrides), run_dir)
    peaks = {"fp32": 100.0, "bf16": 200.0}
    row = throughput.measure(run_dir, n_batches=3, threads=1, peaks=peaks)
    assert row["model"] == "sasrec" and row["precision"] == "fp32" and row["batches_sampled"] == 3
    assert row["steps_per_epoch"] == 5  # 40 users in batches of 8
    assert row["gflop_per_step"] > 0 and row["step_seconds"] > 0
    assert row["of_fp32_peak"] == pytest.approx(row["gflops"] / 100.0, abs=1e-3)
    text = throughput.render({"date": "d", "commit": "c", "cpu": "test CPU", "threads": 1, "torch": "t",
                              "batches_sampled": 3, "peaks_gflops": peaks, "rows": {"tiny / sasrec": row}})
    assert "| tiny / sasrec | sasrec | fp32 | 8 |" in text
    rows = [{"data": "d", "model": "sasrec", "seed": 43, "run_dir": str(run_dir)},
            {"data": "d", "model": "sasrec", "seed": 42, "run_dir": str(tmp_path / "gone")},
            {"data": "d", "model": "tiger", "seed": 42, "run_dir": str(tmp_path / "gone")}]
    assert throughput.default_runs(rows) == [("d / sasrec", run_dir)]  # seed 42's run is not here: 43 stands in
