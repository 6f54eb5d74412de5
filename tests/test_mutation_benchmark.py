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


def test_the_tool_run_reports_open_and_justified_survivors(monkeypatch):
    """mutation_tool.py: a survivor is open unless (function, mutated line) is in EQUIVALENT; its scope exists."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import mutation_tool
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    scopes = mutation_tool.SCOPES.values()
    assert all((ROOT / path.split("::")[0]).exists() for s in scopes for path in s.files + s.tests + s.deselect)
    diff = "--- a.py\n+++ b.py\n@@ -1 +1 @@\n-    x = a < b\n+    x = a <= b\n"
    assert mutation_tool.mutated_line(diff) == "x = a <= b"
    survivors = [{"name": "m.f__mutmut_1", "function": "m.f", "status": "survived", "line": "x = a <= b"},
                 {"name": "m.f__mutmut_2", "function": "m.f", "status": "survived", "line": "y = 2"},
                 {"name": "m.g__mutmut_1", "function": "m.g", "status": "survived", "line": "z = 0"}]
    monkeypatch.setitem(mutation_tool.EQUIVALENT, ("m.f", "y = 2"), "y is never read")
    monkeypatch.setitem(mutation_tool.SKIP, "m.g", "persistence")
    result = {"statuses": {"killed": 7, "survived": 3}, "total": 10, "survivors": survivors, "seconds": 5, "max_children": 1}
    scope = mutation_tool.Scope("some code", ["src/m.py"], ["tests/m"], ROOT / "unused", ["tests/m/test_x.py::test_slow"])
    text = mutation_tool.render(result, {"commit": "abc", "date": "d", "cpu": "test CPU", "python": "3"}, scope)
    assert "# mutmut over some code" in text and "Left out for their cost: `tests/m/test_x.py::test_slow`." in text
    assert "**Score: 7 / 10 killed**" in text and "2 not killed, 1 justified as equivalent, **1 open**" in text
    assert "| `m.f` | `x = a <= b` | survived | **open** |" in text and "y is never read" in text
    assert "| `m.g` | `z = 0` | survived | outside the defining code: persistence |" in text
