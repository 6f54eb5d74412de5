"""benchmarks/mutation.py: every mutant still targets live code, and the table is written from the rows."""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mutation():
    spec = importlib.util.spec_from_file_location("mutation", ROOT / "benchmarks" / "mutation.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_every_mutant_changes_exactly_one_place_of_existing_code(mutation):
    names = [m.name for m in mutation.MUTANTS]
    assert len(names) == len(set(names))
    for mutant in mutation.MUTANTS:
        source = (ROOT / "src" / "sidrec" / mutant.file).read_text()
        assert source.count(mutant.old) == 1, f"{mutant.name}: its target moved; update benchmarks/mutation.py"
        assert mutant.new != mutant.old and all((ROOT / t).exists() for t in mutant.tests)


def test_the_table_counts_killed_and_names_survivors(mutation, tmp_path):
    rows = [{"name": "a", "breaks": "x", "file": "f.py", "tests": ("tests/t",), "killed": True, "by": "tests/t::k",
             "seconds": 1.0},
            {"name": "b", "breaks": "y", "file": "f.py", "tests": ("tests/t",), "killed": False, "by": "", "seconds": 2.0}]
    mutation.write(rows, {"commit": "abc", "date": "2026-12-01", "cpu": "test CPU", "python": "3"}, tmp_path / "m")
    text = (tmp_path / "m.md").read_text()
    assert "**Score: 1 / 2 killed.**" in text and "**survived**" in text and "`tests/t::k`" in text
