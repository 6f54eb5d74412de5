"""What every model shares: history truncation, length-bucketed batches, loading, the popularity baseline and
SASRec/AsymRec's causal encoder."""

import json

import pytest
import torch

from sidrec.io import ArtifactError
from sidrec.models import Recommender, build_model
from sidrec.models.base import bucketed_batches, model_options, truncate_histories
from sidrec.models.causal import CausalEncoder


def test_truncation_keeps_the_last_items_item_0_counting_as_one():
    histories = torch.tensor([[0, 1, 2, 3, 4], [0, 0, -1, -1, -1], [5, 6, 7, -1, -1]])
    assert truncate_histories(histories, 3).tolist() == [[2, 3, 4], [0, 0, -1], [5, 6, 7]]
    assert truncate_histories(histories, 5) is histories


def test_bucketed_batches_draw_only_from_their_generator_and_fill_the_budget():
    """Seeded by the generator passed (the global RNG is neither used nor moved); every row lands in exactly one
    batch; rows of one target each with batch_size 1 are one batch each."""
    lengths = torch.randint(1, 9, (300,), generator=torch.Generator().manual_seed(0))
    torch.manual_seed(3)
    after = torch.rand(2)
    torch.manual_seed(3)
    first = bucketed_batches(lengths, 8, torch.Generator().manual_seed(1))
    assert torch.equal(torch.rand(2), after)
    torch.manual_seed(4)
    again = bucketed_batches(lengths, 8, torch.Generator().manual_seed(1))
    assert all(torch.equal(a, b) for a, b in zip(first, again)) and len(first) == len(again)
    assert sorted(torch.cat(first).tolist()) == list(range(300))
    ones = torch.ones(5, dtype=torch.long)
    assert [len(b) for b in bucketed_batches(ones, 1, torch.Generator().manual_seed(0))] == [1] * 5


def test_load_names_the_file_and_what_does_not_match(tmp_path):
    model = build_model("popularity", {}, 4).fit_counts(torch.tensor([3.0, 1.0, 3.0, 0.0]))
    model.save(tmp_path / "m")
    back = Recommender.load(tmp_path / "m")
    assert torch.equal(back.recommend(torch.zeros(2, 1, dtype=torch.long), 3)[0], torch.tensor([[0, 2, 1]] * 2))
    spec = json.loads((tmp_path / "m" / "model.json").read_text())
    (tmp_path / "m" / "model.json").write_text(json.dumps({**spec, "name": "nope"}))
    with pytest.raises(ArtifactError, match=r"m/model.json: .*nope"):
        Recommender.load(tmp_path / "m")
    (tmp_path / "m" / "model.json").write_text(json.dumps({**spec, "options": {"hidden": 3}}))
    with pytest.raises(ArtifactError, match=r"m/model.json: options do not match model 'popularity'"):
        Recommender.load(tmp_path / "m")


def test_popularity_ranks_by_count_ties_to_the_lower_index():
    model = build_model("popularity", {}, 6).fit_counts(torch.tensor([1.0, 5.0, 2.0, 5.0, 2.0, 0.0]))
    items, scores = model.recommend(torch.zeros(1, 1, dtype=torch.long), 5)
    assert items.tolist() == [[1, 3, 2, 4, 0]] and scores.tolist() == [[5.0, 5.0, 2.0, 2.0, 1.0]]


def test_the_causal_encoder_is_pre_norm_gelu_with_the_configured_dropout_and_zero_biases():
    torch.manual_seed(0)
    encoder = CausalEncoder(16, 2, 2, 32, 0.3, 10)
    model = build_model("sasrec", {"hidden": 16, "layers": 2, "heads": 2, "ffn": 32, "dropout": 0.3, "max_len": 10}, 9)
    for layer in list(encoder.layers.layers) + list(model.encoder.layers.layers):
        assert layer.norm_first and layer.activation is torch.nn.functional.gelu
        assert layer.dropout.p == layer.dropout1.p == 0.3
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(not m.bias.any() for m in linears if m.bias is not None)


def test_popularity_breaks_ties_by_index_on_a_large_catalogue():
    """Many ties (where an unstable sort would reorder them): equal counts stay in item order."""
    counts = torch.randint(0, 3, (100_000,), generator=torch.Generator().manual_seed(0)).float()
    items, _ = build_model("popularity", {}, len(counts)).fit_counts(counts).recommend(torch.zeros(1, 1, dtype=torch.long), 50_000)
    top = counts[items[0]]
    same = top[1:] == top[:-1]
    assert (items[0][1:][same] > items[0][:-1][same]).all()


def test_bucketed_batches_sort_within_pools_of_50_batches():
    """The rows, shuffled by the generator, are cut into pools of 50 batches, sorted by length inside each pool and
    split into batches of the budget; the batches come out shuffled."""
    lengths = torch.randperm(300, generator=torch.Generator().manual_seed(5)) + 1
    ones = torch.ones(300, dtype=torch.long)
    batches = bucketed_batches(lengths, 2, torch.Generator().manual_seed(1), sizes=ones)
    order = torch.randperm(300, generator=torch.Generator().manual_seed(1))
    expected = set()
    for pool in order.split(100):
        ranked = pool[torch.sort(lengths[pool], stable=True).indices]
        expected |= {tuple(pair.tolist()) for pair in ranked.split(2)}
    assert {tuple(b.tolist()) for b in batches} == expected
    assert [tuple(b.tolist()) for b in batches] != sorted(expected, key=lambda pair: lengths[pair[0]].item())


def test_build_model_names_every_missing_stage_and_every_bad_option():
    with pytest.raises(ValueError, match=r"^model 'asymrec' needs an `embed` section and a `tokenize` section in its config$"):
        build_model("asymrec", {}, 4)
    with pytest.raises(ValueError, match=r"^model 'tiger' needs a `tokenize` section in its config$"):
        build_model("tiger", {}, 4)
    with pytest.raises(ValueError, match=r"^model\.hidden: .*; model\.ffn: "):
        build_model("sasrec", {"hidden": "x", "ffn": "y"}, 4)
    with pytest.raises(ValueError, match=r"^collaborative\.model\.a: Extra inputs are not permitted$"):
        model_options("sasrec", {"a": 1}, section="collaborative.model")


def test_the_causal_encoder_adds_its_position_embeddings():
    torch.manual_seed(0)
    encoder = CausalEncoder(16, 1, 2, 32, 0.0, 10).eval()
    seen = []
    encoder.input_norm.register_forward_hook(lambda module, args, out: seen.append(args[0]))
    x = torch.randn(2, 5, 16)
    encoder(x)
    torch.testing.assert_close(seen[0], x + encoder.position_embedding.weight[:5])
