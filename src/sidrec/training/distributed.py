"""Data parallelism under `torchrun`: gloo on CPU, NCCL on GPU; a no-op in a single process."""

from __future__ import annotations

import atexit
import os

import torch
import torch.distributed as torch_dist
from torch import nn


def rank_and_world() -> tuple[int, int]:
    """Join the process group `torchrun` describes in the environment (once); else (0, 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch_dist.is_initialized():
        torch_dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        atexit.register(_destroy_process_group)
    if torch_dist.is_initialized():
        return torch_dist.get_rank(), torch_dist.get_world_size()
    return 0, 1


def leave_process_group() -> None:
    """End of a run: wait for every rank, then tear gloo down while the interpreter is whole.
    A rank that exits while its peer still works, or that leaves gloo to static destructors,
    sometimes aborts ("terminate called without an active exception")."""
    if torch_dist.is_initialized():
        torch_dist.barrier()
    _destroy_process_group()


def _destroy_process_group() -> None:
    """At exit after an error: no barrier (the peers may never reach it), only the teardown."""
    if torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    if torch_dist.is_initialized() and torch_dist.get_world_size() > 1:
        torch_dist.all_reduce(tensor, op=torch_dist.ReduceOp.SUM)
    return tensor


def all_reduce_gradients(model: nn.Module) -> None:
    """Sum every gradient across processes in one flat all-reduce."""
    if not (torch_dist.is_initialized() and torch_dist.get_world_size() > 1):
        return
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch_dist.all_reduce(flat, op=torch_dist.ReduceOp.SUM)
    offset = 0
    for grad in grads:
        grad.copy_(flat[offset:offset + grad.numel()].view_as(grad))
        offset += grad.numel()
