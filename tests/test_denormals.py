"""The command line flushes subnormal floats to zero (they made CPU training ~1.8x slower), unless opted out."""

import os
import subprocess
import sys

import pytest

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
