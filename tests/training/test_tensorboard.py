"""TensorBoard scalars from the trainer (`train.log_dir`): what is logged, how a resume continues, a missing extra."""

import sys

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.tensorboard import SummaryWriter

from sidrec.config import ConfigError, TrainConfig, load_config
from sidrec.evaluation import evaluate
from sidrec.models import build_model
from sidrec.training import Trainer, lr_factor

OPTIONS = {"hidden": 16, "layers": 1, "heads": 2, "ffn": 32, "dropout": 0.3, "max_len": 8}


def fresh_model(ds):
    torch.manual_seed(0)
    return build_model("sasrec", OPTIONS, ds.n_items)


def scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_logs_loss_lr_validation_and_throughput_by_global_step(cyclic_dataset, tmp_path):
    ds = cyclic_dataset
    model = fresh_model(ds)
    config = TrainConfig(epochs=2, batch_size=16, warmup_steps=5, patience=5, progress=False,
                         log_dir=str(tmp_path / "tb"))
    result = Trainer(model, config).fit(model.make_batches(ds, 16), lambda m: evaluate(m, ds, "valid"))
    logged = scalars(tmp_path / "tb")
    history = result["history"]
    per_epoch = len(list(model.make_batches(ds, 16)(0, torch.Generator().manual_seed(0))))
    steps = list(range(1, 2 * per_epoch + 1))
    ends = [per_epoch, 2 * per_epoch]

    assert [step for step, _ in logged["train/loss"]] == steps
    assert [lr for _, lr in logged["train/lr"]] == pytest.approx(
        [config.lr * lr_factor(step - 1, len(steps), config.warmup_steps, config.schedule) for step in steps])
    for epoch, record in enumerate(history):
        losses = [loss for step, loss in logged["train/loss"] if epoch * per_epoch < step <= ends[epoch]]
        assert sum(losses) / len(losses) == pytest.approx(record["loss"], rel=1e-5)
    assert logged["train/epoch_loss"] == [(step, pytest.approx(r["loss"], rel=1e-6)) for step, r in zip(ends, history)]
    assert [step for step, _ in logged["train/samples_per_second"]] == ends
    assert all(value > 0 for _, value in logged["train/samples_per_second"])
    numeric = [k for k, v in history[0]["valid"].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    assert "ndcg@10" in numeric and "exclude_history" not in numeric  # a flag is not a curve
    assert sorted(tag for tag in logged if tag.startswith("valid/")) == sorted(f"valid/{k}" for k in numeric)
    assert logged["valid/ndcg@10"] == [(step, pytest.approx(r["valid"]["ndcg@10"], rel=1e-6))
                                       for step, r in zip(ends, history)]


class Interrupted(Exception):
    pass


def test_resume_continues_the_curves_without_the_steps_it_redoes(cyclic_dataset, tmp_path, monkeypatch):
    ds = cyclic_dataset
    close, closed = SummaryWriter.close, []
    monkeypatch.setattr(SummaryWriter, "close", lambda writer: closed.append(writer.log_dir) or close(writer))
    config = TrainConfig(epochs=2, batch_size=16, checkpoint_every=3, patience=5, progress=False,
                         log_dir=str(tmp_path / "tb"))
    per_epoch = len(list(fresh_model(ds).make_batches(ds, 16)(0, torch.Generator().manual_seed(0))))
    assert per_epoch * 2 > 6  # the crash below comes after the step-6 checkpoint

    def crash_in_second_validation(model):
        if trainer.state["epoch"] == 2:
            raise Interrupted
        return {"ndcg@10": 0.5}

    model = fresh_model(ds)
    trainer = Trainer(model, config, tmp_path / "run")
    with pytest.raises(Interrupted):
        trainer.fit(model.make_batches(ds, 16), crash_in_second_validation)
    assert closed == [config.log_dir]  # closed (so flushed) on the way out
    before = scalars(tmp_path / "tb")
    assert len(before["train/loss"]) == 2 * per_epoch

    model = fresh_model(ds)
    trainer = Trainer(model, config, tmp_path / "run")
    result = trainer.fit(model.make_batches(ds, 16), lambda m: {"ndcg@10": 0.5}, resume=True)
    after = scalars(tmp_path / "tb")
    assert [step for step, _ in after["train/loss"]] == list(range(1, 2 * per_epoch + 1))  # no step twice
    assert [step for step, _ in after["valid/ndcg@10"]] == [per_epoch, 2 * per_epoch]  # one point per epoch
    assert after["train/loss"][:6] == before["train/loss"][:6]  # kept up to the checkpoint the resume started from
    resumed = [loss for step, loss in after["train/loss"] if step > 6]
    assert sum(resumed) / len(resumed) == pytest.approx(result["history"][1]["loss"], rel=1e-5)


def test_log_dir_is_a_config_key_off_by_default():
    assert TrainConfig().log_dir is None
    assert load_config(None, ["train.log_dir=runs/x/tb"]).train.log_dir == "runs/x/tb"


def test_missing_tensorboard_fails_before_training_and_names_the_extra(cyclic_dataset, tmp_path, monkeypatch):
    for name in ("tensorboard", "torch.utils.tensorboard"):
        monkeypatch.setitem(sys.modules, name, None)  # `import` now raises ImportError, as without the package
    model = fresh_model(cyclic_dataset)
    with pytest.raises(ImportError, match=r"train\.log_dir.*pip install 'sidrec\[tensorboard\]'") as error:
        Trainer(model, TrainConfig(epochs=1, progress=False, log_dir=str(tmp_path / "tb")))
    assert isinstance(error.value, ConfigError)  # the CLI prints it as a message, not a traceback
    assert not (tmp_path / "tb").exists()
