"""What every recommender shares: a typed config, a registry, `recommend`, and safetensors save/load."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, ClassVar, Iterator

import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import nn

from sidrec.features.embeddings import ItemEmbeddings
from sidrec.io import ArtifactError, load_tensors, read_json, save_tensors, write_json
from sidrec.registry import Registry, UnknownNameError
from sidrec.semantic_ids import SemanticIDs

MODELS = Registry("model")  # filled by each subclass that names itself
# Upstream artifacts a model may need, saved beside its weights so a model directory stands alone.
CONTEXT_FILES = {"sids": ("sids.safetensors", SemanticIDs), "embeddings": ("embeddings.safetensors", ItemEmbeddings)}


class ModelOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Recommender(nn.Module):
    """Base recommender over dense item indices.

    Subclasses set `name` and `Options`, build their layers from `(options, n_items, **context)`,
    and implement `recommend`. Trainable ones also implement `loss(batch) -> (sum, count)` and
    `make_batches(...)`; the sum/count form makes distributed averaging exact.
    """

    name: ClassVar[str]
    Options: ClassVar[type[ModelOptions]] = ModelOptions
    needs: ClassVar[tuple[str, ...]] = ()  # upstream artifacts: "sids", "embeddings"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            MODELS.register(cls.name, cls)

    def __init__(self, options: ModelOptions, n_items: int) -> None:
        super().__init__()
        self.options = options
        self.n_items = n_items

    def recommend(self, histories: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def diagnostics(self, dataset: Any, max_len: int) -> dict[str, float]:
        """Figures about the trained model itself (not its ranking), reported beside the metrics; none by default."""
        return {}

    def init_args(self) -> dict:
        """What `load` needs to rebuild the module before loading its weights."""
        return {"n_items": self.n_items}

    def over_catalogue(self, n_items: int, **context: Any) -> "Recommender":
        """This model (same options and weights) over `n_items` items with new context (`sids`, `embeddings`):
        how `add-items` grows the catalogue; fails for models with per-item weights."""
        model = MODELS[self.name](self.options, n_items, **context)
        model.load_state_dict(self.state_dict())
        return model

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        for need in self.needs:
            getattr(self, need).save(directory / CONTEXT_FILES[need][0])
        save_tensors(directory / "model.safetensors", self.state_dict())
        write_json(directory / "model.json", {"name": self.name, "options": self.options.model_dump(),
                                              **self.init_args()})

    @classmethod
    def load(cls, directory: str | Path) -> "Recommender":
        directory = Path(directory)
        spec = read_json(directory / "model.json")
        try:
            model_cls = MODELS[spec.pop("name", None)]
        except KeyError as exc:
            raise ArtifactError(f"{directory}/model.json: {exc}") from exc
        try:
            options = model_cls.Options.model_validate(spec.pop("options"))
        except ValidationError as exc:
            raise ArtifactError(f"{directory}/model.json: options do not match model {model_cls.name!r} ({exc})") from exc
        context = {need: CONTEXT_FILES[need][1].load(directory / CONTEXT_FILES[need][0]) for need in model_cls.needs}
        model = model_cls(options, **spec, **context)
        state = load_tensors(directory / "model.safetensors")
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise ArtifactError(f"{directory}/model.safetensors does not match model.json ({exc})") from exc
        return model.eval()


def model_options(name: str, options: dict, section: str = "model") -> ModelOptions:
    """Validated options of model `name` (ValueError naming each bad `section.key`)."""
    if name not in MODELS:
        raise UnknownNameError(f"{section}.name: {MODELS.unknown(name)}")
    try:
        return MODELS[name].Options.model_validate(options)
    except ValidationError as exc:
        raise ValueError("; ".join(f"{section}.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from exc


def build_model(name: str, options: dict, n_items: int, **context: Any) -> Recommender:
    parsed = model_options(name, options)
    cls = MODELS[name]
    missing = [need for need in cls.needs if context.get(need) is None]
    if missing:
        stage = {"sids": "a `tokenize` section", "embeddings": "an `embed` section"}
        raise ValueError(f"model {name!r} needs {' and '.join(stage[m] for m in missing)} in its config")
    return cls(parsed, n_items, **{need: context[need] for need in cls.needs})


@contextlib.contextmanager
def evaluating(module: nn.Module) -> Iterator[None]:
    """`module` in eval mode inside the block, back to the mode it was in afterwards (also on error)."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def truncate_histories(histories: torch.Tensor, max_len: int) -> torch.Tensor:
    """Keep each row's most recent `max_len` items (rows are left-aligned, -1 padded)."""
    if histories.shape[1] <= max_len:
        return histories
    lengths = (histories >= 0).sum(dim=1, keepdim=True)
    index = (lengths - max_len).clamp(min=0) + torch.arange(max_len, device=histories.device)
    kept = torch.gather(histories, 1, index.clamp(max=histories.shape[1] - 1))
    return torch.where(index < lengths, kept, torch.full_like(kept, -1))


def bucketed_batches(lengths: torch.Tensor, batch_size: int, generator: torch.Generator,
                     pool: int = 50, sizes: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Shuffled batches of row indices with similar `lengths` and about `batch_size` x mean-size targets each.

    Rows are shuffled, sorted by length inside pools of `pool` batches and cut so that every batch
    holds about the same number of targets (`sizes`, default the lengths: many short rows or few
    long ones), then the batches are shuffled. Padding shrinks several-fold, while each step still
    weighs its targets as a random batch would: cutting by row count instead over-trains on short
    rows, one step per few targets. Rows with one target each (TIGER prefixes) pass `sizes` of ones.
    """
    sizes = lengths if sizes is None else sizes
    budget = max(1, int(batch_size * sizes.float().mean().item()))
    order = torch.randperm(lengths.numel(), generator=generator)
    batches = []
    for chunk in order.split(batch_size * pool):
        chunk = chunk[torch.sort(lengths[chunk], stable=True).indices]
        group = (torch.cumsum(sizes[chunk].clamp(min=1), 0) - 1) // budget
        batches.extend(chunk.split(torch.unique_consecutive(group, return_counts=True)[1].tolist()))
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def scores_top_k(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k of full-catalogue scores, best first."""
    k = min(k, scores.shape[1])
    values, items = torch.topk(scores, k, dim=1)
    return items, values
