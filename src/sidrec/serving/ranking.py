"""One model call for many requests: top-k with an optional per-row "drop what was seen" rule."""

from __future__ import annotations

import torch

from sidrec.models import Recommender


def pad_histories(histories: list[torch.Tensor]) -> torch.Tensor:
    """1-D dense-index histories -> one left-aligned, -1-padded `[B, L]` LongTensor."""
    if not histories:
        return torch.empty(0, 1, dtype=torch.long)
    return torch.nn.utils.rnn.pad_sequence([h.to(torch.long) for h in histories], batch_first=True, padding_value=-1)


def rank_items(model: Recommender, histories: torch.Tensor, k: int,
               exclude_history: bool | torch.Tensor = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k items and scores `[B, k]` for `[B, L]` histories, in a single `model.recommend` call.

    Rows flagged in `exclude_history` follow `evaluation.protocol.top_k`: ask for k + the longest
    flagged history, keep rank order among unseen items. Unlike `top_k`, seen items are not pushed
    to the end but removed: their slots hold item -1 / score NaN (only when the catalogue runs out).
    """
    rows = histories.shape[0]
    exclude = torch.as_tensor(exclude_history, dtype=torch.bool).expand(rows)
    extra = int(((histories >= 0).sum(dim=1) * exclude).max()) if rows else 0
    want = min(k + extra, model.n_items)
    items, scores = model.recommend(histories, want)
    seen = (items[:, :, None] == histories[:, None, :]).any(dim=2) & exclude[:, None]
    order = torch.sort(seen.to(torch.int8), dim=1, stable=True).indices  # unseen first, rank order kept
    items, scores, seen = (torch.gather(t, 1, order)[:, :k] for t in (items, scores.float(), seen))
    return items.masked_fill(seen, -1), scores.masked_fill(seen, float("nan"))
