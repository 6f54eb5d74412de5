"""Layered run configuration: YAML preset -> dotted `--set key=value` overrides -> validated pydantic models.

Stage sections that depend on a chosen algorithm (`model`, `embed`, `tokenize`) are a `name` plus
options; the algorithm's own registry validates those options, so this file never needs to know
every model.
"""

from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(Section):
    name: str = Field("ml-100k", description="named dataset (see `sidrec datasets`) or 'custom'")
    format: Literal["atomic", "movielens", "p5", "lcrec", "amazon2014", "amazon2023", "table"] | None = Field(
        None, description="reader for a custom dataset")
    path: str | None = Field(None, description="custom dataset: file or folder of interactions")
    items_path: str | None = Field(None, description="custom dataset: item metadata file")
    user_column: str = "user_id"
    item_column: str = "item_id"
    timestamp_column: str | None = "timestamp"
    data_dir: str = Field("../shared/data", description="folder holding the amazon-* datasets")
    min_core: int = Field(0, ge=0, description="iterative k-core filter (0 = off)")
    remove_repeats: bool = Field(False, description="keep only the first interaction of each user-item pair")
    cache_dir: str = ".cache/sidrec/datasets"


class TrainConfig(Section):
    epochs: int = Field(200, ge=1)
    batch_size: int = Field(256, ge=1, description="global batch (split across processes under torchrun)")
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(0, ge=0)
    schedule: Literal["constant", "cosine", "linear"] = "constant"
    clip_grad: float | None = Field(1.0, description="max gradient norm (null = off)")
    seed: int = 42
    patience: int = Field(10, ge=1, description="epochs without validation NDCG@10 gain before stopping")
    eval_every: int = Field(1, ge=1, description="validate every N epochs")
    checkpoint_every: int = Field(0, ge=0, description="also checkpoint every N steps (0 = per epoch only)")
    max_seconds: float | None = Field(None, description="stop training after this wall time")
    num_threads: int | None = Field(None, description="torch intra-op threads (null = torch default)")
    precision: Literal["fp32", "bf16"] = Field("fp32", description="bf16 = autocast the training forward pass "
                                               "(fast on CPUs with AMX/AVX512-BF16; evaluation stays fp32)")
    device: str = "cpu"
    progress: bool = True
    log_dir: str | None = Field(None, description="write TensorBoard scalars to this folder (null = off): loss and "
                                "learning rate per step, validation metrics and samples/s per epoch, all by global "
                                "step so a resume continues the curves; needs pip install 'sidrec[tensorboard]'")


class EvalConfig(Section):
    ks: list[int] = Field(default_factory=lambda: [5, 10, 20], description="cut-offs of Recall@K / NDCG@K")
    select_metric: str = Field("ndcg@10", description="validation metric that picks the epoch and early-stops "
                               "(recall@K or ndcg@K, K one of eval.ks)")
    exclude_history: bool = Field(False, description="remove a user's history items from the ranking")
    batch_size: int = Field(1024, ge=1)
    max_len: int = Field(50, ge=1, description="history items fed to a model at evaluation")
    tail_fraction: float = Field(0.8, gt=0, lt=1, description="share of least popular items called 'tail'")
    select_users: int | None = Field(None, ge=1, description="epoch selection validates on this many users "
                                     "(a fixed, seeded sample; null = all); final valid/test use all users")
    select_seed: int = Field(0, description="seed of the epoch-selection user sample")
    precision: Literal["fp32", "bf16"] = Field("fp32", description="bf16 autocasts the models' forward passes "
                                               "while ranking (TIGER's beam search: faster with AMX, scores rounded)")

    @model_validator(mode="after")
    def _cut_offs_and_selection_metric(self) -> "EvalConfig":
        """Checked before anything runs: a bad cut-off used to fail only after training (KeyError: 'ndcg@10')."""
        if not self.ks or any(k < 1 for k in self.ks) or len(set(self.ks)) != len(self.ks):
            raise ValueError(f"eval.ks must be distinct positive cut-offs, got {self.ks}")
        match = re.fullmatch(r"(recall|ndcg)@(\d+)", self.select_metric)
        if match is None:
            raise ValueError(f"eval.select_metric must look like ndcg@10 or recall@20, got {self.select_metric!r}")
        if int(match.group(2)) not in self.ks:
            raise ValueError(f"eval.select_metric {self.select_metric} needs {match.group(2)} in eval.ks {self.ks}")
        return self


class AlgorithmSpec(BaseModel):
    """`name` + free options, validated later by the named algorithm's own config class."""

    model_config = ConfigDict(extra="allow")
    name: str

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class CollaborativeConfig(Section):
    """The sequential model whose item embeddings are the collaborative signal (CARD's neighbours)."""

    model: AlgorithmSpec = Field(default_factory=lambda: AlgorithmSpec(name="sasrec"))
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(epochs=50, patience=3))


NEEDS_COLLABORATIVE = ("card", "collaborative")


class RunConfig(Section):
    data: DataConfig = Field(default_factory=DataConfig)
    collaborative: CollaborativeConfig | None = Field(None, description="train a collaborative model first")
    embed: AlgorithmSpec | None = Field(None, description="item encoder: text, image, card, fusion, collaborative")
    tokenize: AlgorithmSpec | None = Field(None, description="tokenizer name, its options and `resolution`")
    model: AlgorithmSpec = Field(default_factory=lambda: AlgorithmSpec(name="popularity"))
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    cache_dir: str = Field(".cache/sidrec/stages", description="reusable stage artifacts, keyed by their inputs")

    @model_validator(mode="after")
    def _collaborative_for_encoders_that_need_it(self) -> "RunConfig":
        """`card` and `collaborative` embeddings need a collaborative model: default one, visibly, in the config."""
        if self.embed is not None and self.embed.name in NEEDS_COLLABORATIVE and self.collaborative is None:
            self.collaborative = CollaborativeConfig()
        return self


class ConfigError(ValueError):
    """A preset or override is invalid; the message names the file and key."""


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.sub=value")
    key, value = text.split("=", 1)
    return key.strip().split("."), yaml.safe_load(value)


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    for text in overrides:
        keys, value = parse_override(text)
        node = raw
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: {key!r} is not a section")
        node[keys[-1]] = value
    return raw


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                model: type[BaseModel] = RunConfig, base: dict | None = None) -> BaseModel:
    """Validate `base` (or the YAML at `path`) after applying dotted `overrides`."""
    raw: dict = dict(base or {})
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"{path}: config file not found")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML ({exc})") from exc
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: top level must be a mapping of sections")
    raw = apply_overrides(raw, overrides or [])
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        where = f"{path}: " if path else ""
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{where}{problems}") from exc


PRESETS = Path(str(resources.files("sidrec").joinpath("configs")))  # shipped inside the package


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS.glob("*.yaml"))


def resolve_preset(name_or_path: str | Path) -> Path:
    """A YAML path, or the name of a preset shipped with sidrec (e.g. `sasrec`)."""
    path = Path(name_or_path)
    if path.exists():
        return path
    preset = PRESETS / f"{str(name_or_path).removesuffix('.yaml')}.yaml"
    if preset.exists():
        return preset
    raise ConfigError(f"{name_or_path}: no such config file or preset (presets: {', '.join(preset_names())})")


def env_flag(name: str) -> bool:
    """Whether environment variable `name` is set to 1 / true / yes (any case)."""
    return os.environ.get(name, "").lower() in {"1", "true", "yes"}
