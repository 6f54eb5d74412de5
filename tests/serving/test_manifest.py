"""Run manifests: every artifact checksummed; truncated, altered or missing files fail clearly."""

import json
import shutil

import pytest

from sidrec.io import ArtifactError
from sidrec.models import Recommender
from sidrec.serving import create_app, verify_run, write_manifest


@pytest.fixture
def run_copy(sasrec_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(sasrec_run, run_dir)
    return run_dir


def test_manifest_lists_every_artifact_with_version(run_copy):
    manifest = write_manifest(run_copy)
    assert {"config.yaml", "metrics.json", "model/model.safetensors", "model/model.json",
            "checkpoints/last.safetensors"} <= set(manifest["files"])
    assert manifest["version"] and all(len(f["sha256"]) == 64 for f in manifest["files"].values())
    assert verify_run(run_copy)["files"] == json.loads((run_copy / "manifest.json").read_text())["files"]


def test_truncated_model_fails_clearly(run_copy):
    write_manifest(run_copy)
    weights = run_copy / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ArtifactError, match=r"model\.safetensors: truncated"):
        verify_run(run_copy)
    with pytest.raises(ArtifactError, match="truncated"):
        create_app(run_copy)
    # without a manifest the loader itself still refuses the file, naming it
    (run_copy / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match=r"model\.safetensors: not a readable safetensors file"):
        create_app(run_copy)


def test_altered_missing_and_mismatched_artifacts(run_copy):
    write_manifest(run_copy)
    metrics = run_copy / "metrics.json"
    text = metrics.read_text()
    metrics.write_text(text.replace('"model"', '"modeL"', 1))  # same size, different bytes
    with pytest.raises(ArtifactError, match="sha256 does not match"):
        verify_run(run_copy)
    metrics.write_text(text)
    verify_run(run_copy)
    (run_copy / "report.md").unlink()
    with pytest.raises(ArtifactError, match=r"report\.md: listed in manifest\.json but missing"):
        verify_run(run_copy)
    spec = json.loads((run_copy / "model" / "model.json").read_text())
    spec["n_items"] += 1  # weights no longer match the declared catalogue
    (run_copy / "model" / "model.json").write_text(json.dumps(spec))
    with pytest.raises(ArtifactError, match="does not match model.json"):
        Recommender.load(run_copy / "model")
