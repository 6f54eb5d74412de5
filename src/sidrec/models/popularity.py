"""Most-popular baseline: the same training-split ranking for everyone."""

from __future__ import annotations

import torch

from sidrec.models.base import ModelOptions, Recommender


class Popularity(Recommender):
    name = "popularity"

    def __init__(self, options: ModelOptions, n_items: int) -> None:
        super().__init__(options, n_items)
        self.register_buffer("counts", torch.zeros(n_items))

    def fit_counts(self, popularity: torch.Tensor) -> "Popularity":
        self.counts.copy_(popularity.float())
        return self

    def recommend(self, histories: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        order = torch.sort(-self.counts, stable=True).indices[:k]  # ties: lower item index first
        batch = histories.shape[0]
        return order.expand(batch, -1).clone(), self.counts[order].expand(batch, -1).clone()
