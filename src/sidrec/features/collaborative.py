"""Collaborative item embeddings: the item vectors of a sequential model trained on the training split.

The model is trained by the pipeline (features never import models); this encoder hands its item
matrix on, so `collaborative` can be used alone, inside `fusion`, or as CARD's neighbour signal.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from sidrec.features.embeddings import ItemEmbeddings


class CollaborativeEncoder:
    name = "collaborative"

    def encode(self, items: pd.DataFrame, collaborative: ItemEmbeddings | None = None, **ctx: Any) -> ItemEmbeddings:
        if collaborative is None:
            raise ValueError("the 'collaborative' encoder needs trained item embeddings: run it through the "
                             "pipeline (`sidrec embed/run` with a `collaborative` section)")
        if collaborative.n_items != len(items):
            raise ValueError(f"collaborative embeddings have {collaborative.n_items} rows for {len(items)} items")
        return collaborative
