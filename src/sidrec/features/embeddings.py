"""`ItemEmbeddings`: the one object item encoders produce and tokenizers / models consume."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sidrec.io import load_tensors_and_metadata, save_tensors


@dataclass
class ItemEmbeddings:
    """Float32 matrix `[n_items, d]`, row i = dense item index i, plus which encoder made it."""

    vectors: torch.Tensor
    encoder: str
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.vectors.ndim != 2:
            raise ValueError(f"ItemEmbeddings.vectors must be 2-D [n_items, d], got shape {tuple(self.vectors.shape)}")
        self.vectors = self.vectors.to(torch.float32)
        if not torch.isfinite(self.vectors).all():
            bad = (~torch.isfinite(self.vectors)).any(dim=1).nonzero().flatten()[:5].tolist()
            raise ValueError(f"ItemEmbeddings from {self.encoder!r} contain NaN/inf (first bad rows: {bad})")

    @property
    def n_items(self) -> int:
        return self.vectors.shape[0]

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    def save(self, path: str | Path) -> None:
        meta = {"encoder": self.encoder, "info": json.dumps(self.info, default=str)}
        save_tensors(path, {"vectors": self.vectors}, metadata=meta)

    @classmethod
    def load(cls, path: str | Path) -> "ItemEmbeddings":
        tensors, meta = load_tensors_and_metadata(path, "vectors")
        return cls(tensors["vectors"], meta.get("encoder", "unknown"), json.loads(meta.get("info", "{}")))
