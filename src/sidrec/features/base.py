"""Common ground for item encoders: the `ItemEncoder` protocol, a name registry and a disk cache.

Every encoder turns an item catalogue (a DataFrame, row i = dense item i) into `ItemEmbeddings`.
Encoding a catalogue can take minutes, so results are cached on disk under a key that hashes
everything that could change them: encoder name, model, options and the exact inputs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd
import torch

from sidrec.features.embeddings import ItemEmbeddings
from sidrec.io import ArtifactError
from sidrec.registry import Registry

log = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = Path(".cache/sidrec/embeddings")

ENCODERS = Registry("item encoder")  # lazy paths: a model library is imported only when its encoder is built
ENCODERS.register("text", "sidrec.features.text:TextEncoder")
ENCODERS.register("image", "sidrec.features.image:ImageEncoder")
ENCODERS.register("card", "sidrec.features.card:CardEncoder")
ENCODERS.register("fusion", "sidrec.features.fusion:FusionEncoder")
ENCODERS.register("collaborative", "sidrec.features.collaborative:CollaborativeEncoder")


@runtime_checkable
class ItemEncoder(Protocol):
    """Anything that maps an item catalogue to one embedding row per item."""

    name: str

    def encode(self, items: pd.DataFrame, **ctx: Any) -> ItemEmbeddings: ...


def encoder_requirements(encoder: ItemEncoder) -> list[tuple[str, str, str]]:
    """Optional packages `encoder` imports (`sidrec.extras.require` arguments); none unless it declares them."""
    requirements = getattr(encoder, "requirements", None)
    return requirements() if requirements is not None else []


def build_encoder(name: str, **options: Any) -> ItemEncoder:
    """Instantiate the registered encoder `name` with keyword `options`."""
    return ENCODERS.build(name, **options)


class Fingerprint:
    """Incremental SHA-256 over JSON-able values, arrays, tensors and strings (stable across runs)."""

    def __init__(self) -> None:
        self._digest = hashlib.sha256()

    def add(self, value: Any) -> "Fingerprint":
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().contiguous().numpy()
        if isinstance(value, np.ndarray):
            self._digest.update(f"nd:{value.dtype.str}:{value.shape}".encode())
            self._digest.update(np.ascontiguousarray(value).tobytes())
        elif isinstance(value, pd.Series):
            self.add([None if pd.isna(v) else str(v) for v in value.tolist()])
        else:
            self._digest.update(json.dumps(value, sort_keys=True, default=str).encode())
        return self

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


class EmbeddingCache:
    """Directory of `<key>.safetensors` files; reads verify shape, writes are atomic."""

    def __init__(self, cache_dir: str | os.PathLike | None = DEFAULT_CACHE_DIR) -> None:
        self.dir = Path(cache_dir) if cache_dir is not None else None

    @property
    def enabled(self) -> bool:
        return self.dir is not None

    def path(self, key: str) -> Path:
        if self.dir is None:
            raise RuntimeError("embedding cache is disabled (cache_dir=None)")
        return self.dir / f"{key}.safetensors"

    def get(self, key: str, n_items: int) -> ItemEmbeddings | None:
        if self.dir is None or not self.path(key).exists():
            return None
        try:
            emb = ItemEmbeddings.load(self.path(key))
        except (ArtifactError, ValueError) as exc:
            log.warning("ignoring unreadable cache entry %s: %s", self.path(key), exc)
            return None
        if emb.n_items != n_items:
            log.warning("ignoring cache entry %s: %d rows, expected %d", self.path(key), emb.n_items, n_items)
            return None
        return emb

    def put(self, key: str, emb: ItemEmbeddings) -> None:
        if self.dir is not None:
            emb.save(self.path(key))


class CachedEncoder:
    """Base class: subclasses implement `fingerprint` (what determines the output) and `_encode`.

    `encode` looks the fingerprint up in the cache first, so a rerun over the same catalogue with the
    same options returns the stored matrix without loading or running any model.
    """

    name: str = "base"

    def __init__(self, cache_dir: str | os.PathLike | None = DEFAULT_CACHE_DIR) -> None:
        self.cache = EmbeddingCache(cache_dir)

    def fingerprint(self, items: pd.DataFrame, **ctx: Any) -> Fingerprint:
        raise NotImplementedError

    def _encode(self, items: pd.DataFrame, **ctx: Any) -> ItemEmbeddings:
        raise NotImplementedError

    def cache_key(self, items: pd.DataFrame, **ctx: Any) -> str:
        return self.fingerprint(items, **ctx).add({"encoder": self.name, "n_items": len(items)}).hexdigest()

    def encode(self, items: pd.DataFrame, **ctx: Any) -> ItemEmbeddings:
        if len(items) == 0:
            raise ValueError(f"{self.name} encoder: the item catalogue is empty")
        key = self.cache_key(items, **ctx) if self.cache.enabled else None
        if key is not None and (hit := self.cache.get(key, len(items))) is not None:
            log.info("%s embeddings: cache hit %s", self.name, self.cache.path(key))
            return hit
        emb = self._encode(items, **ctx)
        if emb.n_items != len(items):
            raise RuntimeError(f"{self.name} encoder returned {emb.n_items} rows for {len(items)} items")
        if key is not None:
            self.cache.put(key, emb)
        return emb


def column_text(items: pd.DataFrame, column: str) -> pd.Series:
    """Column `column` as clean strings ("" where absent/NaN; lists joined by ", "; whitespace collapsed)."""
    if column not in items.columns:
        return pd.Series("", index=items.index, dtype=object)
    col = items[column]
    col = col.map(lambda v: ", ".join(map(str, v)) if isinstance(v, (list, tuple, np.ndarray)) else v)
    return col.where(col.notna(), "").astype(str).str.replace(r"\s+", " ", regex=True).str.strip()
