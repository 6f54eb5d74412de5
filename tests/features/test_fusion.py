import pytest
import torch

from sidrec.features import ItemEmbeddings, fuse


def _blocks(n=40):
    g = torch.Generator().manual_seed(0)
    return ItemEmbeddings(100 * torch.randn(n, 8, generator=g), "big"), ItemEmbeddings(torch.randn(n, 4, generator=g), "small")


def test_concat_normalises_each_block_and_weights_it():
    big, small = _blocks()
    fused = fuse([big, small], weights=[1.0, 2.0], normalize=False)
    assert fused.vectors.shape == (40, 12)
    assert torch.allclose(fused.vectors[:, :8].norm(dim=1), torch.ones(40), atol=1e-5)
    assert torch.allclose(fused.vectors[:, 8:].norm(dim=1), torch.full((40,), 2.0), atol=1e-5)
    assert [b["encoder"] for b in fused.info["blocks"]] == ["big", "small"]


def test_pca_reduces_dim_deterministically():
    big, small = _blocks()
    a = fuse([big, small], dim=5)
    b = fuse([big, small], dim=5)
    assert a.vectors.shape == (40, 5)
    assert torch.equal(a.vectors, b.vectors)
    assert torch.allclose(a.vectors.norm(dim=1), torch.ones(40), atol=1e-5)
    assert 0 < a.info["pca_explained_variance"] <= 1


def test_pca_components_are_uncorrelated():
    big, small = _blocks()
    x = fuse([big, small], dim=4, normalize=False).vectors
    cov = x.T @ x
    off = cov - torch.diag(torch.diag(cov))
    assert off.abs().max() < 1e-3 * cov.diag().max()


def test_mismatched_blocks_fail_clearly():
    big, _ = _blocks(40)
    with pytest.raises(ValueError, match="n_items"):
        fuse([big, ItemEmbeddings(torch.randn(39, 4), "short")])
    with pytest.raises(ValueError, match="weight"):
        fuse([big], weights=[1.0, 2.0])
