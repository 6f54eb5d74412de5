import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture
def skewed() -> torch.Tensor:
    """Heavy-tailed toy embeddings: most mass near 0, a few far outliers per dimension."""
    return torch.randn(1200, 8, generator=torch.Generator().manual_seed(0)) ** 3
