import numpy as np
import pandas as pd
import pytest
import torch

from sidrec.features import ItemEmbeddings, TextEncoder, build_encoder, render_texts


def test_template_drops_empty_fields_cleanly():
    items = pd.DataFrame(
        {
            "item_id": ["a", "b", "c"],
            "title": ["Red shoe", None, ""],
            "brand": [np.nan, "Acme", "  "],
            "categories": [["A", "B"], "X > Y", None],
        }
    )
    texts = render_texts(items)
    assert texts == ["title: Red shoe; categories: A, B", "brand: Acme; categories: X > Y", ""]
    assert all("brand: ;" not in t and not t.startswith(";") for t in texts)


def test_template_rejects_part_without_field():
    with pytest.raises(ValueError, match="references no"):
        render_texts(pd.DataFrame({"title": ["x"]}), "title: {title}; oops")


def test_minilm_offline_shape_and_semantics():
    items = pd.DataFrame(
        {
            "item_id": ["a", "b", "c"],
            "title": ["red leather running shoes", "red running sneakers", "laboratory glass beaker for chemistry"],
        }
    )
    emb = TextEncoder(cache_dir=None, show_progress=False).encode(items)
    assert isinstance(emb, ItemEmbeddings) and emb.encoder == "text"
    assert emb.vectors.shape == (3, 384)
    assert torch.isfinite(emb.vectors).all()
    assert torch.allclose(emb.vectors.norm(dim=1), torch.ones(3), atol=1e-4)
    sims = emb.vectors @ emb.vectors.T
    assert sims[0, 1] > sims[0, 2] + 0.1


def test_cache_hit_skips_model(tmp_path, monkeypatch):
    calls = []
    original = TextEncoder._encode

    def spy(self, items, **ctx):
        calls.append(len(items))
        return original(self, items, **ctx)

    monkeypatch.setattr(TextEncoder, "_encode", spy)
    items = pd.DataFrame({"item_id": ["a", "b"], "title": ["red shoe", "blue shoe"]})
    first = build_encoder("text", cache_dir=tmp_path, show_progress=False).encode(items)
    assert calls == [2] and len(list(tmp_path.glob("*.safetensors"))) == 1

    rerun = build_encoder("text", cache_dir=tmp_path, show_progress=False)
    second = rerun.encode(items)
    assert calls == [2] and rerun._model is None  # no encoding, model never loaded
    assert torch.equal(first.vectors, second.vectors)

    rerun.encode(items.assign(title=["red shoe", "green shoe"]))  # changed input -> new key
    assert calls == [2, 2]
