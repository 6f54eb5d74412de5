"""Process floating-point mode: flushing subnormal floats to zero, probed and restored, never leaked.

Activations of trained models and Adam's second moments underflow into subnormals, which x86 CPUs
handle ~20x slower. `torch.set_flush_denormal` changes a process-wide (per-thread) mode and has no
getter, so the current mode is probed with one multiply.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch


def subnormals_flushed() -> bool:
    """Whether this thread treats subnormal floats as zero."""
    return bool((torch.tensor([1e-40]) * 2.0).item() == 0.0)


@contextlib.contextmanager
def flushing_subnormals() -> Iterator[None]:
    """Flush subnormals to zero inside the block, then put back the mode found on entry."""
    before = subnormals_flushed()
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(before)
