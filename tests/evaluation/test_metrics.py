"""Metrics against a hand-computed example, and the evaluation protocol's options."""

import math

import pytest
import torch

from sidrec.config import EvalConfig
from sidrec.evaluation import coverage, evaluate, head_tail_recall, ranking_metrics, tail_items
from sidrec.evaluation.protocol import rank_items, top_k
from sidrec.models import build_model


def test_hand_computed_recall_and_ndcg():
    top = torch.tensor([[3, 1, 2, 0, 4, 5],   # target 1 at rank 1
                        [0, 1, 2, 3, 4, 5],   # target 5 at rank 5
                        [9, 8, 7, 6, 5, 4]])  # target 0 missing
    targets = torch.tensor([1, 5, 0])
    m = ranking_metrics(top, targets, ks=[1, 2, 6])
    assert m["recall@1"] == 0.0
    assert m["recall@2"] == pytest.approx(1 / 3)
    assert m["recall@6"] == pytest.approx(2 / 3)
    assert m["ndcg@2"] == pytest.approx((1 / math.log2(3)) / 3)
    assert m["ndcg@6"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(7)) / 3)
    with pytest.raises(ValueError, match="top-10"):
        ranking_metrics(top, targets, ks=[10])


def test_coverage_and_head_tail():
    top = torch.tensor([[0, 1], [0, 2]])
    assert coverage(top, n_items=10, k=2) == pytest.approx(0.3)
    popularity = torch.tensor([50, 40, 1, 2, 3, 0, 0, 0, 0, 0])
    tail = tail_items(popularity, 0.8)
    assert tail.sum() == 8 and not tail[0] and not tail[1]
    out = head_tail_recall(torch.tensor([[0, 2], [0, 1], [3, 4]]), torch.tensor([0, 2, 9]), tail, k=2)
    assert out["recall@2_head"] == 1.0 and out["recall@2_tail"] == 0.0
    assert out["tail_target_share"] == pytest.approx(2 / 3)


class FixedScores:
    def __init__(self, order):
        self.order = torch.tensor(order)

    def recommend(self, histories, k):
        items = self.order[:k].expand(histories.shape[0], -1)
        return items, -torch.arange(k).float().expand_as(items)


def test_exclude_history_drops_seen_items_keeping_order():
    rec = FixedScores([5, 4, 3, 2, 1, 0])
    histories = torch.tensor([[4, 2, -1], [-1, -1, -1]])
    assert top_k(rec, histories, 3, exclude_history=False).tolist() == [[5, 4, 3], [5, 4, 3]]
    assert top_k(rec, histories, 3, exclude_history=True).tolist() == [[5, 3, 1], [5, 4, 3]]


def test_evaluate_reports_protocol_and_reads_requested_split(cyclic_dataset):
    pop = build_model("popularity", {}, cyclic_dataset.n_items).fit_counts(cyclic_dataset.item_popularity())
    valid = evaluate(pop, cyclic_dataset, "valid", EvalConfig(ks=[5, 10]))
    assert valid["exclude_history"] is False and valid["users"] == cyclic_dataset.eval_users.numel()
    assert {"recall@5", "ndcg@10", "coverage@10", "recall@10_tail"} <= set(valid)
    with pytest.raises(ValueError, match="'valid' or 'test'"):
        evaluate(pop, cyclic_dataset, "train")


def test_bf16_precision_autocasts_the_ranking_forward_passes_only_when_asked(cyclic_dataset):
    model = build_model("sasrec", {"hidden": 8, "heads": 1, "ffn": 16}, cyclic_dataset.n_items)
    seen = []
    recommend = model.recommend

    def recording(histories, k):
        seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return recommend(histories, k)

    model.recommend = recording
    fp32 = evaluate(model, cyclic_dataset, "valid", EvalConfig())
    bf16 = evaluate(model, cyclic_dataset, "valid", EvalConfig(precision="bf16"))
    assert seen[0][0] is False and seen[-1] == (True, torch.bfloat16)
    assert (fp32["precision"], bf16["precision"]) == ("fp32", "bf16") and not torch.is_autocast_enabled("cpu")


class _Oracle:
    """Ranks the true validation target first for histories of the users in `hits`, else item 0."""

    def __init__(self, dataset, hits):
        _, histories, targets = dataset.split("valid", 50)
        self.known = {tuple(histories[r].tolist()): int(targets[r]) for r in hits}
        self.n_items = dataset.n_items

    def recommend(self, histories, k):
        first = torch.tensor([self.known.get(tuple(h.tolist()), 0) for h in histories])
        items = torch.stack([first, *[(first + j) % self.n_items for j in range(1, k)]], 1)
        return items, -torch.arange(k, dtype=torch.float).expand(len(histories), k)


def test_epoch_selection_sample_is_fixed_seeded_and_restricts_the_users(cyclic_dataset):
    from sidrec.evaluation.protocol import user_sample

    n = cyclic_dataset.eval_users.numel()
    rows = user_sample(n, 10, seed=3)
    assert torch.equal(rows, user_sample(n, 10, seed=3)) and not torch.equal(rows, user_sample(n, 10, seed=4))
    assert rows.numel() == 10 and rows.unique().numel() == 10 and (rows.diff() > 0).all()
    assert user_sample(n, n, seed=3) is None and user_sample(n, None, seed=3) is None
    oracle = _Oracle(cyclic_dataset, hits=rows.tolist())  # hits exactly the sampled users
    config = EvalConfig(ks=[10], select_seed=3)
    sampled = evaluate(oracle, cyclic_dataset, "valid", config, sample=10)
    assert sampled["users"] == 10 and sampled["recall@10"] == 1.0 and sampled["ndcg@10"] == 1.0
    everyone = evaluate(oracle, cyclic_dataset, "valid", config)
    assert everyone["users"] == n and everyone["recall@10"] < 1.0


def test_defaults_are_coverage_at_10_and_an_80_percent_tail():
    top = torch.arange(24).reshape(2, 12)  # columns 10 and 11 lie beyond the default cut-off
    assert coverage(top, n_items=30) == pytest.approx(20 / 30)
    assert tail_items(torch.arange(10)).tolist() == [True] * 8 + [False] * 2


def test_tail_ties_are_broken_by_item_index():
    """Equal popularity: the lower index is the less popular (deterministic, not the sort's whim)."""
    popularity = torch.tensor([5, 1, 5, 1, 5, 1, 5, 1] * 40)  # long enough for a parallel, unstable sort
    tail = tail_items(popularity, 0.25)
    ones = (popularity == 1).nonzero().flatten()
    assert tail.nonzero().flatten().tolist() == ones[: 80].tolist()


def test_an_empty_head_or_tail_group_gives_nan_not_zero():
    out = head_tail_recall(torch.tensor([[0, 1], [1, 0]]), torch.tensor([0, 1]), torch.tensor([True, True]), k=2)
    assert out["recall@2_tail"] == 1.0 and math.isnan(out["recall@2_head"])


def test_history_is_kept_by_default_and_item_zero_counts_as_seen():
    rec = FixedScores([0, 1, 2, 3])
    histories = torch.tensor([[0, -1]])
    assert top_k(rec, histories, 2, exclude_history=False).tolist() == rank_items(rec, histories, 2)[0].tolist() == [[0, 1]]
    assert top_k(rec, histories, 3, exclude_history=True).tolist() == [[1, 2, 3]]  # asked for 3 + 1 (item 0 seen)


class SmallCatalogue(FixedScores):
    """Refuses to rank more items than it has, as TIGER's beam search does."""

    n_items = 3

    def recommend(self, histories, k):
        assert k <= self.n_items, f"asked for {k} of {self.n_items} items"
        return super().recommend(histories, k)


def test_excluding_history_never_asks_for_more_items_than_the_catalogue_and_marks_empty_slots():
    rec = SmallCatalogue([2, 1, 0])
    items, scores = rank_items(rec, torch.tensor([[2, 1], [0, -1]]), 2, exclude_history=True)
    assert items.tolist() == [[0, -1], [2, 1]]  # the first row runs out of unseen items
    assert math.isnan(scores[0, 1]) and not scores[1].isnan().any()


def test_exclusion_may_be_chosen_per_row_and_an_empty_batch_is_empty():
    rec = FixedScores([5, 4, 3, 2])
    histories = torch.tensor([[5, -1], [5, -1]])
    assert rank_items(rec, histories, 2, torch.tensor([True, False]))[0].tolist() == [[4, 3], [5, 4]]
    items, scores = rank_items(rec, torch.empty(0, 2, dtype=torch.long), 2, exclude_history=True)
    assert items.shape == scores.shape == (0, 2)


def test_dropping_seen_items_keeps_the_rank_order_of_long_lists():
    """Hundreds of slots: the reorder must be a stable sort (an unstable one shuffles the kept items)."""
    rec = FixedScores(list(range(400)))
    seen = torch.randperm(400, generator=torch.Generator().manual_seed(0))[:120]
    items = top_k(rec, seen[None], 250, exclude_history=True)[0]
    unseen = [i for i in range(400) if i not in set(seen.tolist())]
    assert items.tolist() == unseen[:250]


class AskedFor(FixedScores):
    def recommend(self, histories, k):
        self.asked = k
        return super().recommend(histories, k)


def test_exclusion_asks_for_k_plus_the_longest_flagged_history_only():
    rec = AskedFor(list(range(20)))
    histories = torch.tensor([[3, 4, -1], [5, -1, -1], [6, 7, 8]])
    rank_items(rec, histories, 4, torch.tensor([True, True, False]))
    assert rec.asked == 4 + 2  # the unflagged row's 3 items do not count
