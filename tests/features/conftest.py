"""Shared fixtures for the item-encoder tests: a tiny catalogue with and without pictures."""

import os

import pandas as pd
import pytest
import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)


@pytest.fixture
def catalogue(tmp_path) -> pd.DataFrame:
    """Four items: one real picture, one broken path, one unreadable file, one with no picture at all."""
    red = tmp_path / "red.png"
    Image.new("RGB", (120, 80), (210, 40, 40)).save(red)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    return pd.DataFrame(
        {
            "item_id": ["A1", "B2", "C3", "D4"],
            "title": ["Red running shoe", "Blue running shoe", "Glass chemistry beaker 250 ml", "Steel staples"],
            "brand": ["Acme", None, "LabCo", ""],
            "categories": ["Shoes > Running", "Shoes,Running", None, "Office > Fasteners"],
            "image": [str(red), str(tmp_path / "missing.png"), str(broken), None],
        }
    )
