"""Fixtures shared by the foundation tests."""

import pytest
import torch

from sidrec.data import build_dataset
from synthetic import cyclic_raw

torch.set_num_threads(1)


@pytest.fixture
def cyclic_dataset():
    return build_dataset(cyclic_raw(), "cyclic")
