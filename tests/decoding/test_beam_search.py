import pytest
import torch

from sidrec.decoding import constrained_beam_search, exact_item_scores, exact_top_k
from sidrec.models import TIGER, build_model
from sidrec.semantic_ids import SemanticIDs

SIZES = [6, 5, 3]


def tiny_model(seed: int = 0, n: int = 70, first_codes_used: int = SIZES[0]) -> TIGER:
    g = torch.Generator().manual_seed(seed)
    used = [first_codes_used, *SIZES[1:]]
    codes = torch.unique(torch.stack([torch.randint(0, s, (n,), generator=g) for s in used], 1), dim=0)
    codes = codes[torch.randperm(len(codes), generator=g)]
    torch.manual_seed(seed)
    sids = SemanticIDs(codes, SIZES)
    return build_model("tiger", {"preset": "small", "dropout": 0.0}, sids.n_items, sids=sids).eval()


def histories(model: TIGER, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    h = torch.randint(0, model.n_items, (4, 9), generator=g)
    h[1, 5:] = -1
    h[2, 1:] = -1
    return h


@torch.no_grad()
def reference_search(model: TIGER, ids, mask, width: int, k: int):
    """Per-user beam search with a dict trie and full teacher-forced recomputation (no caches)."""
    codes = model.sids.codes.tolist()
    offsets = model.sids.offsets.tolist()
    children: dict[tuple, set] = {}
    for c in codes:
        for level in range(len(c)):
            children.setdefault(tuple(c[:level]), set()).add(c[level])

    def next_log_probs(u, prefix):
        dec = torch.tensor([[0] + [offsets[l] + c for l, c in enumerate(prefix)]])
        return torch.log_softmax(model(ids[u : u + 1], mask[u : u + 1], dec)[0, -1], -1)

    items, scores = [], []
    for u in range(ids.shape[0]):
        beams = [((), 0.0)]
        for level in range(len(SIZES)):
            cands = []
            for prefix, s in beams:
                lp = next_log_probs(u, prefix)
                cands += [(prefix + (c,), s + float(lp[offsets[level] + c])) for c in children[prefix]]
            beams = sorted(cands, key=lambda x: -x[1])[:width]
        final = sorted(((p, s + float(next_log_probs(u, p)[1])) for p, s in beams), key=lambda x: -x[1])[:k]
        items.append([codes.index(list(p)) for p, _ in final])
        scores.append([s for _, s in final])
    return torch.tensor(items), torch.tensor(scores)


@pytest.mark.parametrize("width,k,first_codes_used", [(4, 3, 6), (9, 9, 6), (9, 7, 2)])
def test_batched_search_equals_per_user_reference(width, k, first_codes_used):
    """(9, 7, 2): fewer valid first codes than beams, so early steps hold dead (-inf) beams."""
    model = tiny_model(seed=1, first_codes_used=first_codes_used)
    ids, mask = model.encoder_inputs(histories(model))
    items, scores = constrained_beam_search(model, ids, mask, model.trie, beam_width=width, k=k)
    ref_items, ref_scores = reference_search(model, ids, mask, width, k)
    assert torch.equal(items, ref_items)
    torch.testing.assert_close(scores, ref_scores, atol=1e-4, rtol=0)


def test_wide_beam_is_exhaustive_and_matches_exact_scores():
    model = tiny_model(seed=2)
    ids, mask = model.encoder_inputs(histories(model, seed=2))
    n = model.n_items
    items, scores = constrained_beam_search(model, ids, mask, model.trie, beam_width=n, k=n)
    exact = exact_item_scores(model, ids, mask, model.trie)
    assert torch.equal(items, exact.argsort(dim=1, descending=True))
    torch.testing.assert_close(scores, exact.gather(1, items), atol=1e-5, rtol=0)
    ex_items, ex_scores = exact_top_k(model, ids, mask, model.trie, 5, batch_size=3)
    assert torch.equal(ex_items, items[:, :5])


def test_exact_scores_equal_teacher_forced_log_probs_of_every_item():
    model = tiny_model(seed=3)
    ids, mask = model.encoder_inputs(histories(model, seed=3))
    exact = exact_item_scores(model, ids, mask, model.trie)
    labels = torch.cat([model.item_tokens, torch.ones(model.n_items, 1, dtype=torch.long)], 1)
    dec = torch.cat([torch.zeros(model.n_items, 1, dtype=torch.long), labels[:, :-1]], 1)
    for u in range(ids.shape[0]):
        n = model.n_items
        with torch.no_grad():
            lp = torch.log_softmax(model(ids[u : u + 1].expand(n, -1), mask[u : u + 1].expand(n, -1), dec), -1)
        torch.testing.assert_close(exact[u], lp.gather(2, labels[..., None]).sum((1, 2)), atol=1e-4, rtol=0)
    # a distribution over the catalogue + non-items: total mass of real items is at most 1
    assert (exact.exp().sum(1) <= 1 + 1e-5).all()


def test_every_returned_item_is_real_and_distinct_and_sorted():
    model = tiny_model(seed=4)
    ids, mask = model.encoder_inputs(histories(model, seed=4))
    items, scores = constrained_beam_search(model, ids, mask, model.trie, beam_width=8, k=8)
    assert ((items >= 0) & (items < model.n_items)).all()
    assert all(len(set(row)) == len(row) for row in items.tolist())
    assert (scores.diff(dim=1) <= 0).all() and torch.isfinite(scores).all()
    assert torch.equal(model.trie.lookup(model.sids.codes[items]), items)



@pytest.mark.parametrize("width,k,first_codes_used", [(4, 3, 6), (6, 6, 2)])
def test_every_beam_result_is_a_catalogue_item_reached_along_its_own_codes(width, k, first_codes_used):
    """Constrained decoding: a narrow beam returns only catalogue items, and each one's score is the exact
    log-probability of that item's own SID (+ eos), so no beam left the trie on the way (a beam that strayed
    off the catalogue and landed on an item index would carry another path's score)."""
    model = tiny_model(seed=5, first_codes_used=first_codes_used)
    ids, mask = model.encoder_inputs(histories(model, seed=5))
    items, scores = constrained_beam_search(model, ids, mask, model.trie, beam_width=width, k=k)
    assert ((items >= 0) & (items < model.n_items)).all()
    assert all(len(set(row)) == k for row in items.tolist())
    exact = exact_item_scores(model, ids, mask, model.trie)
    torch.testing.assert_close(scores, exact.gather(1, items), atol=1e-4, rtol=0)


def test_beam_narrower_than_k_or_k_above_catalogue_is_an_error():
    model = tiny_model()
    ids, mask = model.encoder_inputs(histories(model))
    with pytest.raises(ValueError, match="beam_width"):
        constrained_beam_search(model, ids, mask, model.trie, beam_width=3, k=5)
    with pytest.raises(ValueError, match="catalogue size"):
        constrained_beam_search(model, ids, mask, model.trie, beam_width=500, k=500)


def test_exact_top_k_takes_k_from_one_to_the_catalogue_size():
    model = tiny_model()
    ids, mask = model.encoder_inputs(histories(model))
    n = model.n_items
    for k in (0, n + 1):
        with pytest.raises(ValueError, match=rf"k must be in \[1, {n}\], got {k}"):
            exact_top_k(model, ids, mask, model.trie, k)
    items, _ = exact_top_k(model, ids, mask, model.trie, n)
    assert all(sorted(row) == list(range(n)) for row in items.tolist())
    assert exact_top_k(model, ids, mask, model.trie, 1)[0].shape == (ids.shape[0], 1)
