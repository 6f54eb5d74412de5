"""Optional dependencies: a core install names the extra that is missing, before a run directory is touched."""

import logging
import sys

import pytest
import torch

from sidrec import pipeline
from sidrec.config import load_config
from sidrec.extras import MissingExtraError, require
from sidrec.features import ItemEmbeddings
from sidrec.tokenizers import build_tokenizer
from sidrec.tokenizers.api import LATENT_PLOT, REPORT_FILE, USAGE_PLOT, tokenize


def hide(monkeypatch, *modules: str) -> None:
    for module in modules:  # a None entry makes `import module` raise ImportError, as if not installed
        monkeypatch.setitem(sys.modules, module, None)


def test_require_names_the_extra_and_is_a_config_error(monkeypatch):
    hide(monkeypatch, "faiss")
    with pytest.raises(MissingExtraError, match=r"k-means .* needs the 'faiss' package.*pip install 'sidrec\[faiss\]'"):
        build_tokenizer("rkmeans", n_levels=1, codebook_size=2).fit(torch.randn(8, 4))
    assert require("json", "none", "json").dumps([]) == "[]"


@pytest.mark.parametrize("sets, extra", [(["embed.name=text", "tokenize.name=rkmeans", "model.name=tiger"], "faiss"),
                                         (["embed.name=text", "model.name=sasrec"], "text"),
                                         (["embed.name=card", "model.name=sasrec"], "vision"),
                                         (["embed.name=fusion", "embed.parts=[text]", "model.name=sasrec"], "text")])
def test_a_missing_extra_stops_the_run_before_its_directory_is_written(tmp_path, monkeypatch, sets, extra):
    hide(monkeypatch, {"faiss": "faiss", "text": "sentence_transformers", "vision": "efficientnet_lite_pytorch"}[extra])
    config = load_config(None, sets)
    with pytest.raises(MissingExtraError, match=rf"pip install 'sidrec\[{extra}\]'"):
        pipeline.run(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_the_service_names_the_serve_extra(monkeypatch):
    hide(monkeypatch, "fastapi")
    import sidrec.serving

    with pytest.raises(MissingExtraError, match=r"pip install 'sidrec\[serve\]'"):
        sidrec.serving.create_app  # noqa: B018 - the lazy attribute is what is tested


def test_serving_names_the_serve_extra_when_uvicorn_is_missing(monkeypatch, tmp_path):
    hide(monkeypatch, "uvicorn")
    from sidrec.serving import serve

    with pytest.raises(MissingExtraError, match=r"the HTTP service needs the 'uvicorn' package.*sidrec\[serve\]"):
        serve(tmp_path / "no-run")


def test_tokenize_without_matplotlib_writes_everything_but_the_plots(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "matplotlib" else object())
    embeddings = ItemEmbeddings(torch.randn(64, 8, generator=torch.Generator().manual_seed(0)), "test")
    with caplog.at_level(logging.WARNING):
        tokenize(embeddings, "rkmeans", options={"n_levels": 2, "codebook_size": 4}, out_dir=tmp_path)
    assert (tmp_path / REPORT_FILE).exists() and not (tmp_path / USAGE_PLOT).exists()
    assert not (tmp_path / LATENT_PLOT).exists() and "sidrec[plots]" in caplog.text
