"""New items without retraining: unique codes against the frozen catalogue, recommendable at once."""

import json
import re

import numpy as np
import pytest
import torch

from sidrec import pipeline
from sidrec.config import load_config
from sidrec.features import ENCODERS, ItemEmbeddings
from sidrec.io import ArtifactError
from sidrec.models import Recommender
from sidrec.serving import create_app, verify_run
from sidrec.serving.cold_start import add_items, assign_new_codes
from sidrec.semantic_ids import SemanticIDs


class ToyTitleEncoder:
    """Deterministic, model-free text encoder: the number in an item's title as a point on a circle."""

    name = "toy-title"

    def encode(self, items, **ctx):
        numbers = items["title"].map(lambda t: float(re.findall(r"\d+", str(t))[0]) if re.findall(r"\d+", str(t)) else 0.0)
        angle = torch.tensor(numbers.to_numpy(np.float64) * 2 * np.pi / 12)
        return ItemEmbeddings(torch.stack([angle.cos(), angle.sin(), (2 * angle).cos(), (2 * angle).sin()], 1).float(),
                              "toy-title")


ENCODERS.register("toy-title", lambda **options: ToyTitleEncoder())


@pytest.fixture
def tiger_run(data_files, overrides, tmp_path):
    run_dir = tmp_path / "tiger"
    pipeline.run(load_config(None, overrides(
        data_files, "embed.name=toy-title", "tokenize.name=rkmeans", "tokenize.n_levels=2",
        "tokenize.codebook_size=6", "model.name=tiger", "model.preset=small", "model.n_encoder_layers=1",
        "model.n_decoder_layers=1", "model.d_model=16", "model.d_ff=32", "model.dropout=0.0",
        "model.beam_width=16", "train.epochs=2", "train.batch_size=64")), run_dir)
    return run_dir


def write_items(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_new_items_become_recommendable_and_old_codes_stay(tiger_run, tmp_path, live_server, client_for):
    before = Recommender.load(tiger_run / "model")
    new_items = write_items(tmp_path / "new.jsonl", [{"item_id": "n1", "title": "item number 3"},  # twin of i03
                                                     {"item_id": "n2", "title": "item number 7 (new edition)"}])
    summary = add_items(tiger_run, new_items)
    assert summary["added"] == 2 and summary["items"] == 14
    verify_run(tiger_run)  # the manifest was rewritten for the new model directory

    after = Recommender.load(tiger_run / "model")
    assert after.n_items == 14 and torch.equal(after.sids.codes[:12], before.sids.codes)
    assert torch.unique(after.sids.codes, dim=0).shape[0] == 14
    n1 = after.sids.codes[12]
    # same content as i03 -> same tokenizer code, which is taken: moved to a free last-level code, same prefix
    assert before.sids.n_levels == 2 and summary["relocated"] >= 1
    assert n1[0] == before.sids.codes[3, 0] and n1[1] != before.sids.codes[3, 1]
    for name, tensor in before.state_dict().items():
        assert torch.equal(after.state_dict()[name], tensor), name  # weights untouched
    assert after.trie.lookup(after.sids.codes[12:]).tolist() == [12, 13]

    with live_server(create_app(tiger_run)) as server, client_for(server) as http:
        assert http.get("/items/n2").json()["title"] == "item number 7 (new edition)"
        assert http.get("/items/n1").json()["semantic_id"] == n1.tolist()
        everything = http.post("/recommend", json={"history": ["i01", "i02"], "k": 14, "exclude_history": False}).json()
        assert {"n1", "n2"} <= set(everything["items"]) and len(everything["items"]) == 14
        as_input = http.post("/recommend", json={"history": ["n1"], "k": 3})
        assert as_input.status_code == 200 and len(as_input.json()["items"]) == 3

    with pytest.raises(ValueError, match="already in the catalogue"):
        add_items(tiger_run, new_items)


def test_models_with_item_tables_refuse_new_items(sasrec_run, popularity_run, tmp_path):
    new_items = write_items(tmp_path / "new.jsonl", [{"item_id": "n1", "title": "x"}])
    for run in (sasrec_run, popularity_run):
        with pytest.raises(ValueError, match="cannot take new items without retraining"):
            add_items(run, new_items)


def test_assign_new_codes_dedup_slots_then_relocation():
    # 2 tokenizer levels of 2 codes + a dedup level of 2 slots
    existing = SemanticIDs(torch.tensor([[0, 0, 0], [0, 0, 1], [0, 1, 0], [1, 0, 0]]), [2, 2, 2])
    codes, moved = assign_new_codes(existing, torch.tensor([[1, 0], [0, 1], [1, 0]]))
    assert codes.tolist() == [[1, 0, 1], [0, 1, 1], [1, 1, 0]] and moved.tolist() == [False, False, True]
    # costs decide where a relocated item goes; a full prefix is a clear error
    existing = SemanticIDs(torch.tensor([[0, 0], [1, 0]]), [3, 3])
    codes, moved = assign_new_codes(existing, torch.tensor([[0, 0]]), costs=torch.tensor([[0.0, 5.0, 1.0]]))
    assert codes.tolist() == [[0, 2]] and moved.tolist() == [True]
    with pytest.raises(ValueError, match="codebooks are full"):
        assign_new_codes(existing, torch.tensor([[0, 0], [0, 0], [0, 0]]))
    with pytest.raises(ArtifactError, match="same tokenizer"):
        assign_new_codes(existing, torch.tensor([[0, 0, 0, 0]]))
