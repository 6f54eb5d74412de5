"""The cheap dropout keeps F.dropout's contract: drop rate p, unbiased, identity in eval, seeded."""

import pytest
import torch
import torch.nn.functional as F

from sidrec.models.dropout import attention, dropout


def test_drops_at_rate_p_and_stays_unbiased():
    torch.manual_seed(0)
    y = dropout(torch.ones(1_000_000), 0.3, True)
    assert (y == 0).float().mean().item() == pytest.approx(0.3, abs=0.002)
    assert y.mean().item() == pytest.approx(1.0, abs=0.005)
    assert y.unique().tolist() == [0.0, pytest.approx(1 / 0.7, rel=1e-4)]


def test_identity_without_training_or_rate():
    x = torch.randn(4, 5)
    assert dropout(x, 0.5, False) is x
    assert dropout(x, 0.0, True) is x
    with pytest.raises(ValueError, match="dropout probability"):
        dropout(x, 1.0, True)


def test_gradient_is_the_same_mask_and_seed_reproduces_it():
    x = torch.randn(64, 33, requires_grad=True)
    torch.manual_seed(1)
    y = dropout(x, 0.5, True)
    y.sum().backward()
    assert torch.equal(x.grad == 0, y == 0)
    torch.manual_seed(1)
    assert torch.equal(dropout(x, 0.5, True), y)


def test_attention_matches_sdpa_without_dropout_and_drops_weights_with_it():
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 2, 2, 7, 8).unbind(0)
    bias = torch.randn(2, 2, 7, 7)
    torch.testing.assert_close(attention(q, k, v, bias, 0.1, False), F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=1.0))
    weights = torch.softmax(q @ k.transpose(-1, -2) + bias, -1)
    torch.manual_seed(2)
    dropped = attention(q, k, v, bias, 0.5, True, scale=1.0)
    torch.manual_seed(2)
    expected = (weights * (dropout(torch.ones_like(weights), 0.5, True))) @ v
    torch.testing.assert_close(dropped, expected)


@pytest.mark.parametrize("p", [0.5, 0.9, 0.1])
@pytest.mark.parametrize("n", [1 << 20, (1 << 20) + 3])
def test_an_element_is_kept_iff_its_16_bit_lane_clears_the_quantised_rate(p, n):
    """Each element reads one 16-bit lane of the int64 words drawn for it, (n + 3) // 4 words in all (the next
    draw starts after them); it is dropped iff its lane is among the round(p * 65536) lowest of the 65536 values,
    and a kept element is scaled by exactly 65536 / (65536 - dropped). (2^20 elements draw every lane value,
    the boundary one included, with probability 1 - 1e-7.)"""
    dropped = round(p * 65536)
    torch.manual_seed(5)
    words = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), None)
    after = torch.rand(3)
    lanes = words.view(torch.int16)[:n]
    expected = torch.where(lanes.int() + 32768 >= dropped, torch.tensor(65536 / (65536 - dropped)), torch.tensor(0.0))
    torch.manual_seed(5)
    y = dropout(torch.ones(n), p, True)
    assert torch.equal(y, expected)
    assert torch.equal(torch.rand(3), after)
