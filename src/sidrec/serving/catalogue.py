"""A trained run opened for serving: config, dataset, model and the served item catalogue.

The catalogue is the dataset's items plus any added later by `add_items` (kept beside the model in
`model/added_items.parquet`, so a model and the items it can name are always swapped together).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sidrec.config import RunConfig
from sidrec.data import Dataset
from sidrec.io import ArtifactError
from sidrec.models import Recommender
from sidrec.pipeline import load_run
from sidrec.manifest import verify_run
from sidrec.rundir import RunLayout


@dataclass
class Catalogue:
    """External item ids in dense-index order, with their metadata rows (same order)."""

    items: pd.DataFrame

    def __post_init__(self) -> None:
        self.items = self.items.reset_index(drop=True)
        self.item_ids = self.items["item_id"].astype(str).to_numpy()
        self.index = pd.Index(self.item_ids)
        if not self.index.is_unique:
            dup = self.index[self.index.duplicated()].unique()[:5].tolist()
            raise ArtifactError(f"item catalogue has duplicate item ids: {dup}")
        titles = self.items["title"] if "title" in self.items else pd.Series(None, index=self.items.index)
        # astype(object) first: on a float column (every title missing) `where(..., None)` puts NaN back, shown as "nan"
        self.titles = titles.astype(object).where(titles.notna(), None).to_numpy(dtype=object, copy=True)

    def __len__(self) -> int:
        return len(self.item_ids)

    def lookup(self, item_ids: list[str]) -> np.ndarray:
        """Dense index of each external id, -1 where unknown (one vectorised hash lookup)."""
        return self.index.get_indexer(pd.Index(item_ids, dtype=object)) if item_ids else np.empty(0, dtype=np.int64)

    def record(self, index: int) -> dict:
        """Non-empty metadata fields of one item."""
        row = self.items.iloc[index]
        return {k: str(v) for k, v in row.items() if k != "item_id" and v is not None and not pd.isna(v) and str(v)}


def load_catalogue(run_dir: str | Path, dataset: Dataset) -> Catalogue:
    added = RunLayout(run_dir).added_items
    items = dataset.items
    if added.exists():
        try:
            extra = pd.read_parquet(added)
        except Exception as exc:
            raise ArtifactError(f"{added}: unreadable item table ({exc})") from exc
        items = pd.concat([items, extra], ignore_index=True)
    return Catalogue(items)


@dataclass
class ServedRun:
    run_dir: Path
    config: RunConfig
    dataset: Dataset
    model: Recommender
    catalogue: Catalogue


def open_run(run_dir: str | Path, verify: bool = True) -> ServedRun:
    """Load a run once for read-only inference, checking its manifest (when present) and dataset first."""
    run_dir = Path(run_dir)
    if verify and RunLayout(run_dir).manifest.exists():
        verify_run(run_dir)
    config, dataset, model = load_run(run_dir)
    catalogue = load_catalogue(run_dir, dataset)
    if model.n_items != len(catalogue):
        raise ArtifactError(f"{RunLayout(run_dir).model}: model covers {model.n_items} items but the catalogue has "
                            f"{len(catalogue)}")
    model.eval().requires_grad_(False)
    return ServedRun(run_dir, config, dataset, model, catalogue)

