"""The `Tokenizer` protocol every item tokenizer follows, and the name -> class registry.

A tokenizer maps continuous item embeddings `[n, d]` to discrete codes `[n, L]` (one code per level /
sub-quantizer) and back. Options are plain keyword arguments with defaults, recorded verbatim so that
`save` / `load` rebuild exactly the same object.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from sidrec.io import ArtifactError, file_sha256, load_tensors, read_json, save_tensors, write_json
from sidrec.numerics import deterministic_algorithms
from sidrec.registry import Registry
from sidrec.tokenizers.kmeans import FAISS


def _import_families() -> None:
    """Registration happens on import: load every family module (new families: add them here)."""
    from sidrec.tokenizers import mhq, nurqvae, pq, rkmeans, rqvae, transformed  # noqa: F401


TOKENIZERS = Registry("tokenizer", populate=_import_families)

CONFIG_FILE = "tokenizer.json"
WEIGHTS_FILE = "weights.safetensors"


def register(name: str):
    """Class decorator: make a tokenizer buildable by `name` (and give the class that name)."""

    def deco(cls: type["Tokenizer"]) -> type["Tokenizer"]:
        cls.name = name
        return TOKENIZERS.register(name, cls)

    return deco


def build_tokenizer(name: str, **options: Any) -> "Tokenizer":
    """Instantiate the tokenizer registered as `name` with keyword `options` (others keep defaults)."""
    return TOKENIZERS.build(name, **options)


def as_matrix(x: Any, *, dim: int | None = None, what: str = "embeddings") -> torch.Tensor:
    """Validate and convert embeddings (tensor, ndarray or ItemEmbeddings) to a float32 `[n, d]` tensor."""
    x = getattr(x, "vectors", x)
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what}: expected a tensor, ndarray or ItemEmbeddings, got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"{what}: expected a 2-D [n_items, d] matrix, got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{what}: empty matrix (0 items)")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{what}: tokenizer was fitted on d={dim}, got d={x.shape[1]}")
    x = x.detach().to(torch.float32).cpu()
    if not torch.isfinite(x).all():
        bad = (~torch.isfinite(x)).any(dim=1).nonzero().flatten()[:5].tolist()
        raise ValueError(f"{what}: contains NaN/inf values (first bad rows: {bad})")
    return x


class Tokenizer(abc.ABC):
    """`fit(embeddings) -> self`, `encode(x) -> codes [n, L]`, `decode(codes) -> x_hat`, `save(dir)`, `load(dir)`.

    Subclasses declare `defaults` (every option with its default) and implement the underscored hooks;
    the public methods here do input validation and persistence once for all families.
    """

    name: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {"seed": 0}

    def __init__(self, **options: Any) -> None:
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            raise TypeError(f"{type(self).__name__}: unknown option(s) {unknown}; valid: {sorted(self.defaults)}")
        self.options: dict[str, Any] = {**self.defaults, **options}
        self.input_dim: int | None = None

    def requirements(self) -> list[tuple[str, str, str]]:
        """Optional packages a fit needs, as `sidrec.extras.require` arguments (checked before a run starts)."""
        return [FAISS]

    # ----- hooks -------------------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def codebook_sizes(self) -> list[int]:
        """Number of codewords at each level (length L)."""

    @abc.abstractmethod
    def _fit(self, x: torch.Tensor) -> None: ...

    @abc.abstractmethod
    def _encode(self, x: torch.Tensor) -> torch.Tensor: ...

    @abc.abstractmethod
    def _decode(self, codes: torch.Tensor) -> torch.Tensor: ...

    @abc.abstractmethod
    def _state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Fitted parameters as (tensors, JSON-able metadata)."""

    @abc.abstractmethod
    def _set_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None: ...

    def last_level_costs(self, x: torch.Tensor) -> torch.Tensor:
        """`[n, K_last]` cost of every last-level code for each item, given its other codes (Sinkhorn resolution)."""
        raise NotImplementedError(f"tokenizer {self.name!r} does not expose last-level costs")

    def latents(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(values before, values after) the non-uniform transform, for plots; None when there is none."""
        return None

    # ----- public API --------------------------------------------------------------------------
    @property
    def is_fitted(self) -> bool:
        return self.input_dim is not None

    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise RuntimeError(f"tokenizer {self.name!r} is not fitted; call fit() or load() first")

    def fit(self, embeddings: Any) -> "Tokenizer":
        x = as_matrix(embeddings)
        with torch.random.fork_rng(devices=[]), deterministic_algorithms():  # same seed, same codes
            torch.manual_seed(int(self.options["seed"]))
            self._fit(x)
        self.input_dim = x.shape[1]
        return self

    def encode(self, x: Any) -> torch.Tensor:
        self._require_fitted()
        with torch.no_grad():
            return self._encode(as_matrix(x, dim=self.input_dim)).to(torch.long)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        self._require_fitted()
        codes = self.check_codes(codes)
        with torch.no_grad():
            return self._decode(codes)

    def check_codes(self, codes: torch.Tensor) -> torch.Tensor:
        codes = torch.as_tensor(codes)
        sizes = torch.tensor(self.codebook_sizes)
        if codes.ndim != 2 or codes.shape[1] != len(sizes):
            raise ValueError(f"codes: expected shape [n, {len(sizes)}], got {tuple(codes.shape)}")
        if codes.is_floating_point() or codes.is_complex():
            raise TypeError(f"codes: expected an integer tensor, got {codes.dtype}")
        codes = codes.to(torch.long)
        if ((codes < 0) | (codes >= sizes)).any():
            raise ValueError(f"codes: values outside the codebooks of sizes {sizes.tolist()}")
        return codes

    def save(self, directory: str | Path) -> None:
        """Write `weights.safetensors` then `tokenizer.json` (with the weights' checksum), each atomically."""
        self._require_fitted()
        directory = Path(directory)
        tensors, meta = self._state()
        save_tensors(directory / WEIGHTS_FILE, tensors)
        write_json(
            directory / CONFIG_FILE,
            {
                "name": self.name,
                "options": self.options,
                "input_dim": self.input_dim,
                "codebook_sizes": self.codebook_sizes,
                "state": meta,
                "weights_sha256": file_sha256(directory / WEIGHTS_FILE),
            },
        )

    @classmethod
    def load(cls, directory: str | Path) -> "Tokenizer":
        """Rebuild whichever registered tokenizer `directory` holds (checksum-verified)."""
        directory = Path(directory)
        config = read_json(directory / CONFIG_FILE)
        for key in ("name", "options", "input_dim", "state", "weights_sha256"):
            if key not in config:
                raise ArtifactError(f"{directory / CONFIG_FILE}: missing field {key!r}")
        if file_sha256(directory / WEIGHTS_FILE) != config["weights_sha256"]:
            raise ArtifactError(f"{directory / WEIGHTS_FILE}: checksum does not match {CONFIG_FILE}")
        tok = build_tokenizer(config["name"], **config["options"])
        if cls is not Tokenizer and not isinstance(tok, cls):
            raise ArtifactError(f"{directory}: holds a {config['name']!r} tokenizer, not {cls.__name__}")
        tok.input_dim = int(config["input_dim"])
        tok._set_state(load_tensors(directory / WEIGHTS_FILE), config["state"])
        return tok
