"""Exact resume after an interruption, the LR schedule, and 2-process data parallelism."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sidrec.config import TrainConfig
from sidrec.io import load_tensors
from sidrec.models import build_model
from sidrec.training import Trainer, lr_factor

OPTIONS = {"hidden": 16, "layers": 1, "heads": 2, "ffn": 32, "dropout": 0.3, "max_len": 8}


class Interrupted(Exception):
    pass


def fresh_model(ds):
    torch.manual_seed(0)
    return build_model("sasrec", OPTIONS, ds.n_items)


def test_resume_mid_epoch_reaches_identical_weights(cyclic_dataset, tmp_path):
    ds = cyclic_dataset
    config = TrainConfig(epochs=3, batch_size=16, checkpoint_every=3, progress=False)
    reference = fresh_model(ds)
    Trainer(reference, config, tmp_path / "a").fit(reference.make_batches(ds, 16))

    model = fresh_model(ds)
    make = model.make_batches(ds, 16)
    calls = {"n": 0}

    def dying(epoch, generator):
        for batch in make(epoch, generator):
            calls["n"] += 1
            if calls["n"] == 8:  # after the step-6 checkpoint, in the middle of epoch 2
                raise Interrupted
            yield batch

    with pytest.raises(Interrupted):
        Trainer(model, config, tmp_path / "b").fit(lambda e, g: list(dying(e, g)))
    resumed = fresh_model(ds)
    trainer = Trainer(resumed, config, tmp_path / "b")
    trainer.fit(resumed.make_batches(ds, 16), resume=True)
    assert trainer.state["global_step"] > 6
    for key, value in reference.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


def test_lr_schedule():
    assert lr_factor(0, 100, 10, "constant") == pytest.approx(0.1)
    assert lr_factor(50, 100, 0, "constant") == 1.0
    assert lr_factor(100, 100, 0, "cosine") == pytest.approx(0.0)
    assert lr_factor(55, 100, 10, "linear") == pytest.approx(0.5)


def test_two_processes_match_one_process(tmp_path):
    worker = Path(__file__).with_name("ddp_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, str(worker), str(tmp_path / "one.safetensors")], check=True, env=env, timeout=120)
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(worker), str(tmp_path / "two.safetensors")], env=env, timeout=180,
                         capture_output=True, text=True)
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    one, two = load_tensors(tmp_path / "one.safetensors"), load_tensors(tmp_path / "two.safetensors")
    # The attention key bias cancels in the softmax: its true gradient is 0, so Adam turns
    # float rounding noise into steps there. Its query and value thirds must still agree.
    for name in [k for k in one if k.endswith("in_proj_bias")]:
        q, _, v = one[name].chunk(3)
        q2, _, v2 = two.pop(name).chunk(3)
        one[name + ".qv"], two[name + ".qv"] = torch.cat([q, v]), torch.cat([q2, v2])
        del one[name]
    assert one.keys() == two.keys()
    for key in one:
        torch.testing.assert_close(one[key], two[key], rtol=1e-4, atol=1e-5, msg=key)


def test_time_budget_stops_inside_an_epoch_and_still_validates(cyclic_dataset):
    model = fresh_model(cyclic_dataset)
    calls = []
    trainer = Trainer(model, TrainConfig(epochs=5, batch_size=4, max_seconds=1e-9, eval_every=3, progress=False))
    result = trainer.fit(model.make_batches(cyclic_dataset, 4), lambda m: calls.append(1) or {"ndcg@10": 0.5})
    assert trainer.state["global_step"] == 1 and result["stopped"].startswith("time budget")
    assert calls == [1] and result["best_valid_ndcg@10"] == 0.5
    assert result["seconds_per_epoch"] is None  # the only epoch was cut short: no per-epoch time to report


def test_seconds_per_epoch_averages_complete_epochs(cyclic_dataset):
    model = fresh_model(cyclic_dataset)
    result = Trainer(model, TrainConfig(epochs=2, batch_size=4, patience=5, progress=False)).fit(
        model.make_batches(cyclic_dataset, 4), lambda m: {"ndcg@10": 0.5})
    seconds = [r["seconds"] for r in result["history"]]
    assert all(r["complete"] for r in result["history"])
    assert result["seconds_per_epoch"] == round(sum(seconds) / 2, 2)


def test_bf16_autocast_trains_in_bf16_and_keeps_fp32_weights(cyclic_dataset):
    ds = cyclic_dataset
    seen = {}
    model = fresh_model(ds)
    linear = next(m for name, m in model.encoder.named_modules() if name.endswith("linear1"))  # the FFN
    linear.register_forward_hook(lambda module, args, out: seen.update(dtype=out.dtype))
    summary = Trainer(model, TrainConfig(epochs=8, batch_size=16, lr=3e-3, precision="bf16", progress=False)).fit(
        model.make_batches(ds, 16))
    assert seen["dtype"] == torch.bfloat16  # the forward pass really ran under autocast
    assert all(p.dtype == torch.float32 for p in model.parameters())
    reference = fresh_model(ds)
    fp32 = Trainer(reference, TrainConfig(epochs=8, batch_size=16, lr=3e-3, progress=False)).fit(
        reference.make_batches(ds, 16))
    losses = [run["history"][-1]["loss"] for run in (summary, fp32)]
    assert losses[0] < 0.8 * summary["history"][0]["loss"]
    assert abs(losses[0] - losses[1]) < 0.1 * losses[1]  # bf16 follows the fp32 run closely
    with pytest.raises(ValueError):
        TrainConfig(precision="fp16")
