"""Prefix trie over a catalogue's semantic IDs, stored as dense per-level lookup tables.

Constrained decoding asks "which next codes keep this prefix on a real item?" for thousands of
beams at once. A dict-of-dicts answers one beam at a time in Python; here level `l` is a table
`children[l][prefix_id, code] -> next prefix id (or item index at the last level), -1 if absent`,
so the answer for a whole batch of beams is one gather.
"""

from __future__ import annotations

import torch

from sidrec.semantic_ids import SemanticIDs


class SIDTrie:
    """Trie over `codes [n_items, n_levels]` (row = dense item index); codes must be unique.

    Prefix ids are dense per level: level 0 has the single root (id 0); the prefixes of length
    `l + 1` are numbered 0..n-1 in sorted order of (parent id, code). `children[l]` is an int32
    table `[n_prefixes(l), codebook_sizes[l]]`. `parents[l]` / `codes_at[l]` give, for every
    node one level down, its parent prefix id and the code that leads to it (used by exhaustive
    scoring). `token_offsets` maps level codes to token ids of the shared vocabulary.
    """

    def __init__(self, codes: torch.Tensor, codebook_sizes: list[int], token_offsets: list[int] | None = None):
        codes = torch.as_tensor(codes, dtype=torch.long)
        if codes.ndim != 2 or codes.shape[1] != len(codebook_sizes):
            raise ValueError(
                f"trie codes must be [n_items, {len(codebook_sizes)}] for codebook_sizes={codebook_sizes}, "
                f"got shape {tuple(codes.shape)}"
            )
        if codes.shape[0] == 0:
            raise ValueError("cannot build a trie over an empty catalogue (codes has 0 rows)")
        sizes = torch.tensor(codebook_sizes)
        if (codes < 0).any() or (codes >= sizes).any():
            raise ValueError("trie codes: a code lies outside its level's codebook")
        self.codebook_sizes = [int(s) for s in codebook_sizes]
        self.token_offsets = list(token_offsets) if token_offsets is not None else [0] * len(codebook_sizes)
        self.n_items = codes.shape[0]
        self.children: list[torch.Tensor] = []
        self.parents: list[torch.Tensor] = []
        self.codes_at: list[torch.Tensor] = []

        parent = torch.zeros(self.n_items, dtype=torch.long)
        n_parents = 1
        last = self.n_levels - 1
        for level, size in enumerate(self.codebook_sizes):
            key = parent * size + codes[:, level]
            uniq, inverse = torch.unique(key, return_inverse=True)
            table = torch.full((n_parents * size,), -1, dtype=torch.int32)
            if level == last:
                if uniq.numel() != self.n_items:
                    _raise_duplicates(codes, key, uniq)
                table[key] = torch.arange(self.n_items, dtype=torch.int32)
                self.parents.append(parent)
                self.codes_at.append(codes[:, level].clone())
            else:
                table[uniq] = torch.arange(uniq.numel(), dtype=torch.int32)
                self.parents.append(uniq // size)
                self.codes_at.append(uniq % size)
            self.children.append(table.view(n_parents, size))
            parent, n_parents = inverse, uniq.numel()

    @classmethod
    def from_semantic_ids(cls, sids: SemanticIDs) -> "SIDTrie":
        return cls(sids.codes, sids.codebook_sizes, sids.offsets.tolist())

    @property
    def n_levels(self) -> int:
        return len(self.codebook_sizes)

    def n_nodes(self, level: int) -> int:
        """Number of distinct prefixes of length `level` (1 for the root level 0)."""
        return self.children[level].shape[0]

    def next_nodes(self, level: int, prefix: torch.Tensor) -> torch.Tensor:
        """`[..., codebook_sizes[level]]` long: child id (item index at the last level) or -1."""
        return self.children[level][prefix].long()

    def allowed(self, level: int, prefix: torch.Tensor) -> torch.Tensor:
        """Boolean mask of the codes that keep each prefix on a catalogue item."""
        return self.children[level][prefix] >= 0

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Item index of each full code `[..., n_levels]`, -1 where the code is not in the catalogue."""
        codes = torch.as_tensor(codes, dtype=torch.long)
        node = torch.zeros(codes.shape[:-1], dtype=torch.long)
        for level, size in enumerate(self.codebook_sizes):
            code = codes[..., level]
            ok = (node >= 0) & (code >= 0) & (code < size)
            nxt = self.children[level][node.clamp(min=0), code.clamp(0, size - 1)].long()
            node = torch.where(ok, nxt, torch.full_like(nxt, -1))
        return node

    def to(self, device: torch.device | str) -> "SIDTrie":
        """Move the lookup tables (in place) so decoding on an accelerator gathers locally."""
        self.children = [t.to(device) for t in self.children]
        self.parents = [t.to(device) for t in self.parents]
        self.codes_at = [t.to(device) for t in self.codes_at]
        return self


def _raise_duplicates(codes: torch.Tensor, key: torch.Tensor, uniq: torch.Tensor) -> None:
    counts = torch.bincount(torch.searchsorted(uniq, key), minlength=uniq.numel())
    dup_key = uniq[counts > 1][0]
    items = (key == dup_key).nonzero().flatten()[:5].tolist()
    n_dup = int(codes.shape[0] - uniq.numel())
    raise ValueError(
        f"semantic IDs are not unique: {n_dup} items share a code with another item "
        f"(e.g. items {items} all have code {codes[items[0]].tolist()}); resolve collisions "
        f"(e.g. add a dedup level) before building a trie"
    )
