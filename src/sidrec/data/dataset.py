"""`Dataset`: dense item/user vocabularies, chronological sequences and the leave-one-out split.

Sequences are stored flat (CSR: `sequence_items` + `offsets`) so every split, history window and
popularity count is a vectorised gather, never a loop over users.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from sidrec.data.readers import DataFormatError, RawData
from sidrec.io import ArtifactError, read_json, write_json

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"  # written last: a dataset folder without it is incomplete
SPLITS = ("train", "valid", "test")


@dataclass
class Dataset:
    """Per-user chronological item sequences over a dense item vocabulary.

    Leave-one-out: users with at least 3 interactions are evaluated (last item = test target,
    second to last = validation target); shorter sequences only contribute training data.
    """

    name: str
    user_ids: np.ndarray
    item_ids: np.ndarray
    items: pd.DataFrame
    offsets: torch.Tensor
    sequence_items: torch.Tensor
    info: dict = field(default_factory=dict)

    # --- sizes ---------------------------------------------------------------------------------
    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_interactions(self) -> int:
        return int(self.sequence_items.numel())

    @property
    def lengths(self) -> torch.Tensor:
        return self.offsets[1:] - self.offsets[:-1]

    @property
    def eval_users(self) -> torch.Tensor:
        return torch.nonzero(self.lengths >= 3).flatten()

    def stats(self) -> dict:
        n_u, n_i, n = self.n_users, self.n_items, self.n_interactions
        return {
            "users": n_u,
            "items": n_i,
            "interactions": n,
            "mean_length": round(n / max(n_u, 1), 3),
            "sparsity": round(1.0 - n / max(n_u * n_i, 1), 6),
            "eval_users": int(self.eval_users.numel()),
        }

    def digest(self) -> str:
        """SHA-256 of the content (ids, sequences, item metadata): what a cache of anything built on it is keyed by.

        Counts alone miss a renamed item or an edited title; a digest of the values does not.
        """
        sha = hashlib.sha256()
        for ids in (self.user_ids, self.item_ids):
            sha.update(np.asarray(ids).astype(str).astype("U").tobytes())
        sha.update(self.offsets.numpy().astype(np.int64).tobytes())
        sha.update(self.sequence_items.numpy().astype(np.int64).tobytes())
        sha.update(self.items.to_csv(index=False).encode())
        return sha.hexdigest()

    # --- splits --------------------------------------------------------------------------------
    def train_lengths(self) -> torch.Tensor:
        """How many leading items of each user's sequence are training data."""
        lengths = self.lengths
        return torch.where(lengths >= 3, lengths - 2, lengths)

    def train_sequences(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Training part of every sequence as CSR `(items, offsets)`; never contains a valid/test target."""
        user_of = torch.repeat_interleave(torch.arange(self.n_users), self.lengths)
        position = torch.arange(self.n_interactions) - self.offsets[user_of]
        keep = position < self.train_lengths()[user_of]
        train_offsets = torch.zeros(self.n_users + 1, dtype=torch.long)
        train_offsets[1:] = torch.cumsum(self.train_lengths(), 0)
        return self.sequence_items[keep], train_offsets

    def item_popularity(self) -> torch.Tensor:
        """Interaction counts per item over the training part only."""
        items, _ = self.train_sequences()
        return torch.bincount(items, minlength=self.n_items)

    def split(self, part: str, max_len: int = 50) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`(users, histories [U, max_len], targets)` for `valid` or `test`.

        Histories hold the last `max_len` items before the target, oldest first, right-padded with -1.
        The validation history is the training part; the test history adds the validation item.
        """
        if part not in ("valid", "test"):
            raise ValueError(f"split must be 'valid' or 'test', got {part!r}")
        users = self.eval_users
        end = self.offsets[users + 1] - (2 if part == "valid" else 1)
        return users, self.windows(end, self.offsets[users], max_len), self.sequence_items[end]

    def windows(self, end: torch.Tensor, start: torch.Tensor, max_len: int) -> torch.Tensor:
        """Last `max_len` items of `sequence_items[start:end]` per row, left-aligned, padded with -1."""
        first = torch.maximum(start, end - max_len)
        index = first[:, None] + torch.arange(max_len)
        valid = index < end[:, None]
        flat = self.sequence_items[index.clamp(max=max(self.n_interactions - 1, 0))]
        return torch.where(valid, flat, torch.full_like(flat, -1))

    def training_windows(self, max_len: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
        """Whole-sequence training samples: `(inputs, targets)` each `[W, max_len]`, -1 padded.

        Every training transition (item t -> item t+1) appears exactly once; sequences longer
        than `max_len` are cut into windows aligned on their most recent item.
        """
        transitions = (self.train_lengths() - 1).clamp(min=0)
        n_windows = (transitions + max_len - 1) // max_len
        user = torch.repeat_interleave(torch.arange(self.n_users), n_windows)
        first_window = torch.cumsum(n_windows, 0) - n_windows
        back = torch.arange(user.numel()) - first_window[user]  # 0 = most recent window
        end = self.offsets[user] + transitions[user] - back * max_len
        start = torch.clamp(end - max_len, min=self.offsets[user])
        return self.windows(end, start, max_len), self.windows(end + 1, start + 1, max_len)

    def user_history(self, user: int, max_len: int = 50) -> torch.Tensor:
        """Whole known history of one user (for serving / `recommend --user`)."""
        end = self.offsets[user + 1 : user + 2]
        return self.windows(end, self.offsets[user : user + 1], max_len)

    # --- persistence ---------------------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        """Write Parquet tables + JSON manifest into a temp dir, then rename it into place."""
        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
        try:
            user_of = torch.repeat_interleave(torch.arange(self.n_users), self.lengths)
            pd.DataFrame({"user": user_of.numpy().astype(np.int32),
                          "item": self.sequence_items.numpy().astype(np.int32)}).to_parquet(tmp / "interactions.parquet")
            self.items.to_parquet(tmp / "items.parquet")
            pd.DataFrame({"user_id": self.user_ids}).to_parquet(tmp / "users.parquet")
            write_json(tmp / MANIFEST, {"format_version": FORMAT_VERSION, "name": self.name,
                                     "stats": self.stats(), "info": self.info})
            if directory.exists():
                shutil.rmtree(directory)
            os.replace(tmp, directory)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    @staticmethod
    def exists(directory: str | Path) -> bool:
        """Whether `directory` holds a saved dataset (its manifest is written last)."""
        return (Path(directory) / MANIFEST).exists()

    @classmethod
    def load(cls, directory: str | Path) -> "Dataset":
        directory = Path(directory)
        manifest = read_json(directory / MANIFEST)
        if manifest.get("format_version") != FORMAT_VERSION:
            raise ArtifactError(f"{directory}/manifest.json: format_version {manifest.get('format_version')} "
                                f"is not {FORMAT_VERSION}; rebuild the dataset cache")
        try:
            inter = pd.read_parquet(directory / "interactions.parquet")
            items = pd.read_parquet(directory / "items.parquet")
            users = pd.read_parquet(directory / "users.parquet")["user_id"].to_numpy()
        except Exception as exc:
            raise ArtifactError(f"{directory}: unreadable dataset table ({exc})") from exc
        counts = torch.bincount(torch.from_numpy(inter["user"].to_numpy().astype(np.int64)), minlength=len(users))
        offsets = torch.zeros(len(users) + 1, dtype=torch.long)
        offsets[1:] = torch.cumsum(counts, 0)
        dataset = cls(manifest["name"], users, items["item_id"].to_numpy(), items, offsets,
                      torch.from_numpy(inter["item"].to_numpy().astype(np.int64)), manifest.get("info", {}))
        if dataset.stats()["interactions"] != manifest["stats"]["interactions"]:
            raise ArtifactError(f"{directory}: tables disagree with manifest.json; rebuild the dataset cache")
        return dataset


def k_core(interactions: pd.DataFrame, k: int) -> pd.DataFrame:
    """Iteratively drop users and items with fewer than `k` interactions until none remain."""
    if k <= 1:
        return interactions
    while True:
        user_counts = interactions["user_id"].map(interactions["user_id"].value_counts())
        item_counts = interactions["item_id"].map(interactions["item_id"].value_counts())
        keep = (user_counts >= k) & (item_counts >= k)
        if keep.all():
            return interactions
        interactions = interactions[keep]


def build_dataset(raw: RawData, name: str, min_core: int = 0, remove_repeats: bool = False,
                  source: str = "") -> Dataset:
    """Order chronologically (stable on ties), de-duplicate, k-core filter and densely re-index."""
    inter = raw.interactions.dropna(subset=["user_id", "item_id"])
    inter = inter.sort_values(["user_id", "timestamp"], kind="stable", na_position="last")
    if remove_repeats:
        inter = inter.drop_duplicates(["user_id", "item_id"], keep="first")
    inter = k_core(inter, min_core)
    if inter.empty:
        raise DataFormatError(f"{source or name}: no interactions left after filtering (min_core={min_core})")
    item_ids, item_index = np.unique(inter["item_id"].to_numpy(str), return_inverse=True)
    user_ids, user_index = np.unique(inter["user_id"].to_numpy(str), return_inverse=True)
    order = np.argsort(user_index, kind="stable")  # group by user, keep chronological order inside
    user_index, item_index = user_index[order], item_index[order]
    counts = torch.bincount(torch.from_numpy(user_index.astype(np.int64)), minlength=len(user_ids))
    offsets = torch.zeros(len(user_ids) + 1, dtype=torch.long)
    offsets[1:] = torch.cumsum(counts, 0)
    items = raw.items.set_index("item_id").reindex(item_ids).reset_index()
    items = items.rename(columns={"index": "item_id"})
    missing = items.drop(columns="item_id").isna().all(axis=1).sum() if items.shape[1] > 1 else len(items)
    if missing:
        log.info("%s: %d of %d items have no metadata", name, missing, len(items))
    info = {"source": source, "min_core": min_core, "remove_repeats": remove_repeats,
            "items_without_metadata": int(missing)}
    return Dataset(name, user_ids, item_ids, items, offsets,
                   torch.from_numpy(item_index.astype(np.int64)), info)
