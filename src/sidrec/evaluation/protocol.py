"""Leave-one-out full-catalogue evaluation of any recommender exposing `recommend(histories, k)`."""

from __future__ import annotations

import time
from typing import Protocol

import torch
from tqdm.auto import tqdm

from sidrec.config import EvalConfig
from sidrec.data import Dataset
from sidrec.evaluation.metrics import coverage, head_tail_recall, ranking_metrics, tail_items


class Recommender(Protocol):
    def recommend(self, histories: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k item indices and scores, best first, for left-aligned -1-padded histories."""


def rank_items(recommender: Recommender, histories: torch.Tensor, k: int,
               exclude_history: bool | torch.Tensor = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k items and scores `[B, k]` in one `recommend` call; `exclude_history` may be per row.

    Flagged rows ask for k + the longest flagged history and drop seen items, keeping rank order;
    a slot left empty (only when the catalogue runs out) holds item -1 and score NaN.
    """
    rows = histories.shape[0]
    exclude = torch.as_tensor(exclude_history, dtype=torch.bool).expand(rows)
    extra = int(((histories >= 0).sum(dim=1) * exclude).max()) if rows else 0
    items, scores = recommender.recommend(histories, min(k + extra, getattr(recommender, "n_items", k + extra)))
    seen = (items[:, :, None] == histories[:, None, :]).any(dim=2) & exclude[:, None]
    order = torch.sort(seen.to(torch.int8), dim=1, stable=True).indices  # unseen first, rank order kept
    items, scores, seen = (torch.gather(t, 1, order)[:, :k] for t in (items, scores.float(), seen))
    return items.masked_fill(seen, -1), scores.masked_fill(seen, float("nan"))


def top_k(recommender: Recommender, histories: torch.Tensor, k: int, exclude_history: bool) -> torch.Tensor:
    """Just the items of `rank_items`."""
    return rank_items(recommender, histories, k, exclude_history)[0]


def user_sample(n_users: int, size: int | None, seed: int) -> torch.Tensor | None:
    """Sorted row indices of a fixed, seeded sample of `size` of `n_users` rows (None = every row)."""
    if size is None or size >= n_users:
        return None
    return torch.randperm(n_users, generator=torch.Generator().manual_seed(seed))[:size].sort().values


@torch.no_grad()
def evaluate(recommender: Recommender, dataset: Dataset, part: str, config: EvalConfig | None = None,
             progress: bool = False, sample: int | None = None) -> dict[str, float]:
    """Recall/NDCG@ks, coverage@10 and head/tail Recall@10 on the `valid` or `test` targets.

    `sample` restricts the users to a fixed sample (`config.select_seed`): cheap epoch selection.
    """
    config = config or EvalConfig()
    start = time.perf_counter()
    _, histories, targets = dataset.split(part, config.max_len)
    rows = user_sample(len(targets), sample, config.select_seed)
    if rows is not None:
        histories, targets = histories[rows], targets[rows]
    order = torch.argsort((histories >= 0).sum(1), stable=True)  # batches of similar lengths pad less;
    histories, targets = histories[order], targets[order]        # every metric is a mean over users
    k = max(max(config.ks), 10)
    batches = range(0, len(targets), config.batch_size)
    parameter = next(recommender.parameters(), None) if hasattr(recommender, "parameters") else None
    device_type = parameter.device.type if parameter is not None else "cpu"
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=config.precision == "bf16"):
        tops = [top_k(recommender, histories[i:i + config.batch_size], min(k, dataset.n_items), config.exclude_history)
                for i in tqdm(batches, desc=f"evaluate {part}", disable=not progress, leave=False)]
    top = torch.cat(tops) if tops else torch.empty(0, k, dtype=torch.long)
    top = torch.nn.functional.pad(top, (0, k - top.shape[1]), value=-1)  # catalogues smaller than k
    metrics = ranking_metrics(top, targets, config.ks)
    metrics["coverage@10"] = coverage(top, dataset.n_items, 10)
    metrics.update(head_tail_recall(top, targets, tail_items(dataset.item_popularity(), config.tail_fraction)))
    metrics["users"] = len(targets)
    metrics["exclude_history"] = config.exclude_history
    metrics["precision"] = config.precision
    metrics["seconds"] = round(time.perf_counter() - start, 3)
    return metrics
