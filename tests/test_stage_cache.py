"""Caches keyed by content: an edit the old keys (config, counts, path/size/mtime) missed is never served stale."""

import os

import pytest
import torch

from sidrec import pipeline
from sidrec.config import load_config
from sidrec.data import load_dataset
from sidrec.io import ArtifactError, read_json, write_json
from sidrec.rundir import RunLayout
from sidrec.serving.catalogue import open_run

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def same_size_edit(path, old: str, new: str) -> None:
    """Replace every `old` by `new` (same length), put the mtime back: only the content tells the files apart."""
    assert len(old) == len(new)
    stat = path.stat()
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size


@pytest.fixture
def data_sets(tmp_path, p5_files):
    return ["data.name=custom", "data.format=p5", f"data.path={p5_files / 'seq.txt'}",
            f"data.items_path={p5_files / 'items.jsonl'}", f"data.cache_dir={tmp_path / 'data'}",
            f"cache_dir={tmp_path / 'stages'}"]


def stage_folders(tmp_path, stage: str) -> list[str]:
    return sorted(p.name for p in (tmp_path / "stages").iterdir() if p.name.startswith(f"{stage}-"))


def test_dataset_cache_sees_a_same_size_edit_with_the_mtime_restored(tmp_path, data_sets, p5_files):
    config = load_config(None, data_sets).data
    before = load_dataset(config)
    same_size_edit(p5_files / "seq.txt", "i03", "i3x")  # a renamed item: same counts
    after = load_dataset(config)
    assert "i3x" in set(after.item_ids) and "i3x" not in set(before.item_ids)
    assert before.digest() != after.digest() and before.stats() == after.stats()


def test_an_edited_title_is_embedded_again(tmp_path, data_sets, p5_files):
    sets = data_sets + ["embed.name=text", f"embed.cache_dir={tmp_path / 'emb'}", "embed.show_progress=false"]
    first = pipeline.build_artifacts(load_config(None, sets), tmp_path / "run1", until="embed")
    same_size_edit(p5_files / "items.jsonl", "item number 5", "item zzzzzz 5")
    second = pipeline.build_artifacts(load_config(None, sets), tmp_path / "run2", until="embed")
    assert len(stage_folders(tmp_path, "embed")) == 2
    row = list(second.dataset.item_ids).index("i05")
    # Only the edited item moves. The others are compared with a tolerance: the edit changes the batch's
    # padded length, and with it the float rounding of every row on some CPUs (seen on AMD EPYC).
    moved = (first.embeddings.vectors - second.embeddings.vectors).norm(dim=1)
    assert moved[row] > 1e-2
    assert torch.cat([moved[:row], moved[row + 1:]]).max() < 1e-4


def test_an_edited_interaction_trains_the_collaborative_model_again(tmp_path, data_sets, p5_files):
    sets = data_sets + ["embed.name=collaborative", "collaborative.train.epochs=1", "collaborative.train.progress=false",
                        "collaborative.model.name=sasrec", "collaborative.model.hidden=8"]
    pipeline.build_artifacts(load_config(None, sets), tmp_path / "run1", until="collaborative")
    line = (p5_files / "seq.txt").read_text().splitlines()[0]
    user, first, second, *rest = line.split()
    same_size_edit(p5_files / "seq.txt", line + "\n", " ".join([user, second, first, *rest]) + "\n")
    pipeline.build_artifacts(load_config(None, sets), tmp_path / "run2", until="collaborative")
    assert len(stage_folders(tmp_path, "collaborative")) == 2


def test_a_changed_stage_revision_is_not_served_from_the_old_cache(tmp_path, data_sets, monkeypatch):
    sets = data_sets + ["embed.name=text", f"embed.cache_dir={tmp_path / 'emb'}", "embed.show_progress=false"]
    pipeline.build_artifacts(load_config(None, sets), tmp_path / "run1", until="embed")
    monkeypatch.setitem(pipeline.STAGE_REVISIONS, "embed", pipeline.STAGE_REVISIONS["embed"] + 1)
    pipeline.build_artifacts(load_config(None, sets), tmp_path / "run2", until="embed")
    assert len(stage_folders(tmp_path, "embed")) == 2


def test_a_run_is_served_on_its_snapshot_not_the_edited_source(tmp_path, data_sets, p5_files):
    sets = data_sets + ["model.name=popularity"]
    pipeline.run(load_config(None, sets), tmp_path / "run")
    trained_ids = list(load_dataset(load_config(None, sets).data).item_ids)
    same_size_edit(p5_files / "seq.txt", "i03", "i3x")  # a renamed item: same counts
    served = open_run(tmp_path / "run")
    assert list(served.dataset.item_ids) == trained_ids
    assert served.dataset.digest() == read_json(tmp_path / "run" / "dataset.json")["digest"]


def test_a_run_without_snapshot_refuses_a_changed_source(tmp_path, data_sets, p5_files):
    sets = data_sets + ["model.name=popularity"]
    config = load_config(None, sets)
    pipeline.run(config, tmp_path / "run")
    for path in sorted(RunLayout(tmp_path / "run").snapshot.iterdir()):  # as written before snapshots existed
        path.unlink()
    RunLayout(tmp_path / "run").snapshot.rmdir()
    assert torch.equal(pipeline.run_dataset(tmp_path / "run", config).sequence_items,
                       load_dataset(config.data).sequence_items)
    same_size_edit(p5_files / "seq.txt", "i03", "i3x")
    with pytest.raises(ArtifactError, match="has changed since this run was trained"):
        pipeline.run_dataset(tmp_path / "run", config)
    recorded = read_json(tmp_path / "run" / "dataset.json")
    del recorded["digest"]
    recorded["stats"]["items"] += 1  # older still: only counts were recorded
    write_json(tmp_path / "run" / "dataset.json", recorded)
    with pytest.raises(ArtifactError, match="is not the one this run was trained on"):
        pipeline.run_dataset(tmp_path / "run", config)


def test_the_snapshot_is_covered_by_the_manifest(tmp_path, data_sets):
    pipeline.run(load_config(None, data_sets + ["model.name=popularity"]), tmp_path / "run")
    files = read_json(tmp_path / "run" / "manifest.json")["files"]
    assert {"dataset/manifest.json", "dataset/interactions.parquet", "dataset/items.parquet"} <= set(files)


def test_a_resumed_run_keeps_its_own_dataset_and_stages_whatever_the_cache_says_now(tmp_path, data_sets, p5_files,
                                                                                   monkeypatch):
    sets = data_sets + ["embed.name=text", f"embed.cache_dir={tmp_path / 'emb'}", "embed.show_progress=false"]
    first = pipeline.build_artifacts(load_config(None, sets), tmp_path / "run", until="embed")
    monkeypatch.setitem(pipeline.STAGE_REVISIONS, "embed", pipeline.STAGE_REVISIONS["embed"] + 1)  # newer code
    same_size_edit(p5_files / "seq.txt", "i03", "i3x")  # and a changed source
    resumed = pipeline.build_artifacts(load_config(None, sets), tmp_path / "run", until="embed", resume=True)
    assert list(resumed.dataset.item_ids) == list(first.dataset.item_ids)
    assert torch.equal(resumed.embeddings.vectors, first.embeddings.vectors)
    assert len(stage_folders(tmp_path, "embed")) == 1  # nothing rebuilt
    fresh = pipeline.build_artifacts(load_config(None, sets), tmp_path / "run", until="embed")  # not a resume: rebuilt
    assert "i3x" in set(fresh.dataset.item_ids) and len(stage_folders(tmp_path, "embed")) == 2


def test_a_stage_without_the_stage_it_reads_is_refused_by_name(tmp_path, data_sets):
    config = load_config(None, data_sets + ["tokenize.name=rkmeans"])
    assert config.embed is None and config.tokenize is not None
    with pytest.raises(ValueError, match="a `tokenize` section needs the `embed` section to tokenize"):
        pipeline.build_artifacts(config, tmp_path / "run")
    assert [stage.name for stage in pipeline.STAGES] == ["collaborative", "embed", "tokenize"]  # the order they chain
