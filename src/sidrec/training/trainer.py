"""One training loop for every trainable model: AdamW, warm-up + schedule, clipping, early stopping,
atomic checkpoints with exact resume, data parallelism under `torchrun`, and optional TensorBoard scalars.

Models expose `loss(batch) -> (loss_sum, count)`. Each process takes its share of every global
batch; the loss is divided by the *global* count and gradients are summed across processes, so N
processes compute exactly the gradient one process computes on the same global batch.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch import nn
from tqdm.auto import tqdm

from sidrec.config import TrainConfig
from sidrec.io import ArtifactError, load_tensors, load_tensors_and_metadata, save_tensors
from sidrec.numerics import deterministic_algorithms
from sidrec.training import distributed as dist
from sidrec.training.tensorboard_log import TensorBoardLog, summary_writer_class

log = logging.getLogger(__name__)

Batch = dict[str, torch.Tensor]
MakeBatches = Callable[[int, torch.Generator], Iterable[Batch]]
Validate = Callable[[nn.Module], dict[str, float]]


CHECKPOINT = "last.safetensors"


def checkpoint_metadata(path: str | Path) -> dict:
    """The trainer and optimizer state stored in a checkpoint's safetensors header."""
    return _parse_checkpoint_header(path, load_tensors_and_metadata(path, "rng.torch")[1])


def _parse_checkpoint_header(path: str | Path, header: dict[str, str]) -> dict:
    if "trainer" not in header:
        raise ArtifactError(f"{path}: not a sidrec training checkpoint (no trainer state)")
    return {key: json.loads(header[key]) for key in ("trainer", "optimizer")}


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "linear":
        return 1.0 - progress
    return 1.0


def _shard(batch: Batch, rank: int, world: int) -> Batch:
    return {k: v[rank::world] for k, v in batch.items()} if world > 1 else batch


class Trainer:
    """Fits `model` for `config.epochs` epochs, keeping the weights with the best validation metric."""

    def __init__(self, model: nn.Module, config: TrainConfig, checkpoint_dir: str | Path | None = None,
                 select_metric: str = "ndcg@10") -> None:
        self.model = model
        self.config = config
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None  # None: no checkpoints, no resume
        self.select_metric = select_metric
        if config.log_dir:
            summary_writer_class()  # every rank fails here, before training, if TensorBoard is missing
        self.rank, self.world = dist.rank_and_world()
        decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim >= 2]
        no_decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim < 2]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=config.lr)
        self.state = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "best": None, "best_epoch": None,
                      "bad_epochs": 0, "history": [], "samples": 0, "train_seconds": 0.0, "stopped": None}

    # --- checkpoints ---------------------------------------------------------------------------
    def _optimizer_tensors(self) -> tuple[dict[str, torch.Tensor], dict]:
        state = self.optimizer.state_dict()
        tensors = {f"optim.{i}.{key}": value for i, slots in state["state"].items() for key, value in slots.items()}
        return tensors, {"param_groups": state["param_groups"]}

    def save_checkpoint(self) -> None:
        """One atomic file: weights, optimizer, RNG, and the trainer state in its metadata (never out of step)."""
        if self.checkpoint_dir is None or self.rank != 0:
            return
        tensors, optim_meta = self._optimizer_tensors()
        tensors.update({f"model.{k}": v for k, v in self.model.state_dict().items()})
        tensors["rng.torch"] = torch.get_rng_state()
        save_tensors(self.checkpoint_dir / CHECKPOINT, tensors,
                     metadata={"trainer": json.dumps(self.state), "optimizer": json.dumps(optim_meta)})

    def resume(self) -> bool:
        """Continue from `checkpoint_dir/last.safetensors` if present; returns whether it did."""
        if self.checkpoint_dir is None or not (self.checkpoint_dir / CHECKPOINT).exists():
            return False
        path = self.checkpoint_dir / CHECKPOINT
        tensors, header = load_tensors_and_metadata(path, "rng.torch")  # one read: weights and state agree
        meta = _parse_checkpoint_header(path, header)
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        slots: dict[int, dict] = {}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, index, name = key.split(".", 2)
                slots.setdefault(int(index), {})[name] = value
        self.optimizer.load_state_dict({"state": slots, "param_groups": meta["optimizer"]["param_groups"]})
        torch.set_rng_state(tensors["rng.torch"])
        self.state = meta["trainer"]
        log.info("resumed from %s at epoch %d step %d", self.checkpoint_dir, self.state["epoch"],
                 self.state["step_in_epoch"])
        return True

    def _save_best(self) -> None:
        if self.checkpoint_dir is not None and self.rank == 0:
            save_tensors(self.checkpoint_dir / "best.safetensors", self.model.state_dict())
        self._best_weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    # --- loop ----------------------------------------------------------------------------------
    def _step(self, batch: Batch, total_steps: int) -> float:
        config = self.config
        shard = {k: v.to(config.device) for k, v in _shard(batch, self.rank, self.world).items()}
        device_type = torch.device(config.device).type
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=config.precision == "bf16"):
            loss_sum, count = self.model.loss(shard)
        loss_sum = loss_sum.float()
        global_count = dist.all_reduce_sum(count.detach().double().reshape(1)).item()
        loss = loss_sum / max(global_count, 1.0)
        self.optimizer.zero_grad(set_to_none=False)
        loss.backward()
        dist.all_reduce_gradients(self.model)
        if config.clip_grad:
            nn.utils.clip_grad_norm_(self.model.parameters(), config.clip_grad)
        factor = lr_factor(self.state["global_step"], total_steps, config.warmup_steps, config.schedule)
        for group in self.optimizer.param_groups:
            group["lr"] = config.lr * factor
        self.optimizer.step()
        self.state["global_step"] += 1
        return dist.all_reduce_sum(loss.detach().double().reshape(1)).item()

    def _out_of_time(self, start: float) -> bool:
        """Every process stops at the same step: the slowest one's clock decides."""
        late = float(time.perf_counter() - start > self.config.max_seconds)
        return dist.all_reduce_sum(torch.tensor([late])).item() > 0

    def fit(self, make_batches: MakeBatches, validate: Validate | None = None, resume: bool = False) -> dict:
        config = self.config
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        torch.manual_seed(config.seed)
        self.model.to(config.device)
        self._best_weights = None
        if not (resume and self.resume()):
            self.state["epoch"] = 0
        elif self.checkpoint_dir is not None and (self.checkpoint_dir / "best.safetensors").exists():
            self._best_weights = load_tensors(self.checkpoint_dir / "best.safetensors")
        start = time.perf_counter() - self.state["train_seconds"]
        with TensorBoardLog(config.log_dir if self.rank == 0 else None, self.state["global_step"] + 1) as board, \
                deterministic_algorithms():  # same seed, same weights, however many threads
            self._epochs(make_batches, validate, start, board)
        if self._best_weights is not None:
            self.model.load_state_dict(self._best_weights)
        self.model.eval()
        seconds = self.state["train_seconds"]
        full = [r["seconds"] for r in self.state["history"] if r.get("complete", True)]
        return {"epochs": self.state["epoch"], "seconds_per_epoch": round(sum(full) / len(full), 2) if full else None,
                "best_epoch": self.state["best_epoch"],
                f"best_valid_{self.select_metric}": self.state["best"], "stopped": self.state["stopped"],
                "train_seconds": round(seconds, 3), "samples_per_second": round(self.state["samples"] / max(seconds, 1e-9), 1),
                "history": self.state["history"]}

    def _epochs(self, make_batches: MakeBatches, validate: Validate | None, start: float,
                board: TensorBoardLog) -> None:
        """The epochs still to run; `fit` wraps them so the TensorBoard writer closes even on an exception."""
        config = self.config

        def checkpoint() -> None:
            self.state["train_seconds"] = time.perf_counter() - start
            self.save_checkpoint()
            board.flush()  # the curves on disk reach at least as far as the step a resume restarts from

        while self.state["epoch"] < config.epochs and not self.state["stopped"]:
            epoch = self.state["epoch"]
            generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
            batches = list(make_batches(epoch, generator))
            total_steps = len(batches) * config.epochs
            self.model.train()
            bar = tqdm(batches, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False,
                       disable=not config.progress or self.rank != 0, initial=self.state["step_in_epoch"])
            losses, samples_before = [], self.state["samples"]
            epoch_start = time.perf_counter()
            for index, batch in enumerate(batches):
                if index < self.state["step_in_epoch"]:
                    continue  # already done before the resume point
                losses.append(self._step(batch, total_steps))
                board.step(self.state["global_step"], losses[-1], self.optimizer.param_groups[0]["lr"])
                self.state["step_in_epoch"] = index + 1
                self.state["samples"] += len(next(iter(batch.values())))
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
                if config.checkpoint_every and self.state["global_step"] % config.checkpoint_every == 0:
                    checkpoint()
                if config.max_seconds and self._out_of_time(start):
                    self.state["stopped"] = f"time budget {config.max_seconds}s (in epoch {epoch + 1})"
                    break
            bar.close()
            seconds = time.perf_counter() - epoch_start
            record = {"epoch": epoch + 1, "loss": sum(losses) / max(len(losses), 1), "seconds": round(seconds, 3),
                      "complete": len(losses) == len(batches)}  # not cut by the budget, not resumed midway
            self.state["epoch"] = epoch + 1
            self.state["step_in_epoch"] = 0
            if validate is not None and ((epoch + 1) % config.eval_every == 0 or self.state["stopped"]):
                self.model.eval()
                metrics = validate(self.model)
                record["valid"] = metrics
                value = metrics[self.select_metric]
                if self.state["best"] is None or value > self.state["best"]:
                    self.state.update(best=value, best_epoch=epoch + 1, bad_epochs=0)
                    self._save_best()
                else:
                    self.state["bad_epochs"] += 1
                    if self.state["bad_epochs"] >= config.patience and not self.state["stopped"]:
                        self.state["stopped"] = "early stopping"
            self.state["history"].append(record)
            throughput = (self.state["samples"] - samples_before) / max(seconds, 1e-9)
            board.epoch(self.state["global_step"], record["loss"], throughput, record.get("valid"))
            if self.rank == 0:
                log.info("epoch %d: %s", epoch + 1, {k: v for k, v in record.items() if k != "valid"} |
                         ({self.select_metric: record["valid"][self.select_metric]} if "valid" in record else {}))
            checkpoint()
