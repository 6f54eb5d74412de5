"""AsymRec: MSP gating, learning the cyclic pattern, exact vs beam ranking, ablations, save/load."""

import pytest
import torch

from sidrec.config import EvalConfig, TrainConfig
from sidrec.evaluation import evaluate
import sidrec.models.asymrec  # noqa: F401  (registers "asymrec")
from sidrec.models import Recommender, build_model
from sidrec.models.asymrec import AsymRec, AsymRecOptions, MultiExpertProjection, effective_rank
from sidrec.tokenizers import SemanticIDs
from sidrec.training import Trainer
from causality import assert_causal, causal_histories

SMALL = {"hidden": 32, "layers": 1, "heads": 2, "ffn": 64, "dropout": 0.0, "max_len": 10, "expert_hidden": 32}


def toy_items(n_items: int, dim: int = 16, n_codes: int = 6, k: int = 4, seed: int = 0):
    """Random item embeddings and unique random codes (n_codes positions of k codewords)."""
    g = torch.Generator().manual_seed(seed)
    vectors = torch.randn(n_items, dim, generator=g)
    codes = torch.randint(k, (4 * n_items, n_codes), generator=g).unique(dim=0)
    codes = codes[torch.randperm(len(codes), generator=g)[:n_items]]
    return vectors, SemanticIDs(codes, [k] * n_codes)


def test_msp_gates_sum_to_one_and_output_is_the_gated_sum():
    torch.manual_seed(0)
    msp = MultiExpertProjection(6, 5, 3, n_experts=3)
    with torch.no_grad():  # each expert's own biases (they start at 0), set apart so each one shows
        msp.b1.copy_(torch.randn(3, 5))
        msp.b2.copy_(torch.randn(3, 3))
    x = torch.randn(7, 6)
    gates = msp.gates(x)
    assert torch.allclose(gates.sum(1), torch.ones(7))
    by_hand = torch.zeros(7, 3)
    for e in range(3):
        hidden = torch.nn.functional.gelu(x @ msp.w1[e] + msp.b1[e])
        by_hand += gates[:, e:e + 1] * (hidden @ msp.w2[e] + msp.b2[e])
    assert torch.allclose(msp(x), by_hand, atol=1e-6)


def _fit(ds, options, embeddings=None, sids=None, epochs=40):
    vectors, codes = toy_items(ds.n_items)
    model = build_model("asymrec", {**SMALL, **options}, ds.n_items,
                        embeddings=vectors if embeddings is None else embeddings, sids=codes if sids is None else sids)
    Trainer(model, TrainConfig(epochs=epochs, batch_size=32, lr=5e-3, progress=False)).fit(model.make_batches(ds, 32))
    return model.eval()


def test_asymrec_learns_cyclic_pattern_and_round_trips(cyclic_dataset, tmp_path):
    ds = cyclic_dataset
    model = _fit(ds, {})
    config = EvalConfig(ks=[1, 5, 10], max_len=10)
    metrics = evaluate(model, ds, "test", config)
    assert metrics["recall@1"] > 0.9  # item i is always followed by i + 1
    pop = build_model("popularity", {}, ds.n_items).fit_counts(ds.item_popularity())
    assert metrics["ndcg@10"] > evaluate(pop, ds, "test", config)["ndcg@10"] + 0.5
    bf16 = evaluate(model, ds, "test", config.model_copy(update={"precision": "bf16"}))  # exact scoring under autocast
    assert bf16["recall@1"] > 0.9

    _, histories, _ = ds.split("test", 10)
    items, scores = model.recommend(histories, 5)
    assert ((items >= 0) & (items < ds.n_items)).all()
    assert (scores.diff(dim=1) <= 1e-6).all()
    model.save(tmp_path / "model")
    back = Recommender.load(tmp_path / "model")
    assert torch.equal(back.recommend(histories, 5)[0], items)
    assert torch.allclose(back.item_scores(histories), model.item_scores(histories))


def test_exact_scores_are_sums_of_code_log_probs_and_beam_agrees(cyclic_dataset):
    ds = cyclic_dataset
    model = _fit(ds, {}, epochs=3)
    _, histories, _ = ds.split("test", 10)
    scores = model.item_scores(histories)
    log_probs = model.code_log_probs(model.last_states(histories))
    item = 5
    by_hand = sum(log_probs[:, p, model.item_codes[item, p]] for p in range(model.item_codes.shape[1]))
    assert torch.allclose(scores[:, item], by_hand, atol=1e-5)
    gathered = log_probs[:, torch.arange(model.item_codes.shape[1]), model.item_codes].sum(-1)  # [B, items]
    assert torch.allclose(scores, gathered, atol=1e-5)
    vectors, sids = toy_items(ds.n_items)

    exact_items, exact_scores = model.recommend(histories, 5)
    beam_model = build_model("asymrec", {**SMALL, "decode": "beam", "beam_width": ds.n_items}, ds.n_items,
                             embeddings=vectors, sids=sids)
    beam_model.load_state_dict(model.state_dict())
    beam_items, beam_scores = beam_model.eval().recommend(histories, 5)  # exhaustive beam
    assert torch.equal(beam_items, exact_items)
    assert torch.allclose(beam_scores, exact_scores, atol=1e-5)
    narrow_items, narrow_scores = model.beam_top_k(histories, 3, beam_width=4)
    assert ((narrow_items >= 0) & (narrow_items < ds.n_items)).all()  # every beam ends on a catalogue item
    assert torch.allclose(narrow_scores, scores.gather(1, narrow_items), atol=1e-5)
    assert (narrow_items[:, 0] == exact_items[:, 0]).float().mean() > 0.9


def test_ablations_train_and_regression_rank_by_dot_product(cyclic_dataset):
    ds = cyclic_dataset
    vectors, _ = toy_items(ds.n_items)
    _, histories, _ = ds.split("test", 10)
    for options in ({"inputs": "sid"}, {"experts": 1}, {"targets": "regression"},
                    {"targets": "regression", "regression_loss": "mse"}):
        model = _fit(ds, options, epochs=2)
        items, _ = model.recommend(histories, 3)
        assert items.shape == (len(histories), 3)
    assert not hasattr(_fit(ds, {"inputs": "sid"}, epochs=1), "msp")
    reg = _fit(ds, {"targets": "regression"}, epochs=1)
    expected = reg.regression_head(reg.last_states(histories)) @ vectors.T
    assert torch.allclose(reg.item_scores(histories), expected, atol=1e-5)
    with pytest.raises(ValueError, match="discrete targets"):
        reg.beam_top_k(histories, 3)
    with pytest.raises(ValueError, match=r"^model.decode='beam' needs discrete targets \(model.targets='mhq'\)$"):
        build_model("asymrec", {**SMALL, "targets": "regression", "decode": "beam"}, ds.n_items,
                    embeddings=vectors, sids=toy_items(ds.n_items)[1])


def test_bad_context_and_effective_rank():
    options = AsymRecOptions(**SMALL)
    with pytest.raises(ValueError, match=r"embeddings: expected ItemEmbeddings or a tensor \[n_items=10, d\], got \(9, 4\)"):
        AsymRec(options, 10, embeddings=torch.zeros(9, 4), sids=toy_items(10)[1])
    with pytest.raises(ValueError, match=r"embeddings: expected ItemEmbeddings or a tensor \[n_items=10, d\], got \(10,\)$"):
        AsymRec(options, 10, embeddings=torch.zeros(10), sids=toy_items(10)[1])
    with pytest.raises(ValueError, match=r"embeddings: expected .*, got list$"):
        AsymRec(options, 10, embeddings=[[0.0]] * 10, sids=toy_items(10)[1])
    with pytest.raises(ValueError, match=r"sids: expected SemanticIDs with one row per item \(10\), got 9$"):
        AsymRec(options, 10, embeddings=torch.zeros(10, 4), sids=toy_items(9)[1])
    with pytest.raises(ValueError, match=r"sids: expected SemanticIDs with one row per item \(10\), got str$"):
        AsymRec(options, 10, embeddings=torch.zeros(10, 4), sids="codes")
    assert AsymRec(options, 10, embeddings=torch.zeros(10, 4), sids=toy_items(10)[1]).embeddings.encoder == "tensor"
    g = torch.Generator().manual_seed(0)
    full = torch.randn(500, 8, generator=g)
    line = torch.randn(500, 1, generator=g) * torch.ones(1, 8)
    assert effective_rank(full) > 7.0
    assert effective_rank(line) < 1.05


def test_asymrec_states_are_causal():
    """Causal mask (MSP inputs and SID inputs): a later item never changes an earlier position's state, an
    earlier item changes every later one."""
    vectors, sids = toy_items(12)
    for inputs in ("msp", "sid"):
        torch.manual_seed(0)
        model = build_model("asymrec", {**SMALL, "layers": 2, "inputs": inputs}, 12, embeddings=vectors,
                            sids=sids).eval()
        assert_causal(model.hidden_states, causal_histories())


def test_msp_routing_depends_on_the_input_and_changes_the_projection():
    """MSP routing: different items get different gate weights, the output is not what any constant gate
    would give (routing matters), and the loss trains the gate; for a standalone MSP and inside AsymRec."""
    torch.manual_seed(0)
    msp = MultiExpertProjection(16, 32, 8, n_experts=4)
    x = torch.randn(32, 16, generator=torch.Generator().manual_seed(1))
    vectors, sids = toy_items(12)
    model = build_model("asymrec", SMALL, 12, embeddings=vectors, sids=sids)
    items = torch.arange(12)
    # (module, inputs, least gate spread, least output gap): measured 0.12 / 0.35 and 0.017 / 0.056
    for module, inputs, spread, least_gap in ((msp, x, 0.04, 0.1), (model.msp, vectors, 0.005, 0.015)):
        gates = module.gates(inputs)
        assert gates.std(dim=0).mean() > spread  # the weights move with the input
        routed = module(inputs)
        for constant in (gates.mean(0).detach(), torch.full((4,), 0.25)):
            fixed = (constant[None, :, None] * module.expert_outputs(inputs)).sum(1)
            gap = (routed - fixed).norm(dim=1) / routed.norm(dim=1)
            assert gap.median() > least_gap
        module.zero_grad()
        routed.pow(2).sum().backward()
        assert module.gate.weight.grad is not None and module.gate.weight.grad.abs().max() > 1e-2
    # inside AsymRec: the item inputs the encoder reads change when the gate is frozen to a constant
    with torch.no_grad():
        routed = model.item_inputs(items)
        mean_gate = model.msp.gates(vectors).mean(0)
    original = model.msp.gates
    model.msp.gates = lambda inp: mean_gate.expand(len(inp), -1)
    try:
        with torch.no_grad():
            frozen = model.item_inputs(items)
    finally:
        model.msp.gates = original
    assert ((routed - frozen).norm(dim=1) / routed.norm(dim=1)).median() > 0.015


def test_rpg_heads_score_by_cosine_against_tied_code_embeddings_with_a_temperature(cyclic_dataset):
    """heads=rpg: logits are cos(h_p, e_p,k) / temperature with e the (tied) input code embeddings."""
    ds = cyclic_dataset
    vectors, sids = toy_items(ds.n_items)
    model = build_model("asymrec", {**SMALL, "inputs": "sid", "head_type": "rpg", "temperature": 0.5}, ds.n_items,
                        embeddings=vectors, sids=sids).eval()
    states = torch.randn(3, SMALL["hidden"])
    log_probs = model.code_log_probs(states)
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(3, log_probs.shape[1]), atol=1e-5)
    p, k = 1, 2  # the head MLPs start as the identity: logits = cos(state, code embedding) / temperature
    full = torch.nn.functional.cosine_similarity(states[:, None, :], model.code_table()[p][None], dim=-1) / 0.5
    full = full.masked_fill(model.code_mask[p][None], float("-inf"))
    assert torch.allclose(log_probs[:, p], torch.log_softmax(full, -1), atol=1e-5)
    model.code_embedding.weight.data[model.code_offsets[p] + k] *= -1  # tied: changing an input code moves its logit
    assert not torch.allclose(model.code_log_probs(states)[:, p, k], log_probs[:, p, k])
    trained = _fit(ds, {"inputs": "sid", "head_type": "rpg"}, epochs=3)
    items, scores = trained.recommend(ds.split("test", 10)[1], 5)
    assert ((items >= 0) & (items < ds.n_items)).all() and torch.isfinite(scores).all()


def test_ignoring_the_dedup_code_makes_colliding_items_tie():
    """dedup_code=ignore: the extra level that only numbers items sharing a code is neither trained nor scored."""
    from sidrec.tokenizers.collisions import dedup

    codes = torch.tensor([[0, 1], [0, 1], [1, 0], [2, 2]])  # items 0 and 1 collide
    sids = dedup(codes, [3, 3])
    assert sids.n_levels == 3
    vectors = torch.randn(4, 8)
    small = {"hidden": 8, "layers": 1, "heads": 1, "ffn": 16, "dropout": 0.0, "max_len": 5, "expert_hidden": 8}
    histories = torch.tensor([[2, 3, -1], [3, 2, 0]])
    for mode, tie in (("ignore", True), ("predict", False)):
        torch.manual_seed(0)
        model = build_model("asymrec", {**small, "dedup_code": mode}, 4, embeddings=vectors, sids=sids).eval()
        with torch.no_grad():
            model.code_bias.data[-1] = torch.tensor([3.0, -3.0, 0.0])[: model.code_bias.shape[1]]
            scores = model.item_scores(histories)
        assert torch.allclose(scores[:, 0], scores[:, 1]) == tie
        batch = {"inputs": torch.tensor([[2, 3]]), "targets": torch.tensor([[3, 0]])}
        loss, _ = model.loss(batch)
        model.code_bias.grad = None
        loss.backward()
        assert (model.code_bias.grad[-1].abs().sum() == 0) == tie


@pytest.mark.parametrize("head_type", ["linear", "rpg"])
def test_positions_with_smaller_codebooks_give_no_mass_to_codes_they_lack(head_type):
    """A dedup level (or any position) with K < K_max: its padded codes get -inf, its real ones sum to 1."""
    g = torch.Generator().manual_seed(0)
    sizes = [4, 4, 2]
    codes = torch.stack([torch.randint(k, (30,), generator=g) for k in sizes], 1).unique(dim=0)
    model = build_model("asymrec", {**SMALL, "head_type": head_type}, len(codes),
                        embeddings=torch.randn(len(codes), 8, generator=g), sids=SemanticIDs(codes, sizes))
    log_probs = model.code_log_probs(torch.randn(5, SMALL["hidden"], generator=g))  # [N, P, K_max]
    assert torch.isneginf(log_probs[:, 2, 2:]).all()
    totals = torch.stack([log_probs[:, p, :k].logsumexp(-1) for p, k in enumerate(sizes)], 1)
    torch.testing.assert_close(totals, torch.zeros_like(totals), atol=1e-5, rtol=0)


def test_diagnostics_report_the_effective_rank_of_the_validation_states(cyclic_dataset):
    """The collapse claim's figure comes from the model: the rank of the states its heads read at the
    validation histories (a model with one hidden unit cannot exceed 1), and it leaves train mode as found."""
    ds = cyclic_dataset
    vectors, codes = toy_items(ds.n_items)
    model = build_model("asymrec", SMALL, ds.n_items, embeddings=vectors, sids=codes).train()
    rank = model.diagnostics(ds, 10)["effective_rank"]
    assert model.training and 1.0 < rank <= SMALL["hidden"]
    _, histories, _ = ds.split("valid", 10)
    with torch.no_grad():
        assert rank == pytest.approx(effective_rank(model.eval().last_states(histories)), rel=1e-6)
    assert build_model("popularity", {}, ds.n_items).diagnostics(ds, 10) == {}


def test_effective_rank_is_exp_entropy_of_the_centred_singular_values_at_any_scale_and_offset():
    """Rows ±a e1, ±b e2 (centred singular values √2 a, √2 b): rank exp(H(a, b) / (a + b)), unchanged by a
    common offset (it is centred away) and by a scale too small for the singular values to sum to 1."""
    a, b = 1e-3, 3e-3
    rows = torch.tensor([[a, 0.0], [-a, 0.0], [0.0, b], [0.0, -b]], dtype=torch.float64)
    p = torch.tensor([a, b], dtype=torch.float64) / (a + b)
    expected = float(torch.exp(-(p * p.log()).sum()))
    for states in (rows, rows + torch.tensor([100.0, -30.0], dtype=torch.float64)):
        assert effective_rank(states) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("inputs", ["sid", "msp"])
def test_the_code_table_holds_each_positions_own_code_embeddings_and_zeros_beyond_its_k(inputs):
    """RPG's tied heads read row (p, k) = the embedding of code k at position p (offset by the sizes before it),
    the last code of the last position included; rows past a position's K are zero."""
    g = torch.Generator().manual_seed(0)
    sizes = [4, 3, 5]
    codes = torch.stack([torch.randint(k, (40,), generator=g) for k in sizes], 1).unique(dim=0)
    model = build_model("asymrec", {**SMALL, "inputs": inputs, "head_type": "rpg"}, len(codes),
                        embeddings=torch.randn(len(codes), 8, generator=g), sids=SemanticIDs(codes, sizes))
    table = model.code_table()
    weight = model.code_embedding.weight
    assert table.shape == (3, 5, SMALL["hidden"])
    for p, (offset, k) in enumerate(zip([0, 4, 7], sizes)):
        assert torch.equal(table[p, :k], weight[offset:offset + k])
        assert torch.equal(table[p, k:], torch.zeros(5 - k, SMALL["hidden"]))


def test_msp_experts_start_at_fan_in_scale():
    """Expert weights start N(0, 1 / fan-in) (unit-variance activations through both layers), biases at 0."""
    torch.manual_seed(0)
    msp = MultiExpertProjection(64, 256, 32, n_experts=4)
    assert msp.w1.std().item() == pytest.approx(64 ** -0.5, rel=0.05)
    assert msp.w2.std().item() == pytest.approx(256 ** -0.5, rel=0.05)
    assert msp.b1.shape == (4, 256) and msp.b2.shape == (4, 32) and not msp.b1.any() and not msp.b2.any()


@pytest.mark.parametrize("targets, regression_loss", [("mhq", "cosine"), ("regression", "cosine"), ("regression", "mse")])
def test_the_loss_sums_one_term_per_target_item_0_included(targets, regression_loss):
    """MHQ: mean code NLL per target; regression: 1 - cos or the mean squared error to the next item's
    embedding; summed over every non-padding target (item 0 is an item), with their count."""
    vectors, sids = toy_items(12)
    torch.manual_seed(0)
    model = build_model("asymrec", {**SMALL, "targets": targets, "regression_loss": regression_loss}, 12,
                        embeddings=vectors, sids=sids).eval()
    inputs = torch.tensor([[3, 4, 5, -1], [1, 2, -1, -1]])
    targets_ = torch.tensor([[4, 5, 0, -1], [2, 0, -1, -1]])
    total, count = model.loss({"inputs": inputs, "targets": targets_})
    states = model.hidden_states(inputs)
    terms = []
    for b, t in [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]:
        state, item = states[b, t][None], int(targets_[b, t])
        if targets == "mhq":
            log_probs = model.code_log_probs(state)[0]
            terms.append(-log_probs[torch.arange(len(sids.codebook_sizes)), sids.codes[item]].mean())
        elif regression_loss == "cosine":
            terms.append(1 - torch.nn.functional.cosine_similarity(model.regression_head(state)[0], vectors[item], dim=0))
        else:
            terms.append((model.regression_head(state)[0] - vectors[item]).pow(2).mean())
    assert int(count) == 5
    torch.testing.assert_close(total, torch.stack(terms).sum())


def test_decode_beam_recommends_by_the_beam_not_by_exact_scores():
    """decode=beam: recommend is the code-position beam (here greedy, width 1), which exact scoring is not."""
    vectors, sids = toy_items(12)
    torch.manual_seed(0)
    model = build_model("asymrec", {**SMALL, "decode": "beam", "beam_width": 1}, 12, embeddings=vectors,
                        sids=sids).eval()
    histories = torch.randint(12, (32, 5), generator=torch.Generator().manual_seed(1))
    items, scores = model.recommend(histories, 1)
    beam_items, beam_scores = model.beam_top_k(histories, 1)
    assert torch.equal(items, beam_items) and torch.equal(scores, beam_scores)
    assert not torch.equal(items, model.item_scores(histories).topk(1).indices)


@pytest.mark.parametrize("head_type", ["linear", "rpg"])
def test_code_log_probs_by_hand_with_every_head_parameter_set(head_type):
    """linear: log_softmax(W_p s + b_p); rpg: log_softmax(cos(s + W2_p gelu(W1_p s + b1_p), e_p,k) / T); padded
    codes -inf. Every parameter is set away from its initial value (zero biases and W2 would hide a sign)."""
    vectors, sids = toy_items(12)
    torch.manual_seed(0)
    model = build_model("asymrec", {**SMALL, "head_type": head_type, "temperature": 0.5}, 12, embeddings=vectors,
                        sids=sids).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.startswith(("code_", "head_")):
                param.copy_(torch.randn_like(param) * 0.3)
    states = torch.randn(3, SMALL["hidden"])
    log_probs = model.code_log_probs(states)
    for p in range(len(sids.codebook_sizes)):
        if head_type == "linear":
            logits = states @ model.code_heads[p].T + model.code_bias[p]
        else:
            query = states + torch.nn.functional.gelu(states @ model.head_w1[p] + model.head_b1[p]) @ model.head_w2[p]
            table = model.code_embedding.weight[model.code_offsets[p]:model.code_offsets[p] + sids.codebook_sizes[p]]
            logits = torch.nn.functional.cosine_similarity(query[:, None], table[None], dim=-1) / 0.5
        torch.testing.assert_close(log_probs[:, p], torch.log_softmax(logits, -1), atol=1e-5, rtol=1e-5)


def test_heads_start_small_and_the_catalogue_stays_out_of_the_weights():
    """Linear heads start N(0, 0.02²), RPG's first head layer N(0, 1/hidden) with one bias per position and its
    second at zero (h_p = s: the identity map); the item vectors, codes and offsets are buffers outside the
    state dict, so the weights load over a grown catalogue (`over_catalogue`)."""
    g = torch.Generator().manual_seed(0)
    sizes = [64] * 4
    codes = torch.stack([torch.randint(64, (200,), generator=g) for _ in sizes], 1).unique(dim=0)
    vectors = torch.randn(len(codes), 8, generator=g)
    hidden = 128
    options = {**SMALL, "hidden": hidden, "heads": 2}
    torch.manual_seed(0)
    linear = build_model("asymrec", options, len(codes), embeddings=vectors, sids=SemanticIDs(codes, sizes))
    rpg = build_model("asymrec", {**options, "head_type": "rpg"}, len(codes), embeddings=vectors,
                      sids=SemanticIDs(codes, sizes))
    assert linear.code_heads.std().item() == pytest.approx(0.02, rel=0.05) and not linear.code_bias.any()
    assert rpg.head_w1.std().item() == pytest.approx(hidden ** -0.5, rel=0.05)
    assert rpg.head_b1.shape == (4, hidden) and not rpg.head_b1.any() and not rpg.head_w2.any()
    for model in (linear, rpg):
        assert not {"item_vectors", "item_codes", "code_offsets", "code_mask", "code_weights"} & set(model.state_dict())


def test_without_a_dedup_level_ignoring_it_leaves_every_code_weighted():
    """dedup_code=ignore drops only a real dedup level: codes without one (no `dedup_level_size`, or 0) keep all."""
    vectors, sids = toy_items(12)
    for info in ({}, {"dedup_level_size": 0}):
        model = build_model("asymrec", {**SMALL, "dedup_code": "ignore"}, 12, embeddings=vectors,
                            sids=SemanticIDs(sids.codes, sids.codebook_sizes, "none", info))
        assert model.code_weights.tolist() == [1.0] * sids.codes.shape[1]
