"""Optional TensorBoard scalars for the trainer (`train.log_dir`, extra `sidrec[tensorboard]`).

Every scalar is keyed by the optimizer's global step, so the curves of a resumed run continue where
its checkpoint left off, and the steps a crash logged past that checkpoint are purged, not doubled.
"""

from __future__ import annotations

import numbers
from pathlib import Path

from sidrec.extras import MissingExtraError, install_hint

def summary_writer_class() -> type:
    """torch's SummaryWriter; asking for TensorBoard logs without the package is an error, never a silent no-op."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise MissingExtraError(f"train.log_dir is set, but TensorBoard is not installed: {install_hint('tensorboard')}") from exc
    return SummaryWriter


class TensorBoardLog:
    """Writes the training scalars to `log_dir`; does nothing when `log_dir` is None (off, or not rank 0)."""

    def __init__(self, log_dir: str | Path | None, purge_step: int) -> None:
        # purge_step hides whatever an earlier run logged from this step on: a resume redoes those steps.
        self.writer = summary_writer_class()(str(log_dir), purge_step=purge_step) if log_dir else None

    def step(self, step: int, loss: float, lr: float) -> None:
        if self.writer is not None:
            self.writer.add_scalar("train/loss", loss, step)
            self.writer.add_scalar("train/lr", lr, step)

    def epoch(self, step: int, loss: float, samples_per_second: float, valid: dict | None) -> None:
        """The epoch's mean loss (as in the history), its throughput and every numeric validation metric."""
        if self.writer is None:
            return
        self.writer.add_scalar("train/epoch_loss", loss, step)
        self.writer.add_scalar("train/samples_per_second", samples_per_second, step)
        for key, value in (valid or {}).items():
            if isinstance(value, numbers.Real) and not isinstance(value, bool):
                self.writer.add_scalar(f"valid/{key}", value, step)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def __enter__(self) -> "TensorBoardLog":
        return self

    def __exit__(self, *exc_info) -> None:
        if self.writer is not None:
            self.writer.close()
