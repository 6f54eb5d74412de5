"""Fixtures shared by the foundation tests."""

import pytest
import torch

from sidrec.data import build_dataset
from browser import browser_page, chromium_browser  # noqa: F401  (the browser fixtures, for every test)
from synthetic import cyclic_raw

torch.set_num_threads(1)


@pytest.fixture
def cyclic_dataset():
    return build_dataset(cyclic_raw(), "cyclic")


@pytest.fixture
def p5_files(tmp_path):
    raw = cyclic_raw(n_users=40, length=7)
    lines = [" ".join([user, *group["item_id"]]) for user, group in raw.interactions.groupby("user_id", sort=False)]
    (tmp_path / "seq.txt").write_text("\n".join(lines) + "\n")
    raw.items.to_json(tmp_path / "items.jsonl", orient="records", lines=True)
    return tmp_path
