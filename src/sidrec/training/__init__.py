"""Training stage: one reusable trainer with checkpoints, resume and data parallelism."""

from sidrec.training.trainer import Trainer, lr_factor

__all__ = ["Trainer", "lr_factor"]
