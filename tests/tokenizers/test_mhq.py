"""MHQ: M x L codes, balanced views, near-orthogonal projection, save/load, the optional CARD transform."""

import pytest
import torch

from sidrec.tokenizers import Tokenizer, build_tokenizer
from sidrec.tokenizers.mhq import balance_loss, ortho_loss, view_energies

FAST = {"n_views": 4, "n_levels": 2, "codebook_size": 8, "proj_dim": 8, "epochs": 15, "batch_size": 200,
        "kmeans_iters": 10}


@pytest.fixture
def anisotropic() -> torch.Tensor:
    """Dimensions with variances spread over two orders of magnitude: PCA views start very unbalanced."""
    g = torch.Generator().manual_seed(0)
    return torch.randn(600, 16, generator=g) * torch.logspace(0.5, -1, 16)


def test_codes_shape_range_decode_and_save_load(anisotropic, tmp_path):
    tok = build_tokenizer("mhq", **FAST).fit(anisotropic)
    codes = tok.encode(anisotropic)
    assert codes.shape == (600, 4 * 2) and tok.codebook_sizes == [8] * 8
    assert codes.min() >= 0 and codes.max() < 8
    x_hat = tok.decode(codes)
    assert x_hat.shape == anisotropic.shape
    # quantized reconstruction beats predicting the mean
    assert (x_hat - anisotropic).pow(2).sum() < (anisotropic - anisotropic.mean(0)).pow(2).sum()
    tok.save(tmp_path / "tok")
    back = Tokenizer.load(tmp_path / "tok")
    assert torch.equal(back.encode(anisotropic), codes)
    assert torch.allclose(back.decode(codes), x_hat)


def test_balance_term_evens_view_energy_and_projection_stays_orthogonal(anisotropic):
    options = {**FAST, "batch_size": 100}
    balanced = build_tokenizer("mhq", **options).fit(anisotropic).report(anisotropic)
    unbalanced = build_tokenizer("mhq", **options, balance_weight=0.0).fit(anisotropic).report(anisotropic)
    assert balanced["balance"] < 0.5 * unbalanced["balance"]
    assert balanced["ortho"] < 0.05  # ||W W^T - I||_F^2 with D = 8 rows
    shares = torch.tensor(balanced["energy_share_per_view"])
    assert shares.sum() == pytest.approx(1.0, abs=1e-5) and len(shares) == 4
    assert len(balanced["codes"]) == 8 and {c["view"] for c in balanced["codes"]} == {0, 1, 2, 3}


def test_loss_terms_match_their_definitions():
    z = torch.tensor([[1.0, 0.0, 2.0, 0.0], [1.0, 0.0, 0.0, 0.0]])  # 2 views of 2 dims
    energies = view_energies(z, 2)
    assert energies.tolist() == [1.0, 2.0]
    assert balance_loss(energies).item() == pytest.approx(0.5 / 1.5)
    assert balance_loss(energies * 10).item() == pytest.approx(balance_loss(energies).item())  # scale-free
    assert ortho_loss(torch.eye(3, 5)).item() == 0.0
    assert ortho_loss(2 * torch.eye(3, 5)).item() == pytest.approx(27.0)


@pytest.mark.parametrize("transform", ["kumaraswamy", "logistic"])
def test_non_uniform_transform_per_subspace(anisotropic, transform, tmp_path):
    tok = build_tokenizer("mhq", **{**FAST, "epochs": 5}, transform=transform).fit(anisotropic)
    before, after = tok.latents(anisotropic)
    assert before.shape == after.shape == (600, 8)
    assert torch.isfinite(after).all() and not torch.allclose(after, before)
    codes = tok.encode(anisotropic)
    assert torch.isfinite(tok.decode(codes)).all()
    tok.save(tmp_path / "tok")
    assert torch.equal(Tokenizer.load(tmp_path / "tok").encode(anisotropic), codes)


def test_bad_options_are_named(anisotropic):
    with pytest.raises(ValueError, match="proj_dim=6 must be a positive multiple of n_views=4"):
        build_tokenizer("mhq", **{**FAST, "proj_dim": 6}).fit(anisotropic)
    with pytest.raises(ValueError, match="exceeds the embedding dimension"):
        build_tokenizer("mhq", **{**FAST, "proj_dim": 32}).fit(anisotropic)
    with pytest.raises(ValueError, match="transform"):
        build_tokenizer("mhq", transform="sqrt")
