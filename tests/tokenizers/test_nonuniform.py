import pytest
import torch

from sidrec.tokenizers import build_tokenizer
from sidrec.tokenizers.metrics import code_counts, collision_stats, level_stats
from sidrec.tokenizers.nonuniform import KumaraswamyTransform, LogisticTransform, fit_kumaraswamy


def _random_kumaraswamy(dim=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = KumaraswamyTransform(dim)
    t.set_params(torch.rand(dim, generator=g) * 3 + 0.3, torch.rand(dim, generator=g) * 3 + 0.3)
    return t


def test_kumaraswamy_inverts_and_is_monotone():
    t = _random_kumaraswamy()
    z = torch.linspace(-4, 4, 801, dtype=torch.float64)[:, None].expand(-1, 6)
    with torch.no_grad():
        y = t(z)
        back = t.inverse(y)
    in_range = (y > 10 * t.eps) & (y < 1 - 10 * t.eps)
    assert in_range.float().mean() > 0.8
    assert (back - z)[in_range].abs().max() < 1e-5
    assert (y.diff(dim=0) >= 0).all() and (y.diff(dim=0)[in_range[1:]] > 0).all()
    assert ((y > 0) & (y < 1)).all()


def test_kumaraswamy_float32_round_trip_moderate_range():
    t = _random_kumaraswamy(seed=1)
    z = torch.linspace(-2, 2, 401)[:, None].expand(-1, 6)
    with torch.no_grad():
        assert (t.inverse(t(z)) - z).abs().max() < 1e-5


def _fitted_logistic(seed=0):
    g = torch.Generator().manual_seed(seed)
    t = LogisticTransform(5)
    t.train()
    for _ in range(5):
        t(torch.randn(256, 5, generator=g) * 2)
    with torch.no_grad():
        t.raw_alpha.copy_(torch.randn(5, generator=g) * 0.5)
        t.beta.copy_(torch.randn(5, generator=g) * 0.3)
    return t.eval()


def test_logistic_inverts_and_is_monotone_in_range():
    t = _fitted_logistic()
    x = torch.linspace(0, 1, 501, dtype=torch.float64)[:, None] * (t.x_max - t.x_min) + t.x_min
    with torch.no_grad():
        y = t(x)
        back = t.inverse(y)
    assert (back - x).abs().max() < 1e-5
    assert (y.diff(dim=0) > 0).all()
    assert y.min() >= -1e-6 and y.max() <= 1 + 1e-6


def test_logistic_inverse_does_not_depend_on_batch():
    t = _fitted_logistic()
    buffers = (t.x_min.clone(), t.x_max.clone())
    y = torch.rand(64, 5)
    with torch.no_grad():
        alone = t.inverse(y[:1])
        in_batch = t.inverse(torch.cat([y[:1], y[1:] * 0.01]))[:1]
        t(torch.randn(64, 5) * 100)  # eval-mode forward must not move the running range
    assert torch.equal(alone, in_batch)
    assert torch.equal(t.x_min, buffers[0]) and torch.equal(t.x_max, buffers[1])


def test_logistic_training_forward_updates_running_range():
    t = LogisticTransform(3, momentum=0.5)
    t.train()
    t(torch.zeros(4, 3))
    t(torch.full((4, 3), 2.0))
    assert torch.allclose(t.x_max, torch.full((3,), 1.0))


def test_fit_kumaraswamy_recovers_parameters():
    a_true, b_true = torch.tensor([0.5, 2.0, 4.0]), torch.tensor([3.0, 1.0, 0.7])
    torch.manual_seed(0)
    u = torch.distributions.Kumaraswamy(a_true, b_true).sample((20000,))
    a, b = fit_kumaraswamy(u)
    assert torch.allclose(a, a_true, rtol=0.08) and torch.allclose(b, b_true, rtol=0.08)


@pytest.mark.parametrize("name, levels", [("rkmeans", {"n_levels": 2}), ("pq", {"n_subspaces": 2})])
def test_nonuniform_wrapper_spreads_codes_on_skewed_data(skewed, name, levels):
    stats = {}
    for prefix in ("", "nu-"):
        tok = build_tokenizer(prefix + name, codebook_size=16, **levels).fit(skewed)
        codes = tok.encode(skewed)
        ppl = [level_stats(c)["perplexity"] for c in code_counts(codes, tok.codebook_sizes)]
        stats[prefix] = (collision_stats(codes)["collision_rate"], ppl)
    assert stats["nu-"][0] < stats[""][0]
    assert all(nu > plain for nu, plain in zip(stats["nu-"][1], stats[""][1]))
