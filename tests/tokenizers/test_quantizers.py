import numpy as np
import pytest
import torch

from sidrec.features.embeddings import ItemEmbeddings
from sidrec.io import ArtifactError
from sidrec.tokenizers import TOKENIZERS, Tokenizer, build_tokenizer
from sidrec.tokenizers.residual import ResidualQuantizer

FAST = {
    "rqvae": {"epochs": 2, "hidden_dims": [32], "latent_dim": 8, "batch_size": 256, "progress": False},
    "nurqvae": {"epochs": 2, "hidden_dims": [32], "latent_dim": 8, "batch_size": 256, "progress": False},
    "rkmeans": {},
    "nu-rkmeans": {},
    "pq": {},
    "opq": {"opq_iters": 3},
    "nu-pq": {},
    "nu-opq": {"opq_iters": 3},
}


def _tok(name: str, **extra) -> Tokenizer:
    return build_tokenizer(name, codebook_size=16, **{**FAST[name], **extra})


def test_registry_names_match_the_spec():
    assert set(TOKENIZERS) >= set(FAST)


@pytest.mark.parametrize("name", sorted(FAST))
def test_save_load_round_trip_and_seed_determinism(name, skewed, tmp_path):
    tok = _tok(name).fit(skewed)
    codes = tok.encode(skewed)
    assert codes.dtype == torch.long and codes.shape == (len(skewed), len(tok.codebook_sizes))
    assert ((codes >= 0) & (codes < torch.tensor(tok.codebook_sizes))).all()
    tok.save(tmp_path / "tok")
    loaded = Tokenizer.load(tmp_path / "tok")
    assert type(loaded) is type(tok) and loaded.options == tok.options
    assert torch.equal(loaded.encode(skewed), codes)
    assert torch.allclose(loaded.decode(codes), tok.decode(codes))
    again = _tok(name).fit(skewed)
    assert torch.equal(again.encode(skewed), codes)


@pytest.mark.parametrize("name", ["rkmeans", "pq", "rqvae"])
def test_other_seed_gives_other_codebooks(name, skewed):
    a = _tok(name, seed=0).fit(skewed).encode(skewed)
    b = _tok(name, seed=1).fit(skewed).encode(skewed)
    assert not torch.equal(a, b)


def test_decode_reconstructs_better_than_the_mean(skewed):
    for name in ("rkmeans", "opq", "nu-rkmeans"):
        tok = _tok(name).fit(skewed)
        err = ((tok.decode(tok.encode(skewed)) - skewed) ** 2).mean()
        assert err < skewed.var(0).mean(), name


def test_residual_codewords_reencode_to_their_codes():
    torch.manual_seed(0)
    centers = torch.randn(4, 6) * 10
    z = (centers[:, None] + torch.randn(4, 200, 6)).reshape(-1, 6)
    rq = ResidualQuantizer(n_levels=2, codebook_size=4, dim=6)
    rq.kmeans_init(z)
    codes = rq.quantize(z)
    assert torch.equal(rq.quantize(rq.lookup(codes)), codes)


@pytest.mark.parametrize("name", ["pq", "opq"])
def test_pq_codewords_reencode_to_their_codes(name, skewed):
    tok = _tok(name).fit(skewed)
    codes = tok.encode(skewed)
    assert torch.equal(tok.encode(tok.decode(codes)), codes)


def test_inputs_are_validated(skewed):
    with pytest.raises(ValueError, match="2-D"):
        _tok("rkmeans").fit(skewed[0])
    bad = skewed.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        _tok("rkmeans").fit(bad)
    tok = _tok("rkmeans").fit(skewed)
    with pytest.raises(ValueError, match="d=8"):
        tok.encode(torch.zeros(5, 7))
    with pytest.raises(ValueError, match="outside"):
        tok.decode(torch.full((2, 3), 16))
    with pytest.raises(ValueError, match="k=16"):
        _tok("rkmeans").fit(skewed[:10])
    with pytest.raises(ValueError, match="divide"):
        _tok("pq", n_subspaces=3).fit(skewed)
    with pytest.raises(TypeError, match="unknown option"):
        build_tokenizer("rkmeans", n_level=3)
    with pytest.raises(ValueError, match="loss_weights"):
        build_tokenizer("rqvae", loss_weights={"recon": 1.0, "kl": 0.1})
    with pytest.raises(KeyError, match="unknown tokenizer"):
        build_tokenizer("vqvae")
    with pytest.raises(RuntimeError, match="not fitted"):
        _tok("pq").encode(skewed)


def test_accepts_numpy_and_item_embeddings(skewed):
    tok = _tok("rkmeans").fit(ItemEmbeddings(skewed, "toy"))
    assert torch.equal(tok.encode(skewed.numpy().astype(np.float64)), tok.encode(skewed))


def test_load_detects_tampered_weights(skewed, tmp_path):
    _tok("rkmeans").fit(skewed).save(tmp_path)
    with open(tmp_path / "weights.safetensors", "r+b") as fh:
        fh.seek(-4, 2)
        fh.write(b"\x00\x01\x02\x03")
    with pytest.raises(ArtifactError, match="checksum"):
        Tokenizer.load(tmp_path)


def test_nurqvae_model_selection_and_logistic_transform(skewed):
    tok = _tok("nurqvae", epochs=3, transform="logistic").fit(skewed)
    rates = [h["collision_rate"] for h in tok.history]
    assert len(rates) == 3 and rates[tok.best_epoch] == min(rates)
    assert tok.model.transform.initialised
    before, after = tok.latents(skewed)
    assert before.shape == after.shape == (len(skewed), 8)


# ----- defining properties of RQ-VAE / NU-RQ-VAE training ---------------------------------------------

def _small_model(kind: str, seed: int = 0):
    from sidrec.tokenizers.nurqvae import NURQVAEModel
    from sidrec.tokenizers.rqvae import RQVAEModel

    torch.manual_seed(seed)
    cls = NURQVAEModel if kind == "nurqvae" else RQVAEModel
    return cls(8, [16], 4, 2, 8, 0.25).train()


@pytest.mark.parametrize("kind", ["rqvae", "nurqvae"])
def test_straight_through_copies_decoder_input_gradient_onto_pre_quantization_latent(kind, skewed):
    """Straight-through estimator: the reconstruction loss's gradient crosses the (non-differentiable)
    quantizer unchanged, d(recon)/d(latent) == d(recon)/d(quantized latent), and so reaches the encoder."""
    model = _small_model(kind)
    x = skewed[:64]
    with torch.no_grad():
        model.quantizer.kmeans_init(model.quant_input(skewed[:400]), niter=5)
    seen = {}

    def keep(module, inputs, outputs):
        seen["latent"], seen["quantized"] = inputs[0], outputs[0]
        inputs[0].retain_grad()
        outputs[0].retain_grad()

    model.quantizer.register_forward_hook(keep)
    codes, losses = model(x)
    losses["recon"].backward()
    latent, quantized = seen["latent"], seen["quantized"]
    assert not torch.equal(quantized.detach(), latent.detach())  # the quantizer really changed the latent
    assert quantized.grad.abs().max() > 1e-6
    assert latent.grad is not None and torch.allclose(latent.grad, quantized.grad, rtol=1e-5, atol=1e-9)
    first = model.encoder[0].weight.grad
    assert first is not None and first.abs().max() > 1e-7
    # the encoder gradient is exactly the copied gradient pushed back through the encoder (and h);
    # eval mode: h's running statistics stay those the training forward just used
    model.eval()
    expected = torch.autograd.grad(model.to_quant(model.encoder(x)), model.encoder[0].weight, latent.grad)[0]
    assert torch.allclose(first, expected, rtol=1e-4, atol=1e-8)


def _kmeans_quantizer(skewed, codebook_size: int = 16) -> ResidualQuantizer:
    rq = ResidualQuantizer(n_levels=2, codebook_size=codebook_size, dim=8)
    rq.kmeans_init(skewed, niter=10)
    return rq.train()


def test_sinkhorn_last_balances_the_last_level_in_training(skewed):
    """NU-RQ-VAE's Sinkhorn step: with `sinkhorn_last` the last level's training assignments are spread
    (max code count close to n/K) and differ from plain argmin; earlier levels stay greedy; without it the
    heavy-tailed batch piles onto a few codewords."""
    rq, x, k = _kmeans_quantizer(skewed), skewed[:256], 16
    greedy = rq.quantize(x)
    _, plain, _ = rq(x)
    _, balanced, _ = rq(x, sinkhorn_last=True)
    assert torch.equal(plain, greedy)
    assert torch.equal(balanced[:, 0], greedy[:, 0])
    assert (balanced[:, 1] != greedy[:, 1]).float().mean() > 0.2
    fair = len(x) / k
    assert torch.bincount(balanced[:, 1], minlength=k).max() <= 2 * fair
    assert torch.bincount(plain[:, 1], minlength=k).max() >= 4 * fair


def test_nurqvae_training_loop_assigns_the_last_level_by_sinkhorn(skewed, monkeypatch):
    """The NU-RQ-VAE fit loop really trains with Sinkhorn on the last level (its default), so the
    training codes differ from greedy codes and are more balanced; RQ-VAE's loop stays greedy."""
    original = ResidualQuantizer.forward
    calls = []

    def spy(self, z, **kw):
        out = original(self, z, **kw)
        calls.append((self.training, kw.get("sinkhorn_last", False), out[1], self.quantize(z)))
        return out

    monkeypatch.setattr(ResidualQuantizer, "forward", spy)
    _tok("nurqvae", epochs=1).fit(skewed)
    assert calls and all(training and on for training, on, _, _ in calls)
    full = [(codes, greedy) for _, _, codes, greedy in calls if len(codes) == 256]
    assert all(torch.equal(c[:, :-1], g[:, :-1]) for c, g in full)
    assert sum((c[:, -1] != g[:, -1]).float().mean() for c, g in full) / len(full) > 0.2
    peak = lambda codes: torch.bincount(codes[:, -1], minlength=16).max().item()  # noqa: E731
    assert sum(peak(c) for c, _ in full) < 0.8 * sum(peak(g) for _, g in full)
    assert all(peak(c) <= 2 * 256 / 16 for c, _ in full)
    calls.clear()
    _tok("rqvae", epochs=1).fit(skewed)
    assert calls and all(torch.equal(c, g) for _, on, c, g in calls if not on)
    assert not any(on for _, on, _, _ in calls)


def test_quantization_loss_pulls_codewords_to_their_latents_and_commits_the_encoder(skewed):
    """Codebook term: one SGD step on the quantization loss moves every used codeword toward the mean of
    the residuals assigned to it. Commitment term: the same loss sends beta * d||r - sg(e)||^2 back into
    the latent, hence into the encoder."""
    torch.manual_seed(0)
    encoder = torch.nn.Linear(8, 8)
    x = skewed[:128]
    rq = ResidualQuantizer(n_levels=2, codebook_size=8, dim=8, beta=0.25)
    with torch.no_grad():
        rq.codebooks.copy_(torch.randn(2, 8, 8))  # far from the data: a lot to learn
    z = encoder(x)
    z.retain_grad()
    codes, residuals = rq.residuals(z.detach())

    def gaps() -> torch.Tensor:  # [L, K] distance of each codeword to the mean of its residuals (nan: unused)
        out = torch.full((2, 8), float("nan"))
        for level in range(2):
            for k in codes[:, level].unique():
                mean = residuals[level][codes[:, level] == k].mean(0)
                out[level, k] = (rq.codebooks[level, k] - mean).norm()
        return out.detach()

    before = gaps()
    _, fwd_codes, loss = rq(z)
    assert torch.equal(fwd_codes, codes)
    # a used codeword's gap shrinks by the factor 1 - lr * n_k / (numel * L / 2) = 1 - n_k / 128: in [0, 1)
    optimizer = torch.optim.SGD([rq.codebooks], lr=8.0)
    optimizer.zero_grad()
    loss.backward()
    # commitment: gradient on the latent is sum_l beta * 2 (r_l - e_l) / numel / L
    q = [rq.codebooks[level, codes[:, level]].detach() for level in range(2)]
    expected = sum(0.25 * 2 * (residuals[level] - q[level]) / z.numel() / 2 for level in range(2))
    assert z.grad.abs().max() > 1e-5
    assert torch.allclose(z.grad, expected, rtol=1e-4, atol=1e-9)
    assert encoder.weight.grad is not None and encoder.weight.grad.abs().max() > 1e-5
    optimizer.step()
    after = gaps()
    used = ~before.isnan()
    assert used.sum() >= 4
    assert (after[used] < 0.999 * before[used]).all()
    unused = ~used
    assert torch.isnan(after[unused]).all()


def test_rqvae_fit_trains_the_codebooks_through_the_quantization_loss(skewed, monkeypatch):
    """In the training loop, only the quantization loss moves the codebooks (straight-through sends no
    reconstruction gradient to them): with weight decay and restarts off, they must still move."""
    original = ResidualQuantizer.kmeans_init
    initial = {}

    def spy(self, z, **kw):
        original(self, z, **kw)
        initial["books"] = self.codebooks.detach().clone()

    monkeypatch.setattr(ResidualQuantizer, "kmeans_init", spy)
    tok = _tok("rqvae", epochs=2, weight_decay=0.0, dead_code_restart=False).fit(skewed)
    moved = (tok.model.quantizer.codebooks.detach() - initial["books"]).abs().amax(-1)  # [L, K]
    assert (moved > 1e-4).float().mean() > 0.5
