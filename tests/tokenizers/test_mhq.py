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


# ----- defining properties: EMA codebooks, dead-code restart, balance and orthogonality terms -------------

def _model(codebook_size: int = 4, n_levels: int = 2, seed: int = 0):
    """MHQModel with 2 views of 2 dims, identity projection and random codebooks (no fitting)."""
    from sidrec.tokenizers.mhq import MHQModel

    model = MHQModel(4, 4, 2, n_levels, codebook_size, "none", 0.25)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.projection.copy_(torch.eye(4))
        for rq in model.views:
            rq.codebooks.copy_(torch.randn(rq.codebooks.shape, generator=g) * 2)
    return model


def test_ema_step_moves_used_codewords_to_their_residual_mean_by_the_decay_rule():
    """EMA codebook update: count <- decay count + (1 - decay) n_k, sum <- decay sum + (1 - decay) sum_k,
    codeword = sum / count; a used codeword moves toward the mean of its residuals, unused ones stay."""
    from sidrec.tokenizers.mhq import EMACodebooks

    model, decay = _model(), 0.8
    d = torch.randn(200, 4, generator=torch.Generator().manual_seed(1))
    ema = EMACodebooks(model, decay)  # starts from count 1, sum = codeword
    before = [rq.codebooks.detach().clone() for rq in model.views]
    expected_codes = model.quantize(d)
    codes = ema.update(d)
    assert torch.equal(codes, expected_codes)
    moved_any = 0
    for m, (rq, part) in enumerate(zip(model.views, model.split(d))):
        view_codes, residuals = _residuals_with(before[m], part)
        assert torch.equal(view_codes, codes[:, 2 * m: 2 * m + 2])
        for level in range(2):
            idx = view_codes[:, level]
            for k in range(4):
                old, new = before[m][level, k], rq.codebooks[level, k]
                n_k = int((idx == k).sum())
                if n_k == 0:
                    assert torch.allclose(new, old, atol=1e-4)
                    continue
                mean = residuals[level][idx == k].mean(0)
                rule = (decay * old + (1 - decay) * n_k * mean) / (decay + (1 - decay) * n_k)
                assert torch.allclose(new, rule, rtol=1e-3, atol=1e-4)
                assert (new - mean).norm() < (old - mean).norm() - 1e-3 * (old - mean).norm()
                moved_any += 1
    assert moved_any >= 8


def _residuals_with(books: torch.Tensor, part: torch.Tensor):
    """Greedy codes and the residual entering each level, for codebooks `books [L, K, Dv]`."""
    from sidrec.tokenizers.residual import ResidualQuantizer

    rq = ResidualQuantizer(books.shape[0], books.shape[1], books.shape[2])
    with torch.no_grad():
        rq.codebooks.copy_(books)
    return rq.residuals(part)


def test_mhq_fit_updates_codebooks_by_ema(anisotropic):
    """Codebooks get no gradient in MHQ: without restarts, only the EMA update can move them away from
    their k-means initialisation during fitting."""
    options = {**FAST, "epochs": 1, "dead_code_restart": False}
    fitted = build_tokenizer("mhq", **options).fit(anisotropic)
    fresh = build_tokenizer("mhq", **options)
    initial = fresh._build_model(anisotropic.shape[1])
    fresh._initialise(initial, anisotropic)
    for rq_fit, rq_init in zip(fitted.model.views, initial.views):
        moved = (rq_fit.codebooks - rq_init.codebooks).abs().amax(-1)  # [L, K]
        assert (moved > 1e-4).float().mean() > 0.5


def test_dead_codewords_are_reseeded_from_residuals_and_used_ones_kept():
    """Dead-code restart: codewords unused this epoch are replaced by live residuals (and their EMA
    statistics reset to them); used codewords and their statistics are untouched."""
    from sidrec.tokenizers.mhq import EMACodebooks

    model = _model(codebook_size=6)
    d = torch.randn(100, 4, generator=torch.Generator().manual_seed(2))
    ema = EMACodebooks(model, 0.9)
    ema.update(d)
    usage = torch.ones(2, 2, 6, dtype=torch.long)
    dead = torch.zeros(2, 2, 6, dtype=torch.bool)
    dead[0, 0, [1, 4]] = dead[1, 1, 0] = True
    usage[dead] = 0
    books = torch.stack([rq.codebooks.detach().clone() for rq in model.views])
    count, total = ema.count.clone(), ema.total.clone()
    residuals = [model.views[m].residuals(part)[1] for m, part in enumerate(model.split(d))]
    restarted = ema.restart_dead(d, usage, torch.Generator().manual_seed(0))
    after = torch.stack([rq.codebooks.detach() for rq in model.views])
    assert restarted == int(dead.sum())
    assert torch.equal(after[~dead], books[~dead])
    assert torch.equal(ema.count[~dead], count[~dead]) and torch.equal(ema.total[~dead], total[~dead])
    assert ((after[dead] - books[dead]).abs().amax(-1) > 1e-3).all()
    for m, level, k in dead.nonzero().tolist():
        assert (residuals[m][level] - after[m, level, k]).abs().amax(-1).min() < 1e-6  # a real residual
        assert ema.count[m, level, k] == 1.0 and torch.equal(ema.total[m, level, k], after[m, level, k])


def test_mhq_fit_restarts_dead_codewords(anisotropic):
    """The fit loop runs the dead-code restart between epochs: 10 distinct points can use at most 10 of
    the 16 codewords of each (view, level), so at least 6 x 8 codewords die in the first epoch."""
    x = anisotropic[:10].repeat(10, 1)
    tok = build_tokenizer("mhq", **{**FAST, "epochs": 2, "codebook_size": 16, "batch_size": 100}).fit(x)
    assert tok.history[0]["restarted"] >= 6 * 8
    assert "restarted" not in tok.history[-1]  # not after the last epoch


def _whitened(n: int = 256, dim: int = 4, seed: int = 0) -> torch.Tensor:
    """Centred points whose covariance is exactly the identity (so every unit direction has energy 1)."""
    x = torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x = x - x.mean(0)
    evals, evecs = torch.linalg.eigh(x.T @ x / n)
    return (x @ evecs @ torch.diag(evals.rsqrt()) @ evecs.T).float()


def _descend(loss_of, w: torch.Tensor, lr: float) -> tuple[float, float, float]:
    """(loss, gradient norm, loss after one gradient step of size lr) at projection `w`."""
    w = w.clone().requires_grad_(True)
    loss = loss_of(w)
    (grad,) = torch.autograd.grad(loss, w)
    with torch.no_grad():
        return float(loss), float(grad.norm()), float(loss_of(w - lr * grad))


def _losses_at(model, x, projection):
    """The model's loss dict with W_P set to `projection`."""
    with torch.no_grad():
        model.projection.copy_(projection)
    return model(x)[1]


def test_balance_term_is_zero_for_equal_view_energy_and_its_gradient_evens_the_views():
    """Energy balance: ~0 when every view carries the same energy, > 0 when one view dominates, and a
    gradient step on W_P lowers it (through the model's own loss dict)."""
    model, x = _model(), _whitened()
    losses = _losses_at(model, x, torch.linalg.qr(torch.randn(4, 4, generator=torch.Generator().manual_seed(3)))[0])
    assert losses["balance"] < 1e-4 and losses["ortho"] < 1e-4
    unbalanced = torch.diag(torch.tensor([2.0, 2.0, 1.0, 1.0]))
    losses = _losses_at(model, x, unbalanced)
    assert losses["balance"] > 0.3
    losses["balance"].backward()
    assert model.projection.grad.norm() > 1e-3
    loss, grad_norm, stepped = _descend(lambda w: balance_loss(view_energies(x @ w.T, 2)), unbalanced, 1e-2)
    assert loss == pytest.approx(float(losses["balance"].detach()), rel=1e-5)
    assert stepped < loss - 1e-3 * grad_norm ** 2


def test_ortho_term_is_zero_for_orthonormal_rows_and_its_gradient_restores_them():
    """Orthogonality: ||W_P W_P^T - I||^2 is ~0 for orthonormal rows, > 0 otherwise, and a gradient step
    on W_P lowers it (through the model's own loss dict)."""
    model, x = _model(), _whitened()
    q = torch.linalg.qr(torch.randn(4, 4, generator=torch.Generator().manual_seed(4)))[0]
    assert _losses_at(model, x, q)["ortho"] < 1e-8
    skewed = q + 0.3 * torch.randn(4, 4, generator=torch.Generator().manual_seed(5))
    losses = _losses_at(model, x, skewed)
    assert losses["ortho"] > 0.1
    losses["ortho"].backward()
    assert model.projection.grad.norm() > 1e-2
    loss, grad_norm, stepped = _descend(ortho_loss, skewed, 1e-2)
    assert loss == pytest.approx(float(losses["ortho"].detach()), rel=1e-5)
    assert stepped < loss - 1e-3 * grad_norm ** 2


def test_reconstruction_gradient_reaches_the_quantizer_input_straight_through(anisotropic):
    """The codes are discrete: only the straight-through copy lets the reconstruction loss train what feeds
    the quantizer (the projection also reaches x_hat through unproject, so its gradient alone proves nothing)."""
    model = build_tokenizer("mhq", **{**FAST, "epochs": 1}).fit(anisotropic).model.train()
    model.projection.requires_grad_(True)
    seen, to_quant = {}, model.to_quant

    def spy(z):
        seen["d"] = d = to_quant(z)
        d.retain_grad()
        return d

    model.to_quant = spy
    _, losses = model(anisotropic[:64])
    losses["recon"].backward()
    assert seen["d"].grad is not None and seen["d"].grad.abs().sum() > 0
