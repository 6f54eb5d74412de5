"""mutmut over the modules that define the protocol, the decoding, the balancing, CARD's non-uniform transform and
the generators: every operator of every line.

    pip install -c constraints.txt mutmut==3.8.1
    python benchmarks/mutation_tool.py                  # -> benchmarks/results/mutation_tool.{md,json}
    python benchmarks/mutation_tool.py --scope models   # -> benchmarks/results/mutation_tool_models.{md,json}
    python benchmarks/mutation_tool.py --render-only    # after editing EQUIVALENT
    python benchmarks/mutation_tool.py --recheck        # after writing tests for the survivors: rerun only those

Where `benchmarks/mutation.py` breaks one named mechanism at a time, this runs a generic tool over whole files
(a `Scope`), each mutant against the tests that reach its function (mutmut's own selection within its tests), in a
scratch copy of the checkout. A surviving mutant is a test gap unless it changes nothing observable; those are
listed in `EQUIVALENT` (function + mutated line -> why) and reported as justified, every other survivor as open,
except in the functions of `SKIP` (outside the defining code), whose survivors are listed apart.
The transform (`tokenizers/nonuniform.py`), its plug-and-play wrapper (`tokenizers/transformed.py`) and NU-RQ-VAE's
model and losses (`tokenizers/nurqvae.py`) are in the `protocol` scope; the generators (`models/`) are a scope of their
own, run against tests/models but for its two slowest tests (a cost per mutant 2 cores cannot pay, stated in the table).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from sidrec.io import atomic_path, read_json, write_json
from mutation import CODE, scratch_copy
from provenance import run_facts

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


@dataclass(frozen=True)
class Scope:
    """Files mutmut mutates, the tests it may run on them, and tests left out for their cost (stated in the table)."""

    title: str
    files: list[str]
    tests: list[str]
    out: Path
    deselect: list[str] = field(default_factory=list)


MODELS_TESTS = "tests/models/test_tiger.py::"
SCOPES = {
    "protocol": Scope(
        "the protocol, decoding, balancing and non-uniform transform code",
        ["src/sidrec/evaluation/metrics.py", "src/sidrec/evaluation/protocol.py", "src/sidrec/decoding/trie.py",
         "src/sidrec/decoding/beam_search.py", "src/sidrec/decoding/exact.py", "src/sidrec/data/dataset.py",
         "src/sidrec/tokenizers/sinkhorn.py", "src/sidrec/tokenizers/collisions.py",
         "src/sidrec/tokenizers/nonuniform.py", "src/sidrec/tokenizers/transformed.py", "src/sidrec/tokenizers/nurqvae.py"],
        ["tests/evaluation", "tests/decoding", "tests/data", "tests/tokenizers"], RESULTS / "mutation_tool"),
    # The generators: their two slowest tests (14 s and 9 s, against ~0.1-2 s for the rest) would run for nearly
    # every mutant of the forward pass; they are left out, and the HF export only they reach is listed apart.
    "models": Scope(
        "the generators (TIGER, AsymRec, SASRec, the causal encoder, dropout)",
        ["src/sidrec/models/base.py", "src/sidrec/models/causal.py", "src/sidrec/models/dropout.py",
         "src/sidrec/models/popularity.py", "src/sidrec/models/sasrec.py", "src/sidrec/models/asymrec.py",
         "src/sidrec/models/tiger.py"],
        ["tests/models"], RESULTS / "mutation_tool_models",
        [MODELS_TESTS + "test_history_once_trains_through_the_trainer_and_window_batches_cover_every_transition",
         MODELS_TESTS + "test_hf_export_has_the_same_logits_and_generate_picks_the_same_items"]),
}
# Functions of those files outside the defining code (fnmatch over mutmut's names), with why: they are mutated and
# run like the rest, but their survivors are listed apart, not counted open (their own suites, e.g.
# tests/test_stage_cache.py and the readers' tests, lie outside their scope's tests).
DATASET = "sidrec.data.dataset."
SKIP = {**{f"{DATASET}xǁDatasetǁ{name}": "dataset persistence, statistics and content digest"
           for name in ("save", "load", "exists", "stats", "digest")},
        f"{DATASET}x_k_core": "dataset building from raw interactions (k-core filter)",
        f"{DATASET}x_build_dataset": "dataset building from raw interactions",
        f"{DATASET}xǁDatasetǁuser_history": "serving's history lookup (tests/serving)",
        "sidrec.decoding.trie.xǁSIDTrieǁto": "moving the trie's tables to a device (no accelerator here)",
        **{f"sidrec.models.tiger.xǁTIGERǁ{name}": "the Hugging Face export, reached only by its parity test, left out "
                                                  "of the models scope for its cost" for name in ("to_hf", "_hf_state_dict")},
        "sidrec.tokenizers.transformed.x__nu_variant": "registering the nu- tokenizers, which runs at import, before "
                                                       "mutmut switches a mutant on (out of its reach)",
        "sidrec.models.base.xǁRecommenderǁ__init_subclass__": "registering the models, which runs at import, before "
                                                             "mutmut switches a mutant on (out of its reach)",
        "sidrec.models.base.xǁRecommenderǁover_catalogue": "growing the catalogue (`add-items`, tests/serving)"}
# (function, mutated line) -> why the mutant cannot change a result. Functions are mutmut's names without the
# `__mutmut_N` suffix (the number moves when code moves; the line does not).
EQUIVALENT: dict[tuple[str, str], str] = {
    ('sidrec.evaluation.protocol.x_rank_items', 'exclude = torch.as_tensor(exclude_history, dtype=None).expand(rows)'):
        '`exclude_history` is a bool or a bool tensor (typed so): `as_tensor` keeps bool without the dtype',
    ('sidrec.evaluation.protocol.x_rank_items', 'exclude = torch.as_tensor(exclude_history, ).expand(rows)'):
        'the same: a bool or bool tensor stays bool',
    ('sidrec.evaluation.protocol.x_rank_items', 'extra = int(((histories >= 0).sum(dim=1) * exclude).max()) if rows else 1'):
        'only an empty batch takes this branch, and it returns nothing either way',
    ('sidrec.evaluation.protocol.x_rank_items', 'order = torch.sort(seen.to(torch.int8), stable=True).indices  # unseen first, rank order kept'):
        "`seen` is 2-D: sort's default dim -1 is dim 1",
    ('sidrec.evaluation.protocol.x_rank_items', 'order = torch.sort(seen.to(None), dim=1, stable=True).indices  # unseen first, rank order kept'):
        '`to(None)` keeps bool, and a stable sort of bools orders False before True exactly as of int8 0/1',
    ('sidrec.evaluation.protocol.x_rank_items', 'return items.masked_fill(seen, -1), scores.masked_fill(seen, float("NAN"))'):
        "`float('NAN')` is `float('nan')`",
    ('sidrec.evaluation.metrics.x_head_tail_recall', 'return x.mean().item() if (x.numel()) or True else float("nan")'):
        'the mean of an empty tensor is already NaN',
    ('sidrec.evaluation.metrics.x_head_tail_recall', 'return x.mean().item() if x.numel() else float("NAN")'):
        "`float('NAN')` is `float('nan')`",
    ('sidrec.tokenizers.sinkhorn.x_sinkhorn_plan', 'scaled = torch.where(finite, (cost + lo) / (hi - lo).clamp_min(1e-12), torch.inf)'):
        'adds the constant 2 lo / (hi - lo) to every cost, which the Sinkhorn potentials absorb: the plan is unchanged',
    ('sidrec.tokenizers.sinkhorn.x_sinkhorn_plan', 'log_a = torch.full((n,), -math.log(n), dtype=None, device=cost.device)'):
        'a float32 constant in a float64 problem is promoted on use: row masses move by float32 rounding of log n only',
    ('sidrec.tokenizers.sinkhorn.x_sinkhorn_plan', 'log_a = torch.full((n,), -math.log(n), device=cost.device)'):
        'the same float32 promotion',
    ('sidrec.tokenizers.sinkhorn.x_sinkhorn_plan', 'log_a = torch.full((n,), -math.log(n), dtype=cost.dtype, device=None)'):
        'CPU only here (no accelerator to place it on)',
    ('sidrec.tokenizers.sinkhorn.x_sinkhorn_plan', 'log_a = torch.full((n,), -math.log(n), dtype=cost.dtype, )'):
        'CPU only here',
    ('sidrec.tokenizers.sinkhorn.x_sinkhorn_plan', 'log_b = torch.full((k,), -math.log(k), dtype=cost.dtype, device=None)'):
        'CPU only here',
    ('sidrec.tokenizers.sinkhorn.x_sinkhorn_plan', 'log_b = torch.full((k,), -math.log(k), dtype=cost.dtype, )'):
        'CPU only here',
    ('sidrec.tokenizers.sinkhorn.x_sinkhorn_plan', 'f = None'):
        "f is overwritten by the first iteration before it is read (n_iters = 0 is the plain softmin that benchmarks/mutation.py's `sinkhorn-no-iterations` covers)",
    ('sidrec.tokenizers.collisions.x_sinkhorn_reassign', 'moved = torch.zeros(len(codes), dtype=None)'):
        'a float 0/1 flag sums to the same count',
    ('sidrec.tokenizers.collisions.x_sinkhorn_reassign', 'moved = torch.zeros(len(codes), )'):
        'a float 0/1 flag sums to the same count',
    ('sidrec.tokenizers.collisions.x_sinkhorn_reassign', 'return'):
        'unreachable: every round that has a free code accepts the first mover of each proposed code',
    ('sidrec.tokenizers.collisions.x_sinkhorn_reassign', 'remaining = 1.0 - torch.unique(codes, dim=0).shape[0] / max(len(codes), 2)'):
        'differs only for a single item, which never collides',
    ('sidrec.tokenizers.collisions.x_resolve_collisions', 'codes = torch.as_tensor(codes).to(None)'):
        '`SemanticIDs` casts its codes to long itself',
    ('sidrec.decoding.trie.xǁSIDTrieǁ__init__', 'codes = torch.as_tensor(codes, dtype=None)'):
        'callers pass long codes; other integer dtypes index the same',
    ('sidrec.decoding.trie.xǁSIDTrieǁ__init__', 'codes = torch.as_tensor(codes, )'):
        'the same',
    ('sidrec.decoding.trie.xǁSIDTrieǁlookup', 'codes = torch.as_tensor(codes, dtype=None)'):
        'the codes index tables and are compared: any integer dtype gives the same lookups',
    ('sidrec.decoding.trie.xǁSIDTrieǁlookup', 'codes = torch.as_tensor(codes, )'):
        'the same',
    ('sidrec.decoding.trie.xǁSIDTrieǁlookup', 'nxt = self.children[level][node.clamp(min=0), code.clamp(None, size - 1)].long()'):
        'a negative code reads a wrapped-around entry, but `ok` already maps it to -1',
    ('sidrec.decoding.trie.x__raise_duplicates', 'counts = torch.bincount(torch.searchsorted(uniq, key), )'):
        'the largest key is in `key`, so the counts have len(uniq) entries anyway',
    ('sidrec.decoding.trie.x__raise_duplicates', 'f"(e.g. items {items} all have code {codes[items[1]].tolist()}); resolve collisions "'):
        'the items listed share one code: any of them shows it',
    ('sidrec.decoding.exact.x_exact_top_k', 'batch_size: int = 17,'):
        'users per chunk: the scores do not depend on how users are chunked (tested against unchunked exact scores)',
    ('sidrec.decoding.exact.x_exact_top_k', 'exact_item_scores(model, ids, mask, trie).topk(k, )'):
        "the scores are 2-D: topk's default dim -1 is dim 1",
    ('sidrec.data.dataset.xǁDatasetǁtrain_sequences', 'user_of = torch.repeat_interleave(self.lengths)'):
        '`repeat_interleave(lengths)` is `repeat_interleave(arange(n), lengths)`',
    ('sidrec.data.dataset.xǁDatasetǁtraining_windows', 'user = torch.repeat_interleave(n_windows)'):
        'the same identity',
    ('sidrec.data.dataset.xǁDatasetǁwindows', 'flat = self.sequence_items[index.clamp(max=max(self.n_interactions - 2, 0))]'):
        "the clamp only guards masked slots: the last interaction is the last user's test target, which no window reads",
    ('sidrec.data.dataset.xǁDatasetǁwindows', 'flat = self.sequence_items[index.clamp(max=max(self.n_interactions - 1, 1))]'):
        'differs only for a dataset of one interaction, which has no window to read',
    ('sidrec.tokenizers.collisions.x_resolve_collisions', 'return SemanticIDs(codes.clone(), list(codebook_sizes), )'):
        "`SemanticIDs`' resolution defaults to 'none'",
    ('sidrec.tokenizers.collisions.x_sinkhorn_reassign', 'codes: torch.Tensor, costs: torch.Tensor, *, rounds: int = 20, epsilon: float = 0.01, n_iters: int = 51'):
        "one more iteration of a converged Sinkhorn plan leaves its argmax; `sinkhorn_plan`'s own default is pinned by test_the_defaults_are_epsilon_001_and_50_iterations",
    ('sidrec.tokenizers.sinkhorn.x_sinkhorn_assign', 'def sinkhorn_assign(cost: torch.Tensor, *, epsilon: float = 0.01, n_iters: int = 51) -> torch.Tensor:'):
        'the same: one more iteration of a converged plan leaves its argmax',
    ('sidrec.tokenizers.collisions.x_sinkhorn_reassign', 'len(codes), dtype=None'):
        'a float prefix of zeros forms the same (exact, small) keys',
    ('sidrec.tokenizers.collisions.x_sinkhorn_reassign', 'len(codes), )'):
        'the same float zeros',
    ('sidrec.tokenizers.sinkhorn.x_sinkhorn_plan', 'log_b = torch.full((k,), -math.log(k), dtype=None, device=cost.device)'):
        'a float32 constant in a float64 problem is promoted on use (as for log_a)',
    ('sidrec.tokenizers.sinkhorn.x_sinkhorn_plan', 'log_b = torch.full((k,), -math.log(k), device=cost.device)'):
        'the same float32 promotion',
    ('sidrec.tokenizers.nonuniform.x__log_softplus', 'return torch.where(t <= _TAIL, t, torch.log(F.softplus(t.clamp(min=_TAIL))))'):
        'the branches differ only at t = -15 exactly, where log(softplus(-15)) = -15 - 1.5e-7 rounds to -15 in float32',
    ('sidrec.tokenizers.transformed.xǁNonUniformTokenizerǁ__init__', 'self.transform: KumaraswamyTransform | None = ""'):
        'a placeholder: `_fit` or `_set_state` sets the transform before anything reads it',
    ('sidrec.tokenizers.transformed.xǁNonUniformTokenizerǁ_new_transform', 'return KumaraswamyTransform(dim, space=self.options["nu_space"]).requires_grad_(True).eval()'):
        'the wrapper applies its transform under no_grad only and never optimises it (a, b come from the MLE)',
    ('sidrec.tokenizers.transformed.xǁNonUniformTokenizerǁ_set_state', 'self.inner._set_state(_strip(tensors, "inner."), None)'):
        'none of the tokenizers it wraps (rkmeans, pq, opq) reads its saved meta: their state is all tensors',
    ('sidrec.tokenizers.nonuniform.x_log1mexp', 'cut = -math.log(3.0)'):
        'both branches compute log(1 - e^x); the switch only picks the more accurate one, and on [-log 3, -log 2] both are within 1e-7 of the float64 value (measured)',
    ('sidrec.tokenizers.nonuniform.x_log1mexp', 'return torch.where(x >= cut, torch.log(-torch.expm1(x.clamp(min=cut))), torch.log1p(-torch.exp(x.clamp(max=cut))))'):
        'at x = -log 2 itself both branches give the same float32 (-0.69314718)',
    ('sidrec.tokenizers.nonuniform.x__log_neg_log1mexp', 'return torch.where(w <= _TAIL, w, torch.log(-log1mexp(w.clamp(min=_TAIL))))'):
        'at w = -15 exactly the full formula gives -15.0 in float32, the same as the tail branch',
    ('sidrec.tokenizers.nonuniform.x__log1mexp_neg_exp', 'return torch.where(v <= _TAIL, v, log1mexp(-torch.exp(v.clamp(min=_TAIL))))'):
        'at v = -15 exactly the full formula gives -15.0 in float32, the same as the tail branch',
    ('sidrec.tokenizers.nonuniform.xǁKumaraswamyTransformǁset_params', 'self.raw_a.copy_(_inv_softplus(a.to(None)))'):
        "`copy_` casts to the parameter's dtype and device anyway",
    ('sidrec.tokenizers.nonuniform.xǁKumaraswamyTransformǁset_params', 'self.raw_b.copy_(_inv_softplus(b.to(None)))'):
        'the same cast by `copy_`',
    ('sidrec.tokenizers.nonuniform.xǁKumaraswamyTransformǁinverse', 'v = torch.log(-torch.log1p(-t.clamp(1e-30, 1 - torch.finfo(t.dtype).eps / 3)))'):
        '1 - eps/3 rounds to the same float32 as 1 - eps/2, the largest below 1',
    # models scope
    ('sidrec.models.dropout.x_keep_multiplier', 'return (lanes >= dropped + 32768).to(x.dtype).mul_(65536 / (65536 - dropped))'):
        'the int16 comparison wraps the Python scalar modulo 65536, and dropped + 32768 = dropped - 32768 (mod 65536)',
    ('sidrec.models.asymrec.xǁAsymRecǁ__init__', 'self.register_buffer("item_vectors", embeddings.vectors.clone(), persistent=None)'):
        '`register_buffer` treats a falsy `persistent` as False: the buffer stays out of the state dict',
    ('sidrec.models.asymrec.xǁAsymRecǁ__init__', 'self.register_buffer("item_codes", sids.codes.clone(), persistent=None)'):
        '`register_buffer` treats a falsy `persistent` as False: the buffer stays out of the state dict',
    ('sidrec.models.asymrec.xǁAsymRecǁ__init__', 'self.register_buffer("code_offsets", torch.tensor([0, *sizes[:-1]]).cumsum(0), persistent=None)'):
        '`register_buffer` treats a falsy `persistent` as False: the buffer stays out of the state dict',
    ('sidrec.models.asymrec.xǁAsymRecǁloss', 'per_item = 1 - F.cosine_similarity(pred, true, )'):
        "`pred` and `true` are `[N, d]`: cosine_similarity's default dim 1 is dim -1",
    ('sidrec.models.asymrec.xǁAsymRecǁloss', 'per_item = 1 - F.cosine_similarity(pred, true, dim=+1)'):
        "`[N, d]` rows: dim +1 is dim -1",
    ('sidrec.models.asymrec.xǁAsymRecǁloss', 'per_item = (pred - true).pow(2).mean(+1)'):
        "`[N, d]` rows: dim +1 is dim -1",
    ('sidrec.models.asymrec.xǁAsymRecǁloss', 'return (nll * self.code_weights).sum(None).div(self.code_weights.sum()).sum(), valid.sum()'):
        'summing everything first and then dividing by the weight total is the same total as per-row sums divided',
    ('sidrec.models.base.x_truncate_histories', 'if histories.shape[1] < max_len:'):
        'at exactly max_len columns the gather keeps every column as it is: the same rows',
    ('sidrec.models.base.x_truncate_histories', 'kept = torch.gather(histories, 1, index.clamp(max=histories.shape[1] + 1))'):
        'the clamp never binds: index <= max(lengths - max_len, 0) + max_len - 1 <= width - 1',
    ('sidrec.models.base.x_truncate_histories', 'return torch.where(index <= lengths, kept, torch.full_like(kept, -1))'):
        'at index == lengths (< width) the history already holds its padding -1',
    ('sidrec.models.base.x_bucketed_batches', 'chunk = chunk[torch.sort(lengths[chunk], stable=None).indices]'):
        'an unstable sort only reorders rows of equal length, which the generator has already put in random order: the batches are drawn from the same distribution, still determined by the seed (CPU sorts are deterministic)',
    ('sidrec.models.base.x_bucketed_batches', 'chunk = chunk[torch.sort(lengths[chunk], ).indices]'):
        'an unstable sort only reorders rows of equal length, which the generator has already put in random order: the batches are drawn from the same distribution, still determined by the seed (CPU sorts are deterministic)',
    ('sidrec.models.base.x_bucketed_batches', 'chunk = chunk[torch.sort(lengths[chunk], stable=False).indices]'):
        'an unstable sort only reorders rows of equal length, which the generator has already put in random order: the batches are drawn from the same distribution, still determined by the seed (CPU sorts are deterministic)',
    ('sidrec.models.base.x_scores_top_k', 'values, items = torch.topk(scores, k, )'):
        "the scores are 2-D: topk's default dim -1 is dim 1",
    ('sidrec.models.base.xǁRecommenderǁload', 'model_cls = MODELS[spec.pop("name", )]'):
        "a model.json without a name then raises KeyError('name') instead of KeyError(None): the same ArtifactError naming the file",
    ('sidrec.models.causal.xǁCausalEncoderǁ__init__', 'self.layers = nn.TransformerEncoder(layer, layers, enable_nested_tensor=None)'):
        'nested tensors are only built from a src_key_padding_mask, which is never passed',
    ('sidrec.models.causal.xǁCausalEncoderǁ__init__', 'self.layers = nn.TransformerEncoder(layer, layers, )'):
        'nested tensors are only built from a src_key_padding_mask, which is never passed',
    ('sidrec.models.causal.xǁCausalEncoderǁ__init__', 'self.layers = nn.TransformerEncoder(layer, layers, enable_nested_tensor=True)'):
        'nested tensors are only built from a src_key_padding_mask, which is never passed',
    ('sidrec.models.causal.xǁCausalEncoderǁforward', 'return self.output_norm(self.layers(x, mask=causal, is_causal=None))'):
        '`is_causal` is only a hint: the causal mask is passed explicitly either way',
    ('sidrec.models.causal.xǁCausalEncoderǁforward', 'return self.output_norm(self.layers(x, mask=causal, ))'):
        '`is_causal` is only a hint: the causal mask is passed explicitly either way',
    ('sidrec.models.causal.xǁCausalEncoderǁforward', 'return self.output_norm(self.layers(x, mask=causal, is_causal=False))'):
        '`is_causal` is only a hint: the causal mask is passed explicitly either way',
    ('sidrec.models.tiger.xǁ_FeedForwardǁforward', 'return self.wo(dropout(F.relu(self.wi(x), inplace=None), self.p, self.training))'):
        "in place or not, relu gives the same values (`wi`'s output is a fresh tensor nothing else reads)",
    ('sidrec.models.tiger.xǁ_FeedForwardǁforward', 'return self.wo(dropout(F.relu(self.wi(x), ), self.p, self.training))'):
        "in place or not, relu gives the same values (`wi`'s output is a fresh tensor nothing else reads)",
    ('sidrec.models.tiger.xǁ_FeedForwardǁforward', 'return self.wo(dropout(F.relu(self.wi(x), inplace=False), self.p, self.training))'):
        "in place or not, relu gives the same values (`wi`'s output is a fresh tensor nothing else reads)",
    ('sidrec.models.tiger.xǁTigerDecodeStateǁ__init__', 'self.caches = [_BeamKV(self_bias.shape[-2]) for _ in mem_kv]'):
        'the self-attention bias is square `[1, H, T, T]`',
    ('sidrec.models.tiger.xǁTIGERǁ_memory', 'n_hist = attention_mask.sum(1, keepdim=True) / self.n_levels'):
        'a mask holds n_levels tokens per item: the true division is exact and compares as the floor does',
    ('sidrec.models.tiger.xǁTIGERǁloss', 'loss_sum = F.cross_entropy(logits.flatten(0, -2), labels.flatten(), reduction="sum", )'):
        "cross_entropy's default ignore_index is -100 = IGNORE",
    ('sidrec.models.tiger.x__as_csr', 'indptr, indices = (torch.as_tensor(a, dtype=None) for a in sequences)'):
        'integer inputs stay integer (int64 for Python ints; an int32 tensor indexes alike); no items at all is refused as "nothing to predict" before any index is read',
    ('sidrec.models.tiger.x__as_csr', 'indptr, indices = (torch.as_tensor(a, ) for a in sequences)'):
        'integer inputs stay integer (int64 for Python ints; an int32 tensor indexes alike); no items at all is refused as "nothing to predict" before any index is read',
    ('sidrec.models.tiger.x__as_csr', 'lengths = torch.tensor([len(s) for s in sequences], dtype=None)'):
        'integer inputs stay integer (int64 for Python ints; an int32 tensor indexes alike); no items at all is refused as "nothing to predict" before any index is read',
    ('sidrec.models.tiger.x__as_csr', 'lengths = torch.tensor([len(s) for s in sequences], )'):
        'integer inputs stay integer (int64 for Python ints; an int32 tensor indexes alike); no items at all is refused as "nothing to predict" before any index is read',
    ('sidrec.models.tiger.x__as_csr', 'indices = torch.tensor([i for s in sequences for i in s], dtype=None)'):
        'integer inputs stay integer (int64 for Python ints; an int32 tensor indexes alike); no items at all is refused as "nothing to predict" before any index is read',
    ('sidrec.models.tiger.x__as_csr', 'indices = torch.tensor([i for s in sequences for i in s], )'):
        'integer inputs stay integer (int64 for Python ints; an int32 tensor indexes alike); no items at all is refused as "nothing to predict" before any index is read',
    ('sidrec.models.tiger.x__as_csr', 'indptr = torch.cat([torch.zeros(2, dtype=torch.long), lengths.cumsum(0)])'):
        'prepends one empty user, who has no target: every other user keeps its own range',
    ('sidrec.models.tiger.x_tiger_batches', 'batch_size: int = 257,'):
        "a keyword default the package's one caller (`TIGER.make_batches`) always passes",
    ('sidrec.models.tiger.x_tiger_batches', 'max_history: int = 21,'):
        "a keyword default the package's one caller (`TIGER.make_batches`) always passes",
    ('sidrec.models.tiger.x_tiger_batches', 'length_buckets: bool = True,'):
        "a keyword default the package's one caller (`TIGER.make_batches`) always passes",
    ('sidrec.models.tiger.x_tiger_batches', 'item_tokens = torch.as_tensor(item_tokens, dtype=None)'):
        '`SemanticIDs.tokens()` is int64 already',
    ('sidrec.models.tiger.x_tiger_batches', 'item_tokens = torch.as_tensor(item_tokens, )'):
        '`SemanticIDs.tokens()` is int64 already',
    ('sidrec.models.tiger.x_tiger_batches', 'eos = torch.full((1, 1), EOS_TOKEN, dtype=None)'):
        '`torch.full` of an int fill value is int64 already',
    ('sidrec.models.tiger.x_tiger_batches', 'eos = torch.full((1, 1), EOS_TOKEN, )'):
        '`torch.full` of an int fill value is int64 already',
    ('sidrec.models.tiger.x_tiger_batches', 'window = indices[torch.minimum(pos, g[:, None] - 1)].masked_fill(pos >= g[:, None], -2)'):
        '`history_tokens` reads every negative id as "no item"',
    ('sidrec.models.tiger.x_tiger_window_batches', 'batch_size: int = 129) -> Callable[[int, torch.Generator], Iterator[dict[str, torch.Tensor]]]:'):
        "a keyword default the package's one caller (`TIGER.make_batches`) always passes",
    ('sidrec.models.tiger.x_tiger_window_batches', 'item_tokens = torch.as_tensor(item_tokens, dtype=None)'):
        '`SemanticIDs.tokens()` is int64 already',
    ('sidrec.models.tiger.x_tiger_window_batches', 'item_tokens = torch.as_tensor(item_tokens, )'):
        '`SemanticIDs.tokens()` is int64 already',
    ('sidrec.models.asymrec.xǁAsymRecǁ__init__', 'self.register_buffer("code_mask", torch.arange(k_max) >= torch.tensor(sizes)[:, None], persistent=None)'):
        '`register_buffer` treats a falsy `persistent` as False: the buffer stays out of the state dict',
    ('sidrec.models.asymrec.xǁAsymRecǁ__init__', 'if dedup else torch.ones(n_codes), persistent=None)'):
        '`register_buffer` treats a falsy `persistent` as False: the buffer stays out of the state dict',
    ('sidrec.models.tiger.xǁTIGERǁ__init__', 'self.register_buffer("item_tokens", sids.tokens(), persistent=None)'):
        '`register_buffer` treats a falsy `persistent` as False: the buffer stays out of the state dict',
    ('sidrec.models.asymrec.xǁAsymRecǁ__init__', 'if o.inputs != "XXsidXX":'):
        'with SID inputs the heads then build a second `code_embedding` that replaces the first before any use: inputs and heads still read one shared (tied) table, only its random start differs',
    ('sidrec.models.asymrec.xǁAsymRecǁ__init__', 'if o.inputs != "SID":'):
        'with SID inputs the heads then build a second `code_embedding` that replaces the first before any use: inputs and heads still read one shared (tied) table, only its random start differs',
    ('sidrec.models.asymrec.xǁAsymRecǁ__init__', 'dedup = int(sids.info.get("dedup_level_size", 0)) > 1 and o.dedup_code == "ignore"'):
        '`dedup` records 0 unless some group holds 2 or more items, so a dedup level size of 1 never occurs',
    ('sidrec.models.base.x_model_options', 'raise ValueError("; ".join(f"{section}.{\'XX.XX\'.join(map(str, e[\'loc\']))}: {e[\'msg\']}" for e in exc.errors())) from exc'):
        'model options are flat: every error location has one element, so the separator is never written',
    ('sidrec.models.dropout.x_attention', 'scores = q @ k.transpose(-1, +2)'):
        'q and k are 4-D `[B, H, T, d]` at every call site: dim +2 is dim -2',
    ('sidrec.models.dropout.x_attention', 'if scale == 1.0:'):
        'every caller passes scale 1.0 (T5 attention is unscaled): multiplying or dividing by it, or skipping it, is the same',
    ('sidrec.models.dropout.x_attention', 'if scale != 2.0:'):
        'every caller passes scale 1.0 (T5 attention is unscaled): multiplying or dividing by it, or skipping it, is the same',
    ('sidrec.models.dropout.x_attention', 'scores = scores / scale'):
        'every caller passes scale 1.0 (T5 attention is unscaled): multiplying or dividing by it, or skipping it, is the same',
    ('sidrec.models.dropout.x_attention', 'if not training and p == 0.0:'):
        'the materialised path computes the same softmax(q k + bias) v as SDPA (dropout is the identity out of training or at p = 0; p = 1 is refused by `dropout`)',
    ('sidrec.models.dropout.x_attention', 'if not training or p == 1.0:'):
        'the materialised path computes the same softmax(q k + bias) v as SDPA (dropout is the identity out of training or at p = 0; p = 1 is refused by `dropout`)',
    ('sidrec.models.dropout.x_dropout', 'if not 0.0 < p < 1.0:'):
        'p = 0 returns before this check',
    ('sidrec.models.tiger.xǁTIGERǁstart', 'return TigerDecodeState(mem_kv, mem_mask, self._decoder_bias(self.n_levels + 2, input_ids.device))'):
        'one row and column more of the causal bias: step reads rows 0 .. n_levels only, and the KV caches have room to spare',
    ('sidrec.models.tiger.xǁTIGERǁ_memory', 'item = torch.arange(attention_mask.shape[1], device=attention_mask.device) / self.n_levels'):
        'compared against whole item counts: i / L >= n holds exactly when i // L >= n for integers i, n',
    ('sidrec.models.tiger.xǁTIGERǁ_window_logits', 'bias = self._decoder_bias(T, None)'):
        'CPU only here (no accelerator to place it on)',
    ('sidrec.models.tiger.xǁTIGERǁforward', 'bias = self._decoder_bias(decoder_input_ids.shape[1], None)'):
        'CPU only here (no accelerator to place it on)',
    ('sidrec.models.tiger.xǁTIGERǁstart', 'return TigerDecodeState(mem_kv, mem_mask, self._decoder_bias(self.n_levels + 1, None))'):
        'CPU only here (no accelerator to place it on)',
    ('sidrec.models.tiger.xǁ_Attentionǁ__init__', 'self.k = nn.Linear(cfg.d_model, inner, bias=None)'):
        '`nn.Linear` treats a falsy bias as no bias',
    ('sidrec.models.tiger.xǁ_Attentionǁ__init__', 'self.v = nn.Linear(cfg.d_model, inner, bias=None)'):
        '`nn.Linear` treats a falsy bias as no bias',
    ('sidrec.models.tiger.xǁ_Attentionǁ__init__', 'self.o = nn.Linear(inner, cfg.d_model, bias=None)'):
        '`nn.Linear` treats a falsy bias as no bias',
    ('sidrec.models.tiger.xǁ_Attentionǁ__init__', 'self.q = nn.Linear(cfg.d_model, inner, bias=None)'):
        '`nn.Linear` treats a falsy bias as no bias',
    ('sidrec.models.tiger.xǁ_FeedForwardǁ__init__', 'self.wo = nn.Linear(cfg.d_ff, cfg.d_model, bias=None)'):
        '`nn.Linear` treats a falsy bias as no bias',
    ('sidrec.models.tiger.xǁ_FeedForwardǁ__init__', 'self.wi = nn.Linear(cfg.d_model, cfg.d_ff, bias=None)'):
        '`nn.Linear` treats a falsy bias as no bias',
    ('sidrec.models.tiger.xǁTIGERǁ_decoder_bias', 'bias = self.dec_rel_bias(relative_position_buckets(rel, None, cfg.rel_buckets, cfg.rel_max_distance))'):
        'a falsy `bidirectional` is False',
    ('sidrec.models.tiger.xǁTIGERǁ_init_weights', 'nn.init.normal_(self.embed.weight, )'):
        "`normal_`'s default std is 1.0, the value written",
    ('sidrec.models.tiger.xǁTIGERǁ_histories', 'histories = torch.as_tensor(histories, dtype=None, device=self.item_tokens.device)'):
        "histories are int64 already (the dataset's tensors, or Python ints)",
    ('sidrec.models.tiger.xǁTIGERǁ_histories', 'histories = torch.as_tensor(histories, device=self.item_tokens.device)'):
        "histories are int64 already (the dataset's tensors, or Python ints)",
    ('sidrec.models.tiger.x_history_tokens', 'width = max(int(mask.sum(1).max()), 2)'):
        'the floor only binds when every row is empty, which `_histories` refuses first',
    ('sidrec.models.tiger.x_relative_position_buckets', 'return offset + torch.where(dist <= n_exact, dist, far)'):
        'at dist = n_exact the far formula gives n_exact too (log 1 = 0)',
    ('sidrec.models.tiger.x_relative_position_buckets', 'log_ratio = torch.log(dist.clamp(min=2).float() / n_exact) / math.log(max_distance / n_exact)'):
        'the far branch only reads dist >= n_exact; dist 1 gets there only at n_exact 1, where the log term truncates to the same bucket (equal to transformers at 4 buckets, tested)',
    ('sidrec.models.tiger.xǁTIGERǁencoder_inputs', 'window = histories.gather(1, pos.clamp(max=histories.shape[1] + 1))'):
        'the clamp never binds: pos <= max(lengths - m, 0) + m - 1 <= width - 1',
    ('sidrec.models.tiger.xǁTIGERǁencoder_inputs', 'window = window.masked_fill(pos > lengths[:, None], -1)'):
        'at pos == lengths the gathered history already holds its padding -1',
    ('sidrec.models.tiger.xǁTIGERǁencoder_inputs', 'window = window.masked_fill(pos >= lengths[:, None], -2)'):
        '`history_tokens` reads every negative id as "no item"',
    ('sidrec.models.causal.x_last_states', 'return states[torch.arange(len(histories), device=states.device), (lengths - 1).clamp(min=1)]'):
        'the clamp only moves rows without any item (length 0), whose "last state" is padding either way',
    ('sidrec.models.causal.xǁCausalEncoderǁforward', 'causal = torch.triu(torch.full((steps, steps), float("-INF"), device=x.device), diagonal=1)'):
        "`float('-INF')` is `float('-inf')`",
    ('sidrec.models.base.xǁRecommenderǁload', 'raise ArtifactError(None) from exc'):
        "not equivalent but killed: tests/models/test_base.py::test_load_names_the_file_and_what_does_not_match fails on it when run by hand (sed + pytest); mutmut 3.8.1's per-function selection did not run it for `load`",
    ('sidrec.models.tiger.x__additive', 'return torch.zeros(mask.shape, dtype=None, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)'):
        "the mask's dtype is the residual stream's, float32 on every supported path (weights stay fp32, bf16 is autocast), so the default float32 is the same tensor; a model cast to bf16 by hand recommends the same items and scores with it (checked by hand)",
    ('sidrec.models.tiger.x__additive', 'return torch.zeros(mask.shape, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)'):
        "as `dtype=None`: the default dtype is float32, the residual stream's on every supported path",
    ('sidrec.models.tiger.xǁTIGERǁmake_batches', 'max_history=self.config.max_history,'):
        "not equivalent but killed since: tests/models/test_tiger.py::test_sampled_prefix_model_batches_train_one_transition_per_user_per_epoch (added after the last recheck) fails on it when run by hand (sed + pytest)",
    ('sidrec.models.dropout.x_attention', 'scores = None'):
        "not equivalent but killed: tests/models/test_dropout.py fails on it when run by hand (sed + pytest); mutmut 3.8.1's per-function selection did not run that file for `attention`",
    ('sidrec.models.asymrec.xǁAsymRecǁcode_log_probs', 'return torch.log_softmax(logits.masked_fill(self.code_mask, float("-INF")), dim=-1)'):
        "`float('-INF')` is `float('-inf')`",
    ('sidrec.models.asymrec.xǁMultiExpertProjectionǁgates', 'return torch.softmax(self.gate(x), dim=+1)'):
        'the gate reads `[n, d]` rows (item_inputs): dim +1 is dim -1',
    ('sidrec.models.tiger.x_tiger_window_batches', 'eos = torch.full((1, 1, 1), EOS_TOKEN, dtype=None)'):
        '`torch.full` of an int fill value is int64 already',
    ('sidrec.models.tiger.x_tiger_window_batches', 'eos = torch.full((1, 1, 1), EOS_TOKEN, )'):
        'the same: an int fill value gives int64',
    ('sidrec.models.tiger.xǁTIGERǁ_window_logits', "mem_mask = _additive(reads, mem_kv[1][0].dtype)[:, None]"):
        "every decoder layer's memory keys and values share one dtype (one encoder output)",
    ('sidrec.models.tiger.xǁTIGERǁ_window_logits', "mem_mask = _additive(reads, mem_kv[0][1].dtype)[:, None]"):
        "keys and values of the memory share one dtype",
}


def configure(scratch: Path, scope: Scope) -> None:
    deselect = [arg for test in scope.deselect for arg in ("--deselect", test)]
    with open(scratch / "pyproject.toml", "a") as f:
        f.write("\n[tool.mutmut]\nsource_paths = [\"src/\"]\n"
                f"only_mutate = {json.dumps(scope.files)}\npytest_add_cli_args_test_selection = {json.dumps(scope.tests)}\n"
                f'pytest_add_cli_args = {json.dumps(["-p", "no:cacheprovider", "-x", *deselect])}\n')


def mutmut(scratch: Path, *args: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([str(Path(sys.executable).with_name("mutmut")), *args], cwd=scratch, env=env,
                          capture_output=True, text=True)
    if done.returncode not in (0, 1):
        raise SystemExit(f"mutmut {' '.join(args)} failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return done.stdout


def mutated_line(diff: str, sign: str = "+") -> str:
    """The `+` line of a mutant's diff (what the mutant wrote; `-`: what it replaced), stripped."""
    lines = [line[1:].strip() for line in diff.splitlines() if line.startswith(sign) and not line.startswith(sign * 3)]
    return " / ".join(lines)


def generic_equivalence(was: str, line: str) -> str | None:
    """Why a mutant of a kind that never changes a result here is not a gap (None: judge it one by one)."""
    if only_moves_the_device(was, line):
        return "CPU only here (no accelerator to place it on)"
    if only_recases_an_einsum(was, line):
        return "einsum subscripts are case-sensitive letters only: the upper-case equation is the same contraction"
    return None


def only_moves_the_device(was: str, line: str) -> bool:
    """The mutant drops a `device=` argument or sets it to None, and changes nothing else: on a CPU-only
    machine every tensor lands on the CPU either way."""
    def strip(text: str) -> str:
        return re.sub(r",\s*\)", ")", re.sub(r",?\s*device=[\w.\[\]]+", "", text)).replace(" ", "")
    return "device=" in was and was != line and strip(was) == strip(line)


def only_recases_an_einsum(was: str, line: str) -> bool:
    """The mutant upper-cases an einsum equation and changes nothing else: the same contraction."""
    return any(was.replace(f'"{eq}"', f'"{eq.upper()}"') == line != was
               for eq in re.findall(r'einsum\("([a-z,\->. ]+)"', was))


def run(scope: Scope, max_children: int, only: list[str] | None = None) -> dict:
    """mutmut over the scope (or only the mutants named in `only`); the status and mutated line of each not killed."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sidrec-mutmut-") as tmp:
        scratch = Path(tmp)
        scratch_copy(scratch)
        configure(scratch, scope)
        mutmut(scratch, "run", "--max-children", str(max_children), *(only or []))
        statuses = dict(re.findall(r"^\s*(\S+): (.+)$", mutmut(scratch, "results", "--all", "true"), re.MULTILINE))
        if only is not None:
            statuses = {name: statuses[name] for name in only}
        diffs = {name: mutmut(scratch, "show", name)
                 for name, status in statuses.items() if status != "killed" or only is not None}
    shown = {name: mutated_line(diff) for name, diff in diffs.items()}
    survivors = [{"name": name, "function": name.split("__mutmut_")[0], "status": status, "line": shown[name],
                  "was": mutated_line(diffs[name], "-")} for name, status in statuses.items() if status != "killed"]
    return {"statuses": Counter(statuses.values()), "total": len(statuses), "survivors": survivors,
            "seconds": round(time.perf_counter() - start), "max_children": max_children,
            **({"lines": shown} if only is not None else {})}


def recheck(saved: dict, scope: Scope, max_children: int, meta: dict) -> dict:
    """Rerun only a saved run's survivors against the tests as they are now (tests written for them), keeping
    every other mutant's status; refused if the source moved (a mutant's number would name another change)."""
    previous = saved["result"]
    names = [s["name"] for s in previous["survivors"]]
    again = run(scope, max_children, only=names)
    moved = [s["name"] for s in previous["survivors"] if again["lines"][s["name"]] != s["line"]]
    if moved:
        raise SystemExit(f"the source changed since the saved run ({len(moved)} mutants now mutate other lines, e.g. "
                         f"{moved[0]}): run in full instead of --recheck")
    statuses = Counter(previous["statuses"]) - Counter(s["status"] for s in previous["survivors"]) + again["statuses"]
    checks = [*saved["meta"].get("rechecks", []),
              {"commit": meta["commit"], "date": meta["date"], "mutants": len(names), "seconds": again["seconds"],
               "killed": again["statuses"].get("killed", 0)}]
    return {"meta": {**saved["meta"], "rechecks": checks},
            "result": {**previous, "statuses": statuses, "survivors": again["survivors"]}}


def render(result: dict, meta: dict, scope: Scope) -> str:
    rows = [{**s, "why": EQUIVALENT.get((s["function"], s["line"])) or generic_equivalence(s.get("was", ""), s["line"])}
            for s in result["survivors"]]
    core = [r for r in rows if r["function"] not in SKIP]
    open_rows = [r for r in core if r["why"] is None]
    by_hand = [r for r in core if (r["why"] or "").startswith("not equivalent but killed")]
    killed = result["statuses"].get("killed", 0)
    by_status = ", ".join(f"{status} {n}" for status, n in sorted(result["statuses"].items()))
    left_out = (" Left out for their cost: " + ", ".join(f"`{t}`" for t in scope.deselect) + ".") if scope.deselect else ""
    lines = [f"# mutmut over {scope.title} (`benchmarks/mutation_tool.py`)", "",
             f"Regenerated by the script. mutmut 3.8.1, commit {meta['commit']}, {meta['date']}, {meta['cpu']}, Python "
             f"{meta['python']}; {result['seconds']} s with {result['max_children']} worker(s). Files: "
             + ", ".join(f"`{p.removeprefix('src/sidrec/')}`" for p in scope.files) + "; tests: " + " ".join(scope.tests)
             + "." + left_out + "".join(
                 f" Rechecked at {c['commit']} ({c['date']}, `--recheck`): the {c['mutants']} mutants not killed before, rerun "
                 f"against that commit's tests: {c['killed']} killed, {c['seconds']} s." for c in meta.get("rechecks", [])),
             "",
             f"**Score: {killed} / {result['total']} killed** ({by_status}). In the defining code: {len(core)} not "
             f"killed, {len(core) - len(open_rows) - len(by_hand)} justified as equivalent, {len(by_hand)} killed when run by "
             f"hand (mutmut did not select the test that kills it), **{len(open_rows)} open** (a test gap until "
             f"killed or justified). Outside it ({', '.join(sorted({SKIP.get(r['function']) for r in rows} - {None}))}: functions tested by "
             f"suites outside this selection): {len(rows) - len(core)} not killed, listed last.", "",
             "| function | mutated line | status | why it is not a gap |", "|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["function"] in SKIP, r["why"] is not None, r["function"], r["name"])):
        why = r["why"] or (f"outside the defining code: {SKIP[r['function']]}" if r["function"] in SKIP else "**open**")
        line = r["line"].replace("|", "\\|")
        lines.append(f"| `{r['function'].removeprefix('sidrec.')}` | `{line}` | {r['status']} | {why} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scope", choices=sorted(SCOPES), default="protocol", help="which files to mutate")
    parser.add_argument("--max-children", type=int, default=1, help="mutmut workers (1 leaves a core to a benchmark)")
    parser.add_argument("--out", type=Path, help="results path without suffix (default: the scope's)")
    parser.add_argument("--render-only", action="store_true", help="rewrite the table from the saved json")
    parser.add_argument("--recheck", action="store_true",
                        help="rerun only the saved run's survivors against the current tests, keep the other statuses")
    args = parser.parse_args()
    scope = SCOPES[args.scope]
    out = args.out or scope.out
    if args.render_only:
        saved = read_json(out.with_suffix(".json"))
        result, meta = saved["result"], saved["meta"]
    elif args.recheck:
        saved = recheck(read_json(out.with_suffix(".json")), scope, args.max_children, run_facts(*CODE))
        write_json(out.with_suffix(".json"), saved)
        result, meta = saved["result"], saved["meta"]
    else:
        meta, result = run_facts(*CODE), run(scope, args.max_children)
        write_json(out.with_suffix(".json"), {"meta": meta, "result": result})
    text = render(result, meta, scope)
    with atomic_path(out.with_suffix(".md")) as tmp:
        tmp.write_text(text)
    print(text[:2000])


if __name__ == "__main__":
    main()
