import pandas as pd
import pytest
import torch

from sidrec.features import ENCODERS, ItemEmbeddings, ItemEncoder, build_encoder
from sidrec.features.base import CachedEncoder, Fingerprint, column_text


class CountingEncoder(CachedEncoder):
    """Deterministic toy encoder: one-hot of title length, counting real encodes."""

    name = "counting"

    def __init__(self, **kw):
        super().__init__(**kw)
        self.calls = 0

    def fingerprint(self, items, **ctx):
        return Fingerprint().add(column_text(items, "title"))

    def _encode(self, items, **ctx):
        self.calls += 1
        lengths = torch.tensor(column_text(items, "title").str.len().to_numpy())
        return ItemEmbeddings(torch.nn.functional.one_hot(lengths % 8, 8).float(), self.name)


def test_registry_names_and_errors():
    assert {"text", "image", "card", "fusion"} <= set(ENCODERS)
    with pytest.raises(KeyError, match="unknown item encoder 'nope'"):
        build_encoder("nope")


def test_registered_encoder_is_cached_atomically(tmp_path, monkeypatch):
    monkeypatch.delitem(ENCODERS, "counting", raising=False)  # restored after the test
    ENCODERS.register("counting", CountingEncoder)
    items = pd.DataFrame({"item_id": ["a", "b"], "title": ["abc", "abcdef"]})
    enc = build_encoder("counting", cache_dir=tmp_path)
    assert isinstance(enc, ItemEncoder)
    first, second = enc.encode(items), enc.encode(items)
    assert enc.calls == 1 and torch.equal(first.vectors, second.vectors)
    assert [p.suffix for p in tmp_path.iterdir()] == [".safetensors"]  # no temp files left behind
    enc.encode(items.iloc[:1])
    assert enc.calls == 2
    with pytest.raises(ValueError, match="empty"):
        enc.encode(items.iloc[:0])


def test_corrupt_cache_entry_is_recomputed(tmp_path):
    items = pd.DataFrame({"item_id": ["a"], "title": ["abc"]})
    enc = CountingEncoder(cache_dir=tmp_path)
    enc.encode(items)
    next(tmp_path.glob("*.safetensors")).write_bytes(b"garbage")
    assert enc.encode(items).n_items == 1 and enc.calls == 2


def test_fusion_encoder_from_registry_with_precomputed_blocks():
    items = pd.DataFrame({"item_id": list("abcdef")})
    blocks = [ItemEmbeddings(torch.randn(6, 5), "x"), ItemEmbeddings(torch.randn(6, 3), "y")]
    fused = build_encoder("fusion", parts=["text", "card"], dim=4).encode(items, embeddings=blocks)
    assert fused.vectors.shape == (6, 4) and fused.encoder == "fusion"
    with pytest.raises(ValueError, match="rows"):
        build_encoder("fusion").encode(items.iloc[:5], embeddings=blocks)
    with pytest.raises(ValueError, match="other encoders"):
        build_encoder("fusion", parts=["fusion"])
