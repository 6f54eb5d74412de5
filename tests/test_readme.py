"""The README's Python examples run as written: every ```python block of its "Python API" section, in order."""

import os
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(section: str) -> list[str]:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"## {section}\n")
    end = text.find("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start:end if end > 0 else None], flags=re.S)


def test_python_api_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the examples' caches land here, not in the checkout
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    blocks = python_blocks("Python API")
    assert len(blocks) >= 2
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102 - the README's own code
    assert namespace["dataset"].n_items == 1682 and namespace["codes"].shape == (1682, 3)
    assert os.path.isdir(tmp_path / ".cache")
