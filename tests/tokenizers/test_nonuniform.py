import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sidrec.tokenizers import build_tokenizer
from sidrec.tokenizers.metrics import code_counts, collision_stats, level_stats
from sidrec.tokenizers.nonuniform import (
    KumaraswamyTransform,
    LogisticTransform,
    RunningStandardiser,
    build_transform,
    fit_kumaraswamy,
)


def _kumaraswamy(a, b, mean=0.0, std=1.0, space="logit"):
    a, b = torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32)
    t = KumaraswamyTransform(a.numel(), space=space).eval()
    t.set_params(a, b)
    t.standardise.mean.fill_(mean)
    t.standardise.std.fill_(std)
    return t


@settings(max_examples=60, deadline=None)
@given(a=st.floats(0.2, 5.0), b=st.floats(0.2, 5.0), std=st.sampled_from([0.05, 1.0, 20.0]))
def test_kumaraswamy_logit_space_inverts_over_a_wide_range_for_any_a_b(a, b, std):
    """space=logit: h^-1(h(z)) = z to 1e-5 (of the latent scale) for |z - mean| <= 6 std and 3e-5 for
    <= 12 std, every a, b in [0.2, 5]: log space, never clamped, never saturated (the old transform
    failed at |z| = 2). Worst seen on a 12 x 12 grid of a, b: 3.6e-6 and 6.1e-6."""
    t = _kumaraswamy([a], [b], mean=0.3, std=std)
    s = torch.linspace(-12, 12, 2401)[:, None]
    z = 0.3 + s * std
    with torch.no_grad():
        h = t(z)
        back = t.inverse(h)
    assert torch.isfinite(h).all() and (h.diff(dim=0) > 0).all()  # strictly increasing, no plateau
    error = (back - z).abs() / std
    assert error[s.abs() <= 6].max() < 1e-5 and error.max() < 3e-5


def test_kumaraswamy_inverts_far_beyond_the_data_and_states_where_it_stops():
    """Documented range: |s| <= 65 (s = standardised latent) inverts to 1e-4 relative for a, b in [0.2, 5]."""
    t = _kumaraswamy([0.2, 5.0, 0.2, 5.0], [0.2, 5.0, 5.0, 0.2])
    s = torch.linspace(-65, 65, 1301)[:, None].expand(-1, 4)
    with torch.no_grad():
        back = t.inverse(t(s))
    assert torch.isfinite(back).all()
    assert ((back - s).abs() / s.abs().clamp_min(1)).max() < 1e-4


@settings(max_examples=60, deadline=None)
@given(a=st.floats(0.2, 5.0), b=st.floats(0.2, 5.0))
def test_kumaraswamy_unit_space_inverts_wherever_float32_resolves_it(a, b):
    """space=unit (CARD): y in (0, 1) is resolved to ~6e-8 near 1, so the round trip holds to 1e-5 of the
    latent std for |s| <= 6 wherever dy/ds >= 1e-2 and y <= 1 - 1e-4, for every a, b in [0.2, 5]
    (worst seen on a 12 x 12 grid of a, b: 4.5e-6)."""
    t = _kumaraswamy([a], [b], std=0.08, space="unit")
    s = torch.linspace(-6, 6, 2401, dtype=torch.float64)[:, None]
    with torch.no_grad():
        y64 = _kumaraswamy([a], [b], space="unit").double()(s)
        z = (s * 0.08).float()
        back = t.inverse(t(z))
    slope = torch.gradient(y64[:, 0], spacing=(s[:, 0],))[0][:, None]
    resolved = (slope >= 1e-2) & (y64 <= 1 - 1e-4)
    assert resolved.sum() > 100
    assert ((back - z).abs() / 0.08)[resolved].max() < 1e-5


def test_kumaraswamy_fitted_to_skewed_latents_unit_space_saturates_only_the_top_tail_logit_never():
    """What README states: on log-normal latents a fitted K leaves ~1.3 % of them at y = 1 in float32
    (unit space cannot invert those); the logit space inverts all of them to 1e-5."""
    z = torch.distributions.LogNormal(0.0, 0.8).sample((20000, 3), ) * 0.05
    errors = {}
    for space in ("unit", "logit"):
        t = KumaraswamyTransform(3, space=space).eval().fit(z)
        with torch.no_grad():
            errors[space] = (t.inverse(t(z)) - z).abs() / z.std(0)
        assert torch.isfinite(errors[space]).all()
    assert (errors["unit"] < 1e-5).float().mean() > 0.98
    assert errors["logit"].max() < 1e-5


def test_kumaraswamy_is_exactly_standardisation_at_a_b_one():
    t = _kumaraswamy([1.0, 1.0], [1.0, 1.0], mean=2.0, std=0.5)
    z = torch.randn(100, 2) * 0.5 + 2
    with torch.no_grad():
        torch.testing.assert_close(t(z), (z - 2) / 0.5, atol=1e-5, rtol=1e-5)


def test_kumaraswamy_running_statistics_follow_training_batches_and_are_shared_by_the_inverse():
    t = KumaraswamyTransform(3).train()
    z = torch.randn(512, 3) * 0.08 + 1.0  # an encoder's latents: tiny spread, off centre
    t(z)  # the first training batch initialises the statistics
    assert torch.allclose(t.standardise.mean, z.mean(0)) and torch.allclose(t.standardise.std, z.std(0))
    t.eval()
    before = t.standardise.mean.clone()
    with torch.no_grad():
        t(torch.randn(64, 3) * 100)
        assert torch.equal(t.standardise.mean, before)  # eval never moves them
        torch.testing.assert_close(t.inverse(t(z)), z, atol=1e-6, rtol=0)


def test_kumaraswamy_stays_finite_with_a_gradient_for_latents_far_outside_the_running_statistics():
    """An early encoder's latent can sit hundreds of running stds out; h, h^-1 and the fit loss stay finite
    (a CARD-unit NU-RQ-VAE fit died on a NaN here: u^a rounded to 1 and log(1 - u^a) to -inf)."""
    t = KumaraswamyTransform(2).train()
    t(torch.randn(256, 2) * 0.01)
    t.eval()
    z = torch.tensor([[500.0, -500.0], [3.0, 0.0]], requires_grad=True)
    out = t(z)
    loss = out.sum() + t.inverse(out).sum() + t.fit_loss(z)
    loss.backward()
    assert torch.isfinite(out).all() and torch.isfinite(loss)
    assert all(torch.isfinite(g).all() for g in (z.grad, t.raw_a.grad, t.raw_b.grad))


def test_kumaraswamy_fit_loss_trains_a_and_b_to_the_maximum_likelihood_and_reduces_skew():
    """The likelihood loss reaches a, b (not the latents) with a useful gradient and drives them to the
    MLE of the latent marginal, which makes K(u) less skewed than the identity leaves it."""
    torch.manual_seed(0)
    z = torch.distributions.LogNormal(0.0, 0.8).sample((4096, 2)) * 0.05  # skewed and tiny, like real latents
    t = KumaraswamyTransform(2).train()
    t(z)
    z_leaf = z.clone().requires_grad_(True)
    t.fit_loss(z_leaf).backward()
    assert t.raw_a.grad.abs().min() > 1e-2 and t.raw_b.grad.abs().min() > 1e-2 and z_leaf.grad is None
    opt = torch.optim.Adam(t.parameters(), lr=0.05)
    for _ in range(300):
        opt.zero_grad()
        t.fit_loss(z).backward()
        opt.step()
    mle = KumaraswamyTransform(2).eval().fit(z)
    torch.testing.assert_close(t.a, mle.a, rtol=0.05, atol=0)
    torch.testing.assert_close(t.b, mle.b, rtol=0.05, atol=0)
    skew = lambda x: (((x - x.mean(0)) / x.std(0)) ** 3).mean(0).abs()  # noqa: E731
    with torch.no_grad():
        identity = torch.sigmoid(t.standardise(z))
        assert (skew(torch.sigmoid(t(z))) < skew(identity) - 0.2).all()


def test_kumaraswamy_fit_loss_is_the_mean_negative_log_likelihood_of_the_squashed_latents():
    """Its value (logged as `fit`) is exact, not only its gradient: -mean log p(u), u = sigmoid(s(z))."""
    t = _kumaraswamy([0.5, 2.0], [3.0, 0.7], mean=0.3, std=2.0)
    z = torch.randn(512, 2, generator=torch.Generator().manual_seed(0)) * 2 + 0.3
    u = torch.sigmoid((z - 0.3) / 2.0)
    expected = -torch.distributions.Kumaraswamy(t.a, t.b).log_prob(u).mean()
    torch.testing.assert_close(t.fit_loss(z), expected, rtol=1e-4, atol=1e-5)


def test_logistic_starts_centred_on_its_range_with_alpha_times_range_4_and_maps_the_range_onto_0_1():
    """The official initialisation: x0 in the middle of [x_min, x_max] (before data: [-1, 1]) and
    alpha (x_max - x_min) = 4, at every scale of the range; h(x_min) = 0 and h(x_max) = 1."""
    fresh = LogisticTransform(3).eval()
    small = LogisticTransform(3).anchor(torch.randn(512, 3, generator=torch.Generator().manual_seed(0)) * 0.05 + 3.0)
    for t in (fresh, small):
        alpha, x0 = t._shape()
        torch.testing.assert_close(alpha * (t.x_max - t.x_min), torch.full((3,), 4.0))
        torch.testing.assert_close(x0, (t.x_min + t.x_max) / 2)
        with torch.no_grad():
            ends = t(torch.stack([t.x_min, t.x_max]))
        torch.testing.assert_close(ends, torch.tensor([[0.0] * 3, [1.0] * 3]), atol=1e-6, rtol=0)
    torch.testing.assert_close(fresh.x_min, torch.full((3,), -1.0))
    torch.testing.assert_close(fresh.x_max, torch.full((3,), 1.0))


def test_logistic_running_range_moves_by_its_default_momentum_of_one_percent():
    t = LogisticTransform(2).train()
    t(torch.zeros(4, 2))  # the first batch sets the range
    t(torch.full((4, 2), 100.0))
    torch.testing.assert_close(t.x_max, torch.full((2,), 1.0))


def _fitted_logistic(seed=0):
    g = torch.Generator().manual_seed(seed)
    t = LogisticTransform(5)
    t.train()
    for _ in range(5):
        t(torch.randn(256, 5, generator=g) * 2)
    with torch.no_grad():
        t.raw_alpha.copy_(torch.randn(5, generator=g) * 0.5 + 1.5)
        t.raw_x0.copy_(torch.randn(5, generator=g) * 0.5)
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


@pytest.mark.parametrize("std", [0.05, 1.0, 5.0, 20.0])
def test_logistic_range_normalisation_inverts_latents_of_any_scale(std):
    """alpha = softplus(raw) / range and x0 inside the range: the same parameters work at every
    latent scale (without it 2 % of std-5 and 54 % of std-20 latents failed to invert)."""
    t = LogisticTransform(4).train()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4096, 4, generator=g) * std + 3.0
    t(x)
    t.eval()
    with torch.no_grad():
        back = t.inverse(t(x))
    assert ((back - x).abs() / std).max() < 1e-4


def test_logistic_inverse_stays_finite_for_codewords_outside_the_unit_interval():
    """A sum of residual codewords can leave (0, 1): its inverse must be a finite latent, not +-inf or NaN."""
    t = _fitted_logistic()
    with torch.no_grad():
        back = t.inverse(torch.tensor([[-1.0] * 5, [2.0] * 5]))
    assert torch.isfinite(back).all() and (back[0] < back[1]).all()


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


def test_logistic_frozen_statistics_are_not_moved_by_training_batches():
    """NU-RQ-VAE's `anchor: epoch` freezes the range between anchors: a batch must not drag it."""
    t = LogisticTransform(3).anchor(torch.randn(256, 3))
    t.freeze_statistics()
    frozen = (t.x_min.clone(), t.x_max.clone())
    t.train()
    t(torch.full((8, 3), 50.0))
    assert torch.equal(t.x_min, frozen[0]) and torch.equal(t.x_max, frozen[1])


def test_nonuniform_wrapper_latents_are_the_standardised_inputs_and_what_the_quantizer_sees(skewed):
    """`latents` feeds the report's before / after plot: before = per-dimension z-score of the inputs."""
    x = skewed * 3.0 + 2.0
    tok = build_tokenizer("nu-rkmeans", n_levels=1, codebook_size=8).fit(x)
    s, h = tok.latents(x)
    assert s.mean(0).abs().max() < 1e-4 and (s.std(0) - 1).abs().max() < 1e-4
    assert torch.equal(h, tok.transform(x))


def test_fit_kumaraswamy_recovers_parameters():
    a_true, b_true = torch.tensor([0.5, 2.0, 4.0]), torch.tensor([3.0, 1.0, 0.7])
    torch.manual_seed(0)
    u = torch.distributions.Kumaraswamy(a_true, b_true).sample((20000,))
    a, b = fit_kumaraswamy(u)
    assert torch.allclose(a, a_true, rtol=0.08) and torch.allclose(b, b_true, rtol=0.08)


def test_fit_kumaraswamy_leaves_a_constant_column_as_the_identity():
    """A dead embedding dimension (Beauty's MiniLM has three) once got b = 3.8e14 from a divergent MLE."""
    torch.manual_seed(0)
    skewed = torch.distributions.Kumaraswamy(torch.tensor(0.5), torch.tensor(3.0)).sample((5000, 1))
    u = torch.cat([skewed, torch.full((5000, 1), 0.5)], dim=1)
    a, b = fit_kumaraswamy(u)
    assert a[1] == 1.0 and b[1] == 1.0
    assert abs(a[0] - 0.5) < 0.05 and abs(b[0] - 3.0) < 0.3


@pytest.mark.parametrize("name, levels", [("rkmeans", {"n_levels": 2}), ("pq", {"n_subspaces": 2})])
def test_nonuniform_wrapper_spreads_codes_on_skewed_data(skewed, name, levels):
    """The defining property of the plug-and-play transform: more even codebook use, fewer collisions
    (measured here: perplexity ~14 of 16 vs ~5-8 plain; the logit space does not do this)."""
    stats = {}
    for prefix in ("", "nu-"):
        tok = build_tokenizer(prefix + name, codebook_size=16, **levels).fit(skewed)
        codes = tok.encode(skewed)
        ppl = [level_stats(c)["perplexity"] for c in code_counts(codes, tok.codebook_sizes)]
        stats[prefix] = (collision_stats(codes)["collision_rate"], ppl)
    assert stats["nu-"][0] < stats[""][0]
    assert all(nu > plain for nu, plain in zip(stats["nu-"][1], stats[""][1]))


def test_nonuniform_wrapper_hands_its_quantizer_the_space_it_was_asked_for(skewed):
    """`nu_space=logit` quantizes logit K(u), unbounded; the default `unit` space lies in (0, 1)."""
    h = {space: build_tokenizer("nu-rkmeans", n_levels=1, codebook_size=8, nu_space=space).fit(skewed).latents(skewed)[1]
         for space in ("unit", "logit")}
    assert h["unit"].min() >= 0 and h["unit"].max() <= 1
    assert h["logit"].min() < -1 and h["logit"].max() > 2
    assert torch.allclose(torch.sigmoid(h["logit"]), h["unit"], atol=1e-5)


def test_nonuniform_wrapper_fits_its_transform_on_a_subsample_drawn_by_its_seed():
    """Above `fit_kumaraswamy`'s 8,192 rows the MLE runs on a random subset: the tokenizer's seed draws it."""
    x = torch.randn(9000, 3, generator=torch.Generator().manual_seed(0)).exp()
    a = [build_tokenizer("nu-rkmeans", n_levels=1, codebook_size=4, seed=seed).fit(x).transform.a for seed in (1, 1, 2)]
    assert torch.equal(a[0], a[1]) and not torch.equal(a[0], a[2])


@pytest.mark.parametrize("transform", ["kumaraswamy", "logistic"])
def test_nurqvae_anchors_the_transform_to_the_latents_of_near_identical_embeddings(transform):
    """CARD's image embeddings are nearly identical (cosine ~0.98): the latents' spread is far below
    the encoder's drift while it trains. Running averages of the batches then ended ~80 spreads from
    the data and h saturated at 0 / 1; anchored every epoch, the trained model's h(z) spreads over (0, 1)."""
    from sidrec.tokenizers import build_tokenizer

    g = torch.Generator().manual_seed(0)
    common = torch.randn(1, 64, generator=g)
    x = torch.nn.functional.normalize(common + 0.02 * torch.randn(600, 64, generator=g), dim=1)
    tok = build_tokenizer("nurqvae", transform=transform, n_levels=2, codebook_size=16, hidden_dims=[64], latent_dim=8,
                          epochs=30, lr=3e-3, batch_size=64, progress=False).fit(x)
    _, h = tok.latents(x)
    inside = ((h > 0.02) & (h < 0.98)).float().mean()
    assert inside > 0.8, f"only {inside:.0%} of h(z) lies inside (0.02, 0.98): the transform saturates"
    assert h.std(0).min() > 0.1  # every dimension spread, none collapsed onto one end


def test_nurqvae_epoch_anchor_keeps_a_b_at_the_likelihood_optimum_of_the_latents(skewed):
    """Trained by gradient alone at the encoder's learning rate, a and b stayed within ~0.1 of 1 (Adam moves a
    parameter ~lr per step); anchored, each epoch starts from the maximum-likelihood fit to every item's latents."""
    from sidrec.tokenizers import build_tokenizer
    from sidrec.tokenizers.nonuniform import fit_kumaraswamy

    tok = build_tokenizer("nurqvae", n_levels=2, codebook_size=16, hidden_dims=[32], latent_dim=8, epochs=6,
                          batch_size=256, select="last", progress=False).fit(skewed)
    z, _ = tok.latents(skewed)
    t = tok.model.transform
    a, b = fit_kumaraswamy(torch.sigmoid((z - t.standardise.mean) / t.standardise.std))
    assert (t.a - a).abs().max() < 0.15 * a.max() and (t.b - b).abs().max() < 0.15 * b.max()
    assert (a - 1).abs().max() > 0.3 or (b - 1).abs().max() > 0.3  # the optimum is not the identity here


@pytest.mark.parametrize("space, anchor", [("logit", "ema"), ("unit", "epoch")])
def test_nurqvae_builds_its_model_with_the_transform_options_it_was_given(space, anchor):
    model = build_tokenizer("nurqvae", space=space, anchor=anchor, hidden_dims=[16], latent_dim=4)._build_model(8)
    assert model.transform.space == space and model.anchors == (anchor == "epoch")


def test_nurqvae_refuses_an_unknown_anchor_by_naming_the_choices():
    with pytest.raises(ValueError, match=r"anchor must be one of \('epoch', 'ema'\), got 'weekly'"):
        build_tokenizer("nurqvae", anchor="weekly", hidden_dims=[16], latent_dim=4)._build_model(8)


def test_build_transform_by_name_and_refusals_that_name_the_choices():
    k, lg = build_transform("kumaraswamy", 4, space="logit"), build_transform("logistic", 4)
    assert isinstance(k, KumaraswamyTransform) and k.space == "logit" and k.raw_a.shape == (4,)
    assert isinstance(lg, LogisticTransform) and lg.raw_alpha.shape == (4,)
    assert build_transform("kumaraswamy", 2).space == "unit"
    with pytest.raises(KeyError, match=r"unknown non-uniform transform 'gauss'; choose one of \['kumaraswamy', 'logistic'\]"):
        build_transform("gauss", 4)
    with pytest.raises(ValueError, match=r"space='logit' applies to the kumaraswamy transform only"):
        build_transform("logistic", 4, space="logit")
    with pytest.raises(ValueError, match=r"space must be 'unit' or 'logit', got 'probit'"):
        KumaraswamyTransform(2, space="probit")


def test_kumaraswamy_starts_as_the_identity_on_u_with_unbounded_statistics_and_1_percent_momentum():
    """Before data: mean 0, std 1, a = b = 1 (h = sigmoid), no range bound on the inverse; then the first
    batch sets the statistics and each later one moves them by 1 %."""
    t = KumaraswamyTransform(2).eval()
    torch.testing.assert_close(t.a, torch.ones(2))
    torch.testing.assert_close(t.b, torch.ones(2))
    z = torch.tensor([[-3.0, 0.5], [2.0, 4.0]])
    with torch.no_grad():
        torch.testing.assert_close(t(z), torch.sigmoid(z))
        far = torch.tensor([[-1e30, 1e30]])
        torch.testing.assert_close(t.standardise.inverse(far), far)  # lo / hi start at -inf / inf
    for std in (t.standardise.train(), RunningStandardiser(2)):
        _first_batch_sets_later_batches_move_by_1_percent(std)


def _first_batch_sets_later_batches_move_by_1_percent(std):
    assert not bool(std.initialised)
    std(torch.tensor([[0.0], [2.0]]).expand(2, 2))
    assert bool(std.initialised)
    torch.testing.assert_close(std.mean, torch.ones(2))
    std(torch.full((2, 2), 101.0))
    torch.testing.assert_close(std.mean, torch.full((2,), 2.0))  # 1 + 0.01 (101 - 1)


def test_kumaraswamy_set_params_sets_a_and_b():
    t = KumaraswamyTransform(3)
    a, b = torch.tensor([0.2, 1.0, 5.0]), torch.tensor([4.0, 0.3, 1.0])
    t.set_params(a, b)
    torch.testing.assert_close(t.a, a)
    torch.testing.assert_close(t.b, b)


@pytest.mark.parametrize("transform", ["kumaraswamy", "logistic"])
def test_nurqvae_aux_losses_are_consistency_and_for_kumaraswamy_the_fit_likelihood(transform):
    tok = build_tokenizer("nurqvae", transform=transform, hidden_dims=[16], latent_dim=4)
    model = tok._build_model(8)
    z = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
    model.anchor(z)
    d = model.to_quant(z) + 0.05
    losses = model.aux_losses(z, d)
    torch.testing.assert_close(losses["consistency"], torch.nn.functional.mse_loss(model.from_quant(d), z))
    assert losses["consistency"] > 0
    if transform == "kumaraswamy":
        torch.testing.assert_close(losses["fit"], model.transform.fit_loss(z))
    else:
        assert set(losses) == {"consistency"}


def test_kumaraswamy_passes_its_momentum_to_its_standardiser():
    assert KumaraswamyTransform(2, momentum=0.5).standardise.momentum == 0.5


def test_kumaraswamy_unit_space_inverse_resolves_the_last_floats_below_1():
    """y is clamped only to the largest float32 below 1: the two largest y still decode to distinct, ordered s."""
    t = _kumaraswamy([1.0], [1.0], space="unit")
    top = torch.tensor([[1 - 2.0**-23], [1 - 2.0**-24], [1.0]])
    with torch.no_grad():
        s = t.inverse(top).flatten()
    assert s[0] < s[1] and torch.isfinite(s).all() and s[2] == s[1]
