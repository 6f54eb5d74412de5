import json

import pytest
import torch

from sidrec.features.embeddings import ItemEmbeddings
from sidrec.tokenizers import load_tokenized, resolve_collisions, tokenize
from sidrec.tokenizers.collisions import collision_groups, sinkhorn_reassign
from sidrec.tokenizers.metrics import collision_stats, gini, level_stats
from sidrec.tokenizers.sinkhorn import sinkhorn_assign


def test_sinkhorn_balances_a_skewed_set_better_than_argmin():
    g = torch.Generator().manual_seed(0)
    codebook = torch.randn(8, 4, generator=g)
    items = codebook[0] + 0.3 * torch.randn(400, 4, generator=g)  # everything near codeword 0
    cost = torch.cdist(items, codebook) ** 2
    greedy = torch.bincount(cost.argmin(1), minlength=8)
    balanced = torch.bincount(sinkhorn_assign(cost), minlength=8)
    assert balanced.max() < greedy.max()
    assert level_stats(balanced)["perplexity"] > level_stats(greedy)["perplexity"]


def test_sinkhorn_respects_forbidden_codes():
    cost = torch.rand(50, 6)
    cost[:, :3] = torch.inf
    assert (sinkhorn_assign(cost) >= 3).all()


def test_collision_groups_rank_items_within_groups():
    codes = torch.tensor([[1, 2], [0, 0], [1, 2], [1, 2], [3, 3]])
    group, size, rank = collision_groups(codes)
    assert size.tolist() == [3, 1, 3, 3, 1]
    assert rank.tolist() == [0, 0, 1, 2, 0]
    assert group[0] == group[2] == group[3] != group[1]


def test_dedup_makes_codes_unique_with_largest_group_as_extra_level():
    codes = torch.randint(0, 3, (300, 2), generator=torch.Generator().manual_seed(1))
    sids = resolve_collisions(codes, [3, 3], "dedup")
    assert sids.collision_rate() == 0.0
    assert sids.codebook_sizes[-1] == int(collision_groups(codes)[1].max())
    assert torch.equal(sids.codes[:, :2], codes)


def test_dedup_leaves_unique_codes_alone():
    codes = torch.arange(10)[:, None]
    sids = resolve_collisions(codes, [10], "dedup")
    assert sids.n_levels == 1 and sids.collision_rate() == 0.0


def test_sinkhorn_resolution_moves_items_to_free_last_level_codes():
    g = torch.Generator().manual_seed(2)
    codes = torch.stack([torch.randint(0, 4, (200,), generator=g), torch.randint(0, 3, (200,), generator=g)], 1)
    costs = torch.rand(200, 64, generator=g)
    moved, info = sinkhorn_reassign(codes, costs)
    assert torch.equal(moved[:, 0], codes[:, 0])  # only the last level changes
    assert collision_stats(moved)["collision_rate"] == 0.0 < collision_stats(codes)["collision_rate"]
    assert info["sinkhorn_moved"] > 0
    sids = resolve_collisions(codes, [4, 64], "sinkhorn", costs=costs)
    assert sids.n_levels == 2 and sids.collision_rate() == 0.0


def test_sinkhorn_resolution_never_grows_groups_when_codes_run_out():
    codes = torch.zeros(40, 2, dtype=torch.long)
    costs = torch.rand(40, 4)
    moved, _ = sinkhorn_reassign(codes, costs)
    assert collision_groups(moved)[1].max() <= 37
    sids = resolve_collisions(codes, [1, 4], "sinkhorn", costs=costs)
    assert sids.collision_rate() == 0.0


def test_gini_extremes():
    assert gini(torch.full((8,), 5)) == 0.0
    assert gini(torch.tensor([0, 0, 0, 40])) > 0.7


def test_tokenize_writes_complete_artifacts(skewed, tmp_path):
    emb = ItemEmbeddings(skewed, "toy")
    tok, sids, report = tokenize(emb, "nu-rkmeans", "sinkhorn", {"codebook_size": 8, "n_levels": 2}, out_dir=tmp_path)
    assert sids.collision_rate() == 0.0 and report["collision_rate_after"] == 0.0
    assert report["collision_rate_before"] > 0 and len(report["levels"]) == 2
    for name in ("sids.safetensors", "sids_report.json", "code_usage.png", "latents.png", "tokenizer/tokenizer.json"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert json.loads((tmp_path / "sids_report.json").read_text())["tokenizer"] == "nu-rkmeans"
    tok2, sids2 = load_tokenized(tmp_path)
    assert torch.equal(sids2.codes, sids.codes) and sids2.resolution == "sinkhorn"
    assert torch.equal(tok2.encode(skewed), tok.encode(skewed))
    assert report["recon_mse"] < float(skewed.var(0).mean())


def test_dedup_is_the_default_and_records_its_level_size():
    codes = torch.tensor([[0, 1], [0, 1], [0, 1], [1, 0]])
    sids = resolve_collisions(codes, [2, 2])
    assert sids.resolution == "dedup" and sids.info == {"dedup_level_size": 3} and sids.codebook_sizes == [2, 2, 3]
    pair = resolve_collisions(torch.tensor([[0, 1], [0, 1], [1, 0]]), [2, 2])
    assert pair.info == {"dedup_level_size": 2} and pair.codebook_sizes == [2, 2, 2]
    unique = resolve_collisions(torch.tensor([[0, 1], [1, 0]]), [2, 2])
    assert unique.resolution == "dedup" and unique.info == {"dedup_level_size": 0} and unique.n_levels == 2
    empty = resolve_collisions(torch.empty(0, 2, dtype=torch.long), [2, 2])
    assert empty.codebook_sizes == [2, 2] and empty.info == {"dedup_level_size": 0}


def test_sinkhorn_moves_within_the_full_prefix_and_reports_what_it_did():
    """B collides with A under prefix (0, 0) and may only use codes 2 and 3 (inf elsewhere): 3 is A's, and 2 is free
    under (0, 0) although C holds it under prefix (0, 1). (A lone mover's choice among several free codes is not
    tested: Sinkhorn's column marginals cancel its costs, so rounding picks.)"""
    inf = torch.inf
    codes = torch.tensor([[0, 0, 3], [0, 0, 3], [0, 1, 2]])
    costs = torch.tensor([[1.0, 1.0, 1.0, 0.0], [inf, inf, 0.1, 0.0], [1.0, 1.0, 0.0, 1.0]])
    moved, info = sinkhorn_reassign(codes, costs)
    assert moved.tolist() == [[0, 0, 3], [0, 0, 2], [0, 1, 2]]
    assert info == {"sinkhorn_rounds": 1, "sinkhorn_moved": 1, "sinkhorn_collision_rate": 0.0}
    sids = resolve_collisions(codes, [1, 2, 4], "sinkhorn", costs=costs)
    assert sids.resolution == "sinkhorn" and sids.info["sinkhorn_moved"] == 1 and sids.info["dedup_level_size"] == 0


def test_one_level_codes_share_the_empty_prefix_and_zero_rounds_move_nothing():
    codes = torch.tensor([[0], [0], [1]])
    costs = torch.tensor([[0.0, 1.0, 1.0], [0.0, 1.0, 0.5], [1.0, 0.0, 1.0]])  # 2 is the only code left for B
    moved, info = sinkhorn_reassign(codes, costs)
    assert moved.flatten().tolist() == [0, 2, 1] and info["sinkhorn_rounds"] == 1
    same, none = sinkhorn_reassign(codes, costs, rounds=0)
    assert torch.equal(same, codes) and none == {"sinkhorn_rounds": 0, "sinkhorn_moved": 0,
                                                 "sinkhorn_collision_rate": pytest.approx(1 / 3)}


def test_none_keeps_the_codes_and_sinkhorn_passes_its_options_on():
    codes = torch.tensor([[0, 1], [0, 1]])
    kept = resolve_collisions(codes, [2, 2], "none")
    assert kept.resolution == "none" and kept.codebook_sizes == [2, 2] and torch.equal(kept.codes, codes)
    assert kept.codes.data_ptr() != codes.data_ptr()  # a copy, not the caller's tensor
    crowd = torch.zeros(5, 2, dtype=torch.long)
    costs = torch.linspace(0, 1, 8).expand(5, 8).clone()
    sids = resolve_collisions(crowd, [1, 8], "sinkhorn", costs=costs, rounds=2)
    assert sids.info["sinkhorn_rounds"] == 2 and sids.info["dedup_level_size"] == 3  # 3 items still share code 0


def test_resolution_errors_say_what_is_missing():
    with pytest.raises(ValueError, match=r"^resolution 'sinkhorn' needs the tokenizer's last-level costs \(costs=\.\.\.\)$"):
        resolve_collisions(torch.zeros(2, 1, dtype=torch.long), [2], "sinkhorn")
    with pytest.raises(ValueError, match=r"^unknown collision resolution 'greedy'; choose one of \['none', 'dedup', 'sinkhorn'\]$"):
        resolve_collisions(torch.zeros(2, 1, dtype=torch.long), [2], "greedy")


def test_identical_movers_take_one_free_code_per_round_until_the_rounds_run_out():
    codes = torch.zeros(5, 2, dtype=torch.long)
    costs = torch.linspace(0, 1, 8).expand(5, 8).clone()  # everyone wants the same next code
    _, short = sinkhorn_reassign(codes, costs, rounds=2)
    assert short == {"sinkhorn_rounds": 2, "sinkhorn_moved": 2, "sinkhorn_collision_rate": 0.4}
    moved, full = sinkhorn_reassign(codes, costs)
    assert full == {"sinkhorn_rounds": 4, "sinkhorn_moved": 4, "sinkhorn_collision_rate": 0.0}
    assert len(set(moved[:, 1].tolist())) == 5


def test_sinkhorn_defaults_are_the_documented_ones_and_reach_the_assignment():
    g = torch.Generator().manual_seed(4)
    codes = torch.stack([torch.randint(0, 2, (120,), generator=g), torch.randint(0, 2, (120,), generator=g)], 1)
    costs = torch.rand(120, 32, generator=g)
    default = sinkhorn_reassign(codes, costs)
    assert torch.equal(default[0], sinkhorn_reassign(codes, costs, rounds=20, epsilon=0.01, n_iters=50)[0])
    assert not torch.equal(default[0], sinkhorn_reassign(codes, costs, epsilon=1.0)[0])
    assert not torch.equal(default[0], sinkhorn_reassign(codes, costs, n_iters=1)[0])


def test_costs_for_other_items_are_refused():
    with pytest.raises(ValueError, match=r"^costs has 3 rows for 4 items$"):
        sinkhorn_reassign(torch.zeros(4, 2, dtype=torch.long), torch.rand(3, 5))


def test_ranks_within_a_group_follow_item_index_in_large_groups():
    """Thousands of items in few groups: the rank must follow item order (a stable sort), so dedup is reproducible."""
    codes = torch.randint(0, 3, (3000, 1), generator=torch.Generator().manual_seed(5))
    group, _, rank = collision_groups(codes)
    for g in range(3):
        members = (group == g).nonzero().flatten()
        assert torch.equal(rank[members], torch.arange(len(members)))


def test_the_default_is_twenty_rounds():
    codes = torch.zeros(26, 2, dtype=torch.long)  # 25 identical movers need 25 rounds, one code each
    costs = torch.linspace(0, 1, 32).expand(26, 32).clone()
    _, info = sinkhorn_reassign(codes, costs)
    assert info["sinkhorn_rounds"] == 20 and info["sinkhorn_moved"] == 20
