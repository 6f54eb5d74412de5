"""SASRec learns a sequential pattern, exports item embeddings and round-trips save/load."""

import torch

from sidrec.config import EvalConfig, TrainConfig
from sidrec.evaluation import evaluate
from sidrec.models import Recommender, build_model
from sidrec.models.base import truncate_histories
from sidrec.training import Trainer
from causality import assert_causal, causal_histories


def test_sasrec_learns_next_item_and_beats_popularity(cyclic_dataset, tmp_path):
    ds = cyclic_dataset
    model = build_model("sasrec", {"hidden": 32, "layers": 1, "heads": 2, "ffn": 64, "dropout": 0.0,
                                   "max_len": 10}, ds.n_items)
    Trainer(model, TrainConfig(epochs=40, batch_size=32, lr=5e-3, progress=False)).fit(model.make_batches(ds, 32))
    pop = build_model("popularity", {}, ds.n_items).fit_counts(ds.item_popularity())
    config = EvalConfig(ks=[1, 5, 10], max_len=10)
    learned = evaluate(model, ds, "test", config)
    assert learned["recall@1"] > 0.9  # item i is always followed by i + 1
    assert learned["ndcg@10"] > evaluate(pop, ds, "test", config)["ndcg@10"] + 0.5
    assert model.item_embeddings().shape == (ds.n_items, 32)

    model.save(tmp_path / "model")
    back = Recommender.load(tmp_path / "model")
    _, histories, _ = ds.split("test", 10)
    assert torch.equal(back.recommend(histories, 5)[0], model.eval().recommend(histories, 5)[0])


def test_truncate_keeps_most_recent_items():
    histories = torch.tensor([[1, 2, 3, 4, -1], [7, -1, -1, -1, -1]])
    assert truncate_histories(histories, 2).tolist() == [[3, 4], [7, -1]]


def test_bad_options_are_named():
    import pytest
    with pytest.raises(ValueError, match="model.hiden"):
        build_model("sasrec", {"hiden": 3}, 10)
    with pytest.raises(ValueError, match="divisible"):
        build_model("sasrec", {"hidden": 30, "heads": 4}, 10)
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        build_model("nope", {}, 10)


def test_sasrec_states_are_causal():
    """Causal mask: a later item never changes an earlier position's hidden state, an earlier item does
    change every later one (what lets whole-sequence training predict each next item without seeing it)."""
    torch.manual_seed(0)
    model = build_model("sasrec", {"hidden": 32, "layers": 2, "heads": 2, "ffn": 64, "dropout": 0.0, "max_len": 10},
                        12).eval()
    assert_causal(model.hidden_states, causal_histories())


def test_loss_is_the_summed_cross_entropy_of_every_target_item_0_included():
    """One term per non-padding target (item 0 is an item, -1 is padding), summed, with the target count as the
    normaliser the trainer divides by; logits are dot products with the (tied) item embeddings."""
    torch.manual_seed(0)
    model = build_model("sasrec", {"hidden": 16, "layers": 1, "heads": 2, "ffn": 32, "dropout": 0.0, "max_len": 6},
                        9).eval()
    inputs = torch.tensor([[3, 4, 5, -1], [1, 2, -1, -1]])
    targets = torch.tensor([[4, 5, 0, -1], [2, 0, -1, -1]])
    total, count = model.loss({"inputs": inputs, "targets": targets})
    states = model.hidden_states(inputs)
    by_hand = sum(-torch.log_softmax(states[b, t] @ model.item_embeddings().T, -1)[targets[b, t]]
                  for b, t in [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)])
    assert int(count) == 5
    torch.testing.assert_close(total, by_hand)


def test_item_embeddings_enter_the_encoder_scaled_by_sqrt_hidden():
    """SASRec multiplies the item embeddings by sqrt(d) before the (position-adding) encoder."""
    torch.manual_seed(0)
    model = build_model("sasrec", {"hidden": 16, "layers": 1, "heads": 2, "ffn": 32, "dropout": 0.0, "max_len": 6},
                        9).eval()
    histories = torch.tensor([[3, 4, 5, -1]])
    seen = []
    model.encoder.register_forward_hook(lambda module, args, out: seen.append(args[0]))
    model.hidden_states(histories)
    torch.testing.assert_close(seen[0], model.item_embedding(histories + 1) * 4.0)


def test_item_0_is_trained_like_any_item():
    """Row 0 of the embedding table is padding (`padding_idx`: never trained); item 0 is row 1 and gets a gradient,
    on the input side too, like every other item."""
    torch.manual_seed(0)
    model = build_model("sasrec", {"hidden": 16, "layers": 1, "heads": 2, "ffn": 32, "dropout": 0.0, "max_len": 6}, 9)
    total, _ = model.loss({"inputs": torch.tensor([[0, 4, 5, -1]]), "targets": torch.tensor([[4, 5, 0, -1]])})
    total.backward()
    grad = model.item_embedding.weight.grad
    assert grad[1].abs().sum() > 0 and grad[5].abs().sum() > 0 and grad[0].abs().sum() == 0
    model.zero_grad()
    model.item_embedding(torch.tensor([1, 0])).sum().backward()  # the input side alone (the output side is tied)
    assert grad is not None and model.item_embedding.weight.grad[1].abs().sum() > 0
    assert model.item_embedding.weight.grad[0].abs().sum() == 0


def test_make_batches_train_every_transition_once_seeded_by_the_generator(cyclic_dataset):
    """Whole-sequence windows: each training transition (item 0 included) is one target; the batches, trimmed to
    their longest row, depend on the generator passed only."""
    from collections import Counter

    ds = cyclic_dataset
    model = build_model("sasrec", {"hidden": 16, "layers": 1, "heads": 2, "ffn": 32, "max_len": 4}, ds.n_items)
    items, offsets = ds.train_sequences()
    expected = Counter(t for a, b in zip(offsets[:-1], offsets[1:]) for t in items[a + 1:b].tolist())
    make = model.make_batches(ds, 8)
    torch.manual_seed(0)
    first = list(make(0, torch.Generator().manual_seed(3)))
    torch.manual_seed(1)
    again = list(make(0, torch.Generator().manual_seed(3)))
    assert all(torch.equal(a["inputs"], b["inputs"]) for a, b in zip(first, again)) and len(first) == len(again)
    found = Counter(t for b in first for t in b["targets"][b["targets"] >= 0].tolist())
    assert found == expected and expected[0] > 0
    assert all((b["inputs"][:, -1] >= 0).any() for b in first)  # trimmed: the last column holds some item
