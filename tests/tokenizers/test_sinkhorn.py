"""Sinkhorn's transport plan: uniform marginals, forbidden entries, scale-free costs, clear errors."""

import pytest
import torch

from sidrec.tokenizers.sinkhorn import sinkhorn_assign, sinkhorn_plan


def _cost(n: int, k: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, k, generator=torch.Generator().manual_seed(seed))


def test_the_plan_has_the_uniform_marginals():
    """Every item carries mass 1/n, every codeword 1/K (the column update comes last, so columns are exact)."""
    n, k = 60, 12
    plan = sinkhorn_plan(_cost(n, k), epsilon=0.1, n_iters=300).exp()
    assert torch.allclose(plan.sum(0), torch.full((k,), 1 / k), atol=1e-6)
    assert torch.allclose(plan.sum(1), torch.full((n,), 1 / n), rtol=1e-3)
    assert plan.sum().item() == pytest.approx(1.0, abs=1e-5)


def test_a_clear_permutation_is_recovered_and_balance_overrides_the_nearest_codeword():
    n = 8
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(1))
    cost = torch.ones(n, n)
    cost[torch.arange(n), perm] = 0.0
    assert torch.equal(sinkhorn_assign(cost), perm)
    crowded = torch.ones(n, n)
    crowded[:, 0] = 0.0  # every item prefers codeword 0 ...
    crowded[torch.arange(n), perm] = torch.where(perm == 0, 0.0, 0.5)  # ... and each has one runner-up
    assert torch.bincount(sinkhorn_assign(crowded), minlength=n).max() == 1  # capacity 1/K: one item per codeword


def test_costs_are_scale_free():
    cost = _cost(30, 5)
    assert torch.allclose(sinkhorn_plan(cost), sinkhorn_plan(7.0 * cost + 3.0), atol=1e-5)


def test_forbidden_entries_get_no_mass_and_an_unusable_column_no_nan():
    cost = _cost(20, 6)
    cost[:10, 1] = torch.inf
    cost[:, 4] = torch.inf  # a codeword nobody may use
    plan = sinkhorn_plan(cost)
    assert not plan.isnan().any()
    mass = plan.exp()
    assert (mass[:10, 1] == 0).all() and (mass[:, 4] == 0).all()
    usable = [0, 1, 2, 3, 5]
    assert torch.allclose(mass.sum(0)[usable], torch.full((5,), 1 / 6), atol=1e-6)  # the others keep capacity 1/K
    assert torch.allclose(mass.sum(1), torch.full((20,), 5 / 6 / 20), rtol=0.1)  # so rows share 5/6 of the mass


@pytest.mark.parametrize("shape", [(1, 5), (5, 1)])
def test_a_single_row_or_column_is_a_valid_problem(shape):
    plan = sinkhorn_plan(_cost(*shape))
    assert plan.shape == shape and torch.isfinite(plan).all()
    assert plan.exp().sum().item() == pytest.approx(1.0, abs=1e-5)


def test_the_plan_keeps_float64_and_lifts_half_precision_to_float32():
    cost = _cost(10, 4)
    assert sinkhorn_plan(cost.double()).dtype == torch.float64
    assert sinkhorn_plan(cost.half()).dtype == torch.float32


@pytest.mark.parametrize("cost", [torch.rand(4), torch.rand(0, 3), torch.rand(3, 0)], ids=["1-d", "no rows", "no codewords"])
def test_a_malformed_cost_is_refused(cost):
    with pytest.raises(ValueError, match=r"non-empty \[n, K\] matrix"):
        sinkhorn_plan(cost)


def test_a_row_without_any_allowed_codeword_is_refused():
    cost = _cost(4, 3)
    cost[2] = torch.inf
    with pytest.raises(ValueError, match=r"^sinkhorn: some row has no finite cost \(no allowed codeword\)$"):
        sinkhorn_plan(cost)


def test_assign_is_the_argmax_of_the_plan_it_is_asked_for():
    cost = _cost(40, 8, seed=3)
    for epsilon, n_iters in [(0.5, 1), (0.01, 80)]:
        plan = sinkhorn_plan(cost, epsilon=epsilon, n_iters=n_iters)
        assert torch.equal(sinkhorn_assign(cost, epsilon=epsilon, n_iters=n_iters), plan.argmax(1))
    loose, tight = sinkhorn_assign(cost, epsilon=0.5, n_iters=1), sinkhorn_assign(cost, epsilon=0.01, n_iters=80)
    assert not torch.equal(loose, tight)  # the options reach the plan


def test_the_defaults_are_epsilon_001_and_50_iterations():
    cost = _cost(30, 6, seed=5)
    default = sinkhorn_plan(cost)
    assert torch.equal(default, sinkhorn_plan(cost, epsilon=0.01, n_iters=50))
    assert not torch.equal(default, sinkhorn_plan(cost, n_iters=51))
    assert not torch.allclose(default, sinkhorn_plan(cost, epsilon=1.0), atol=1e-2)
    assert torch.equal(sinkhorn_assign(cost), default.argmax(1))
    assert not torch.equal(sinkhorn_assign(cost), sinkhorn_assign(cost, epsilon=1.0, n_iters=1))
