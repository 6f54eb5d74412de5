"""Ordering, filtering, the leave-one-out split and the dataset cache."""

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from sidrec.config import DataConfig
from sidrec.data import DataFormatError, Dataset, RawData, build_dataset, k_core, load_dataset
from sidrec.registry import UnknownNameError
from synthetic import cyclic_raw

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def raw(rows, items=None):
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    return RawData(inter, pd.DataFrame({"item_id": items or sorted(set(inter["item_id"]))}))


def sequence(ds: Dataset, user_id: str) -> list[str]:
    u = int(np.flatnonzero(ds.user_ids == user_id)[0])
    return [ds.item_ids[i] for i in ds.sequence_items[ds.offsets[u]:ds.offsets[u + 1]].tolist()]


def test_chronological_order_is_stable_on_ties_and_repeats_optional():
    rows = [("a", "x", 2.0), ("a", "y", 1.0), ("a", "z", 1.0), ("a", "y", 3.0), ("b", "x", 1.0)]
    assert sequence(build_dataset(raw(rows), "t"), "a") == ["y", "z", "x", "y"]
    assert sequence(build_dataset(raw(rows), "t", remove_repeats=True), "a") == ["y", "z", "x"]


def test_k_core_is_iterative():
    # c only has 2 users once user 'u3' (2 interactions) is dropped, so it must go in a second round.
    rows = [(u, i, 0.0) for u, its in {"u1": "abc", "u2": "abc", "u3": "cd"}.items() for i in its]
    inter = raw(rows).interactions
    kept = k_core(inter, 2)
    assert set(kept["user_id"]) == {"u1", "u2"} and set(kept["item_id"]) == {"a", "b", "c"}
    assert set(k_core(inter, 3)["item_id"]) == set()


def test_empty_after_filtering_is_an_error():
    with pytest.raises(DataFormatError, match="no interactions left after filtering"):
        build_dataset(raw([("a", "x", 0.0), ("b", "y", 0.0)]), "t", min_core=2, source="toy.csv")


def test_leave_one_out_never_leaks_targets(cyclic_dataset):
    ds = cyclic_dataset
    train, train_offsets = ds.train_sequences()
    _, valid_hist, valid_target = ds.split("valid")
    _, test_hist, test_target = ds.split("test")
    for u in range(ds.n_users):
        seq = ds.sequence_items[ds.offsets[u]:ds.offsets[u + 1]].tolist()
        assert train[train_offsets[u]:train_offsets[u + 1]].tolist() == seq[:-2]
        assert valid_target[u] == seq[-2] and test_target[u] == seq[-1]
        assert [i for i in valid_hist[u].tolist() if i >= 0] == seq[:-2][-50:]
        assert [i for i in test_hist[u].tolist() if i >= 0] == seq[:-1][-50:]
    # Training windows only contain training items, and every training transition exactly once.
    inputs, targets = ds.training_windows(max_len=3)
    pairs = sorted(zip(inputs[targets >= 0].tolist(), targets[targets >= 0].tolist()))
    expected = sorted((a, b) for u in range(ds.n_users)
                      for a, b in zip(train[train_offsets[u]:train_offsets[u + 1] - 1].tolist(),
                                      train[train_offsets[u] + 1:train_offsets[u + 1]].tolist()))
    assert pairs == expected



def user_unique_dataset() -> Dataset:
    """The cyclic walks with every item renamed per user ("u3/i05") and users cut to lengths 1..12, so an
    item id pins down one user and one position: any leak of a held-out item is visible by id alone."""
    inter = cyclic_raw(n_users=36, n_items=12, length=12).interactions
    inter = inter[inter["timestamp"] < inter["user_id"].str[1:].astype(int) % 12 + 1]
    inter = inter.assign(item_id=inter["user_id"] + "/" + inter["item_id"])
    return build_dataset(RawData(inter, pd.DataFrame({"item_id": sorted(set(inter["item_id"]))})), "unique")


@pytest.mark.parametrize("max_len", [2, 3, 5, 50])
def test_training_data_never_holds_a_validation_or_test_target(max_len):
    """Leave-one-out: neither the training sequences nor any training window (as input OR as target)
    contains a user's validation or test target; every other item is training data."""
    ds = user_unique_dataset()
    assert len(set(ds.lengths.tolist())) == 12 and ds.n_items == ds.n_interactions
    _, _, valid_target = ds.split("valid")
    _, _, test_target = ds.split("test")
    held_out = set(valid_target.tolist()) | set(test_target.tolist())
    assert len(held_out) == 2 * len(ds.eval_users)
    train, _ = ds.train_sequences()
    inputs, targets = ds.training_windows(max_len)
    assert held_out.isdisjoint(train.tolist())
    assert held_out.isdisjoint(inputs[inputs >= 0].tolist())
    assert held_out.isdisjoint(targets[targets >= 0].tolist())
    assert set(train.tolist()) == set(range(ds.n_items)) - held_out
    # users with a single training item have no transition: every other training item is read by a window
    windowed = set(inputs[inputs >= 0].tolist()) | set(targets[targets >= 0].tolist())
    lonely = {int(ds.sequence_items[ds.offsets[u]]) for u in range(ds.n_users) if ds.train_lengths()[u] == 1}
    assert windowed == set(train.tolist()) - lonely


def test_short_sequences_train_only():
    ds = build_dataset(raw([("a", "x", 0.0), ("a", "y", 1.0), ("b", "x", 0.0), ("b", "y", 1.0), ("b", "z", 2.0)]), "t")
    assert ds.eval_users.tolist() == [1]
    assert ds.train_lengths().tolist() == [2, 1]


def test_popularity_counts_training_part_only(cyclic_dataset):
    pop = cyclic_dataset.item_popularity()
    assert pop.sum().item() == cyclic_dataset.n_interactions - 2 * cyclic_dataset.eval_users.numel()


def test_save_load_round_trip_and_no_partial_cache(tmp_path, cyclic_dataset, monkeypatch):
    cyclic_dataset.save(tmp_path / "ds")
    back = Dataset.load(tmp_path / "ds")
    assert torch.equal(back.sequence_items, cyclic_dataset.sequence_items)
    assert back.items["title"].tolist() == cyclic_dataset.items["title"].tolist()

    def explode(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(pd.DataFrame, "to_parquet", explode)
    with pytest.raises(OSError):
        cyclic_dataset.save(tmp_path / "other")
    assert not (tmp_path / "other").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]


def test_named_cache_is_reused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = DataConfig(name="ml-100k", cache_dir=str(tmp_path / "cache"))
    first = load_dataset(config)
    cached = list((tmp_path / "cache").iterdir())
    assert len(cached) == 1
    mtime = os.stat(cached[0] / "manifest.json").st_mtime_ns
    second = load_dataset(config)
    assert os.stat(cached[0] / "manifest.json").st_mtime_ns == mtime
    assert torch.equal(first.sequence_items, second.sequence_items)


@pytest.mark.parametrize("name, users, items, interactions", [
    ("ml-100k", 943, 1682, 100_000),
    ("amazon-beauty", 22_363, 12_101, 198_502),
    ("amazon-sports", 35_598, 18_357, 296_337),
    ("amazon-scientific", 8_317, 4_344, 58_492),
])
def test_published_statistics(tmp_path, name, users, items, interactions):
    if name.startswith("amazon") and not SHARED.is_dir():
        pytest.skip("../shared/data not present")
    ds = load_dataset(DataConfig(name=name, data_dir=str(SHARED), cache_dir=str(tmp_path)))
    stats = ds.stats()
    assert (stats["users"], stats["items"], stats["interactions"]) == (users, items, interactions)
    assert len(ds.items) == items


def test_unknown_dataset_is_named():
    with pytest.raises(UnknownNameError, match="unknown dataset 'nope'; known: amazon-beauty, "):
        load_dataset("nope")


@pytest.mark.parametrize("max_len", [2, 3, 5])
def test_each_window_holds_transitions_and_there_are_just_enough_of_them(max_len):
    """ceil(transitions / max_len) windows per user: no window without a target, none left over."""
    ds = user_unique_dataset()
    inputs, targets = ds.training_windows(max_len)
    transitions = (ds.train_lengths() - 1).clamp(min=0)
    assert len(inputs) == int(((transitions + max_len - 1) // max_len).sum())
    assert ((targets >= 0).sum(1) > 0).all()


def test_defaults_read_the_last_50_items():
    ds = build_dataset(raw([("a", f"i{t:02d}", float(t)) for t in range(60)]), "long")
    _, histories, _ = ds.split("test")
    inputs, _ = ds.training_windows()
    assert histories.shape[1] == inputs.shape[1] == 50
    assert (histories[0] >= 0).all()  # 59 items before the test target: the last 50 are read


def test_popularity_covers_items_seen_only_as_held_out_targets():
    ds = build_dataset(raw([("a", "x", 0.0), ("a", "y", 1.0), ("a", "z", 2.0), ("a", "w", 3.0)]), "t")
    pop = ds.item_popularity()
    assert pop.shape == (ds.n_items,) and pop.sum() == 2  # z and w are the valid and test targets
