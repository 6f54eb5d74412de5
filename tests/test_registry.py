"""One `Registry` type for datasets, encoders, tokenizers and models: lazy entries, one unknown-name error."""

import sys

import pytest

from sidrec.data import DATASETS
from sidrec.features import ENCODERS
from sidrec.models import MODELS
from sidrec.registry import Registry, UnknownNameError
from sidrec.tokenizers import TOKENIZERS


def test_every_kind_uses_the_one_registry_and_fails_alike_on_unknown_names():
    for registry, kind in [(DATASETS, "dataset"), (ENCODERS, "item encoder"), (TOKENIZERS, "tokenizer"),
                           (MODELS, "model")]:
        assert isinstance(registry, Registry) and len(registry) >= 4
        with pytest.raises(UnknownNameError, match=f"unknown {kind} 'nope'; known: ") as caught:
            registry["nope"]
        assert isinstance(caught.value, KeyError) and isinstance(caught.value, ValueError)
        assert sorted(registry)[0] in str(caught.value)


def test_lazy_entries_import_their_module_only_when_built(tmp_path, monkeypatch):
    (tmp_path / "lazy_entry_module.py").write_text("class Thing:\n    def __init__(self, size=1):\n        self.size = size\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry("thing")
    registry.register("thing", "lazy_entry_module:Thing", description="a lazily imported thing")
    assert "thing" in registry and "lazy_entry_module" not in sys.modules
    assert registry.build("thing", size=3).size == 3 and "lazy_entry_module" in sys.modules
    assert registry.describe("thing") == "a lazily imported thing"


def test_decorator_registration_and_populate_runs_once():
    calls = []
    registry = Registry("widget", populate=lambda: calls.append(1) or registry.register("built-in", dict))

    @registry.register("mine")
    def make_mine(**options):
        return options

    assert make_mine(a=1) == {"a": 1}  # the decorator hands the function back unchanged
    assert sorted(registry) == ["built-in", "mine"] and registry.build("mine", a=2) == {"a": 2}
    assert "built-in" in registry and calls == [1]
    del registry["mine"]
    assert "mine" not in registry
