"""`SemanticIDs`: the discrete item codes a tokenizer hands to a generative model, and the reserved token ids.

It sits above the stages because both sides use it: tokenizers produce it, models and decoders read it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sidrec.io import ArtifactError, load_tensors_and_metadata, save_tensors

# The token ids below every code, shared by the generator, the beam search and the exporters.
PAD_TOKEN = 0  # padding, and T5's decoder start token
EOS_TOKEN = 1
N_SPECIAL_TOKENS = 2


@dataclass
class SemanticIDs:
    """Int matrix `[n_items, n_levels]` (row = dense item index) and the size of each level's codebook.

    Tokens: level l, code c -> token id `offsets[l] + c`; ids below `n_special` are reserved
    (PAD_TOKEN, EOS_TOKEN), so one embedding table serves every level without clashes.
    """

    codes: torch.Tensor
    codebook_sizes: list[int]
    resolution: str = "none"
    info: dict = field(default_factory=dict)

    n_special = N_SPECIAL_TOKENS

    def __post_init__(self) -> None:
        self.codes = self.codes.to(torch.long)
        if self.codes.ndim != 2 or self.codes.shape[1] != len(self.codebook_sizes):
            raise ValueError(
                f"codes shape {tuple(self.codes.shape)} does not match {len(self.codebook_sizes)} codebook sizes"
            )
        sizes = torch.tensor(self.codebook_sizes)
        if self.codes.numel() and ((self.codes < 0).any() or (self.codes >= sizes).any()):
            raise ValueError("a code lies outside its level's codebook")

    @property
    def n_items(self) -> int:
        return self.codes.shape[0]

    @property
    def n_levels(self) -> int:
        return self.codes.shape[1]

    @property
    def offsets(self) -> torch.Tensor:
        sizes = torch.tensor([0, *self.codebook_sizes[:-1]])
        return self.n_special + torch.cumsum(sizes, 0)

    @property
    def vocab_size(self) -> int:
        return self.n_special + sum(self.codebook_sizes)

    def tokens(self) -> torch.Tensor:
        """`[n_items, n_levels]` token ids in the shared vocabulary."""
        return self.codes + self.offsets

    def collision_rate(self) -> float:
        """1 - unique codes / items: 0 means every item has its own code."""
        if self.n_items == 0:
            return 0.0
        return 1.0 - torch.unique(self.codes, dim=0).shape[0] / self.n_items

    def save(self, path: str | Path) -> None:
        meta = {
            "codebook_sizes": json.dumps(self.codebook_sizes),
            "resolution": self.resolution,
            "info": json.dumps(self.info, default=str),
        }
        save_tensors(path, {"codes": self.codes}, metadata=meta)

    @classmethod
    def load(cls, path: str | Path) -> "SemanticIDs":
        tensors, meta = load_tensors_and_metadata(path, "codes")
        if "codebook_sizes" not in meta:
            raise ArtifactError(f"{path}: no codebook sizes in the header; not a SemanticIDs file")
        return cls(tensors["codes"], json.loads(meta["codebook_sizes"]), meta.get("resolution", "none"),
                   json.loads(meta.get("info", "{}")))
