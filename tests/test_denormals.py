"""The command line flushes subnormal floats to zero (they made CPU training ~1.8x slower), unless opted out."""

import os
import subprocess
import sys

import pytest
import torch

import sidrec.cli

PROBE = ("import torch; from sidrec.cli import flush_subnormals; flush_subnormals(); "
         "x = torch.full((4096,), 1e-39); print(int((x * 1.5 != 0).sum()), int((torch.ones(4096) * 1e-20 * 1e-20 != 0).sum()))")


@pytest.mark.parametrize("keep, expected", [("", "0 0"), ("1", "4096 4096")])
def test_flush_subnormals_unless_opted_out(keep, expected):
    env = {**os.environ, "SIDREC_KEEP_DENORMALS": keep}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == expected.split()


def test_the_console_entry_sets_it_before_any_command(monkeypatch):
    calls = []
    monkeypatch.setattr(sidrec.cli, "flush_subnormals", lambda: calls.append("flush"))
    monkeypatch.setattr(sys, "argv", ["sidrec", "--help"])
    try:
        sidrec.cli.entry()
    except SystemExit as exc:
        assert exc.code == 0
    assert calls == ["flush"]


LEAK_PROBE = """
import torch
from sidrec.numerics import flushing_subnormals, subnormals_flushed
from sidrec.tokenizers import build_tokenizer
states = []
for start in (True, False):
    torch.set_flush_denormal(start)
    with flushing_subnormals():
        states.append(subnormals_flushed())
    states.append(subnormals_flushed())
torch.set_flush_denormal(True)
build_tokenizer("rqvae", hidden_dims=[8], latent_dim=4, n_levels=2, codebook_size=4, epochs=1,
                progress=False).fit(torch.randn(64, 8))
states.append(subnormals_flushed())
print(*map(int, states))
"""


def test_fitting_an_rqvae_restores_the_mode_it_found():
    """The tokenizer flushes while it fits, then puts back the caller's mode (it used to turn it off)."""
    out = subprocess.run([sys.executable, "-c", LEAK_PROBE], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "1", "1", "0", "1"]


def test_a_tokenizer_fit_is_deterministic_with_several_threads():
    """With 2 threads, two RQ-VAE fits of the same embeddings and seed gave different codes for every item
    (a parallel kernel in the backward pass); fits run under torch's deterministic algorithms."""
    from sidrec.tokenizers import build_tokenizer

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        x = torch.nn.functional.normalize(torch.randn(1700, 384, generator=torch.Generator().manual_seed(0)), dim=1)
        options = dict(n_levels=3, codebook_size=256, epochs=10, progress=False)
        first, second = (build_tokenizer("rqvae", **options).fit(x).encode(x) for _ in range(2))
        assert torch.equal(first, second)
        assert not torch.are_deterministic_algorithms_enabled()  # the mode is restored after the fit
    finally:
        torch.set_num_threads(threads)
