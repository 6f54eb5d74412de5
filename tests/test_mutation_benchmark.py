"""benchmarks/mutation.py: every mutant still targets live code, and the table is written from the rows."""

import sys
from collections import Counter
from pathlib import Path

import pytest
from benchmark_module import load_benchmark

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mutation():
    yield load_benchmark("mutation")
    del sys.modules["mutation"]


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


@pytest.fixture(scope="module")
def mutation_tool():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import mutation_tool
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return mutation_tool


def test_the_tool_run_reports_open_and_justified_survivors(mutation_tool, monkeypatch):
    """mutation_tool.py: a survivor is open unless (function, mutated line) is in EQUIVALENT; its scope exists."""
    scopes = mutation_tool.SCOPES.values()
    assert all((ROOT / path.split("::")[0]).exists() for s in scopes for path in s.files + s.tests + s.deselect)
    diff = "--- a.py\n+++ b.py\n@@ -1 +1 @@\n-    x = a < b\n+    x = a <= b\n"
    assert mutation_tool.mutated_line(diff) == "x = a <= b" and mutation_tool.mutated_line(diff, "-") == "x = a < b"
    was = "index = torch.arange(k, device=codes.device) + offsets"
    assert mutation_tool.only_moves_the_device(was, "index = torch.arange(k, ) + offsets")
    assert mutation_tool.only_moves_the_device(was, "index = torch.arange(k, device=None) + offsets")
    assert not mutation_tool.only_moves_the_device(was, "index = torch.arange(k, device=None) - offsets")
    assert not mutation_tool.only_moves_the_device("x = a + b", "x = a - b")
    was = 'y = torch.einsum("nd,edh->neh", x, w) + b'
    assert mutation_tool.generic_equivalence(was, 'y = torch.einsum("ND,EDH->NEH", x, w) + b').startswith("einsum")
    assert mutation_tool.generic_equivalence(was, 'y = torch.einsum("ND,EDH->NEH", x, w) - b') is None
    survivors = [{"name": "m.f__mutmut_1", "function": "m.f", "status": "survived", "line": "x = a <= b"},
                 {"name": "m.f__mutmut_2", "function": "m.f", "status": "survived", "line": "y = 2"},
                 {"name": "m.f__mutmut_3", "function": "m.f", "status": "survived", "line": "w = 1"},
                 {"name": "m.g__mutmut_1", "function": "m.g", "status": "survived", "line": "z = 0"}]
    monkeypatch.setitem(mutation_tool.EQUIVALENT, ("m.f", "y = 2"), "y is never read")
    monkeypatch.setitem(mutation_tool.EQUIVALENT, ("m.f", "w = 1"), "not equivalent but killed: test_w by hand")
    monkeypatch.setitem(mutation_tool.SKIP, "m.g", "persistence")
    result = {"statuses": {"killed": 6, "survived": 4}, "total": 10, "survivors": survivors, "seconds": 5, "max_children": 1}
    scope = mutation_tool.Scope("some code", ["src/m.py"], ["tests/m"], ROOT / "unused", ["tests/m/test_x.py::test_slow"])
    text = mutation_tool.render(result, {"commit": "abc", "date": "d", "cpu": "test CPU", "python": "3"}, scope)
    assert "# mutmut over some code" in text and "Left out for their cost: `tests/m/test_x.py::test_slow`." in text
    assert "**Score: 6 / 10 killed**" in text and ("3 not killed, 1 justified as equivalent, 1 killed when run by hand "
                                                   "(mutmut did not select the test that kills it), **1 open**") in text
    assert "| `m.f` | `x = a <= b` | survived | **open** |" in text and "y is never read" in text
    assert "| `m.g` | `z = 0` | survived | outside the defining code: persistence |" in text


def test_recheck_reruns_only_the_survivors_and_refuses_a_moved_source(mutation_tool, monkeypatch):
    """--recheck: the saved survivors are rerun (nothing else), their new statuses replace the old in the score;
    if a survivor's number now mutates another line, the saved run no longer describes the source: refused."""
    survivors = [{"name": "m.f__mutmut_1", "function": "m.f", "status": "survived", "line": "x = a <= b"},
                 {"name": "m.f__mutmut_2", "function": "m.f", "status": "no tests", "line": "y = 2"}]
    saved = {"meta": {"commit": "abc", "date": "d1"},
             "result": {"statuses": {"killed": 8, "survived": 1, "no tests": 1}, "total": 10, "survivors": survivors,
                        "seconds": 5, "max_children": 1}}
    asked = []

    def fake_run(scope, max_children, only=None):
        asked.append(only)
        return {"statuses": Counter({"killed": 1, "survived": 1}), "total": 2, "survivors": survivors[:1],
                "seconds": 3, "max_children": 1, "lines": {"m.f__mutmut_1": "x = a <= b", "m.f__mutmut_2": lines[1]}}

    monkeypatch.setattr(mutation_tool, "run", fake_run)
    scope = mutation_tool.SCOPES["models"]
    lines = ["", "y = 2"]
    out = mutation_tool.recheck(saved, scope, 1, {"commit": "def", "date": "d2"})
    assert asked == [["m.f__mutmut_1", "m.f__mutmut_2"]]
    assert out["result"]["statuses"] == Counter({"killed": 9, "survived": 1}) and out["result"]["total"] == 10
    assert out["result"]["survivors"] == survivors[:1] and out["meta"]["commit"] == "abc"
    text = mutation_tool.render(out["result"], {**out["meta"], "cpu": "c", "python": "3"}, scope)
    assert "**Score: 9 / 10 killed**" in text and "Rechecked at def (d2, `--recheck`): the 2 mutants" in text
    lines[1] = "y = 3"
    with pytest.raises(SystemExit, match="source changed"):
        mutation_tool.recheck(saved, scope, 1, {"commit": "def", "date": "d2"})
