"""Shared check of the causal property of sequence encoders (SASRec, AsymRec)."""

import torch


def _change_at(histories: torch.Tensor, row: int, position: int) -> torch.Tensor:
    """Copy of `histories` with the item at (row, position) replaced by another item of the same batch."""
    changed = histories.clone()
    old = int(changed[row, position])
    changed[row, position] = next(i for i in histories[-1].tolist() if i not in (old, -1))
    return changed


def assert_causal(hidden_states, histories: torch.Tensor, row: int = 0) -> None:
    """Changing the item at position t leaves every earlier state of that row (and every other row) exactly
    as it was, and changes the states from t on; checked for every t of a full-length row."""
    with torch.no_grad():
        base = hidden_states(histories)
        for t in range(histories.shape[1]):
            states = hidden_states(_change_at(histories, row, t))
            assert torch.allclose(states[row, :t], base[row, :t], rtol=0, atol=1e-6), t
            others = [r for r in range(len(histories)) if r != row]
            assert torch.allclose(states[others], base[others], rtol=0, atol=1e-6), t
            assert ((states[row, t:] - base[row, t:]).abs().amax(-1) > 1e-3).all(), t


def causal_histories() -> torch.Tensor:
    """Full row 0 (the one edited), a padded row (padding reads as item 0), and a last row holding every
    item used, so an edit never changes the set of items in the batch (nor the shapes of any product)."""
    return torch.tensor([[3, 7, 1, 6, 4, 2, 5, 0], [2, 6, 0, 5, -1, -1, -1, -1], [0, 1, 2, 3, 4, 5, 6, 7]])

