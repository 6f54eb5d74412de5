"""AsymRec: continuous item embeddings in (MSP), many discrete codes out (MHQ targets).

Input side: each history item enters as its semantic embedding x through a multi-expert projection
h = sum_e softmax(gate(x))_e * Expert_e(x) (+ positions). There is no per-item ID table, so a rare item
is represented exactly as well as a frequent one. A causal Transformer reads the sequence and, at
every position, predicts all P = M x L codes of the next item in parallel (one head per code
position). An item's score is the sum of its codes' log-probabilities: ranked exactly over the
catalogue (one sparse product with the item x code incidence matrix, never users x items x codes),
or by a beam over code positions constrained to catalogue prefixes.

Ablations (Options): `inputs="sid"` (symmetric: an item enters as the sum of learned embeddings of
its own codes), `experts=1`, `targets="regression"` (predict the next item's embedding, rank by dot
product: the continuous-target setting whose hidden states `last_states` shows collapsing).
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from sidrec.decoding.trie import SIDTrie
from sidrec.features.embeddings import ItemEmbeddings
from sidrec.models.base import Recommender, evaluating, scores_top_k, truncate_histories
from sidrec.models.causal import CausalEncoder, CausalOptions, init_transformer_weights, last_states
from sidrec.models.sasrec import SASRec
from sidrec.semantic_ids import SemanticIDs


class AsymRecOptions(CausalOptions):
    inputs: Literal["msp", "sid"] = Field("msp", description="continuous embeddings via MSP, or SID-token sums")
    experts: int = Field(4, ge=1, description="MSP experts")
    expert_hidden: int = Field(128, ge=1, description="inner width of each 2-layer expert MLP")
    targets: Literal["mhq", "regression"] = Field("mhq", description="next item's codes, or its embedding")
    regression_loss: Literal["cosine", "mse"] = "cosine"
    head_type: Literal["linear", "rpg"] = Field("linear", description="linear: one untied linear head per code "
                                            "position; rpg: a residual MLP per position, cosine logits against "
                                            "the code embeddings (tied with the inputs when inputs=sid) / temperature")
    temperature: float = Field(0.07, gt=0, description="rpg heads: softmax temperature of the cosine logits")
    dedup_code: Literal["predict", "ignore"] = Field("predict", description="the extra level that numbers items "
                                                     "sharing a code: a target like any code, or left out of "
                                                     "loss and score (colliding items tie)")
    decode: Literal["exact", "beam"] = Field("exact", description="exact catalogue scoring or code-position beam")
    beam_width: int = Field(100, ge=1)


class MultiExpertProjection(nn.Module):
    """MSP: softmax-gated mixture of 2-layer MLP experts, all experts evaluated in one batched einsum."""

    def __init__(self, input_dim: int, hidden: int, out_dim: int, n_experts: int) -> None:
        super().__init__()
        self.gate = nn.Linear(input_dim, n_experts)
        self.w1 = nn.Parameter(torch.empty(n_experts, input_dim, hidden))
        self.b1 = nn.Parameter(torch.zeros(n_experts, hidden))
        self.w2 = nn.Parameter(torch.empty(n_experts, hidden, out_dim))
        self.b2 = nn.Parameter(torch.zeros(n_experts, out_dim))
        for w in (self.w1, self.w2):
            nn.init.normal_(w, std=w.shape[1] ** -0.5)

    def gates(self, x: torch.Tensor) -> torch.Tensor:
        """`[n, E]` expert weights (rows sum to 1)."""
        return torch.softmax(self.gate(x), dim=-1)

    def expert_outputs(self, x: torch.Tensor) -> torch.Tensor:
        """`[n, E, out]`: Expert_e(x) = W2_e gelu(W1_e x + b1_e) + b2_e."""
        inner = F.gelu(torch.einsum("nd,edh->neh", x, self.w1) + self.b1)
        return torch.einsum("neh,eho->neo", inner, self.w2) + self.b2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.gates(x)[..., None] * self.expert_outputs(x)).sum(dim=1)


def effective_rank(states: torch.Tensor) -> float:
    """exp(entropy of the normalised singular values) of `[n, h]` (mean-centred): 1 = collapsed to a line."""
    s = torch.linalg.svdvals((states - states.mean(0)).double())
    p = s / s.sum().clamp_min(1e-12)
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


class AsymRec(Recommender):
    name = "asymrec"
    Options = AsymRecOptions
    needs = ("embeddings", "sids")
    make_batches = SASRec.make_batches  # same whole-sequence windows: every position predicts its next item

    def __init__(self, options: AsymRecOptions, n_items: int, embeddings: ItemEmbeddings | torch.Tensor,
                 sids: SemanticIDs) -> None:
        """`embeddings` ([n_items, d]) feed MSP / regression; `sids` give the code targets (or SID inputs).
        Both are kept (and saved beside the weights by `save`), even when an ablation leaves one unused."""
        super().__init__(options, n_items)
        o = options
        if o.decode == "beam" and o.targets != "mhq":
            raise ValueError("model.decode='beam' needs discrete targets (model.targets='mhq')")
        vectors = getattr(embeddings, "vectors", embeddings)
        if not isinstance(vectors, torch.Tensor) or vectors.ndim != 2 or vectors.shape[0] != n_items:
            got = tuple(vectors.shape) if isinstance(vectors, torch.Tensor) else type(embeddings).__name__
            raise ValueError(f"embeddings: expected ItemEmbeddings or a tensor [n_items={n_items}, d], got {got}")
        if not isinstance(embeddings, ItemEmbeddings):
            embeddings = ItemEmbeddings(vectors.detach().cpu(), "tensor")
        if not isinstance(sids, SemanticIDs) or sids.n_items != n_items:
            raise ValueError(f"sids: expected SemanticIDs with one row per item ({n_items}), got "
                             f"{getattr(sids, 'n_items', type(sids).__name__)}")
        self.embeddings, self.sids = embeddings, sids
        sizes = self.codebook_sizes = [int(k) for k in sids.codebook_sizes]
        self.register_buffer("item_vectors", embeddings.vectors.clone(), persistent=False)
        self.register_buffer("item_codes", sids.codes.clone(), persistent=False)
        self.register_buffer("code_offsets", torch.tensor([0, *sizes[:-1]]).cumsum(0), persistent=False)
        if o.inputs == "msp":
            self.msp = MultiExpertProjection(embeddings.dim, o.expert_hidden, o.hidden, o.experts)
        else:
            self.code_embedding = nn.Embedding(sum(sizes), o.hidden)
        self.encoder = CausalEncoder.from_options(o)
        if o.targets == "mhq":
            k_max, n_codes = max(sizes), len(sizes)
            if o.head_type == "linear":
                self.code_heads = nn.Parameter(torch.randn(n_codes, k_max, o.hidden) * 0.02)  # one head per position
                self.code_bias = nn.Parameter(torch.zeros(n_codes, k_max))
            else:  # RPG: h_p = s + MLP_p(s); logit = cos(h_p, e_p,k) / temperature
                self.head_w1 = nn.Parameter(torch.randn(n_codes, o.hidden, o.hidden) * o.hidden ** -0.5)
                self.head_b1 = nn.Parameter(torch.zeros(n_codes, o.hidden))
                self.head_w2 = nn.Parameter(torch.zeros(n_codes, o.hidden, o.hidden))  # starts as the identity map
                if o.inputs != "sid":
                    self.code_embedding = nn.Embedding(sum(sizes), o.hidden)
            self.register_buffer("code_mask", torch.arange(k_max) >= torch.tensor(sizes)[:, None], persistent=False)
            dedup = int(sids.info.get("dedup_level_size", 0)) > 0 and o.dedup_code == "ignore"
            self.register_buffer("code_weights", torch.ones(n_codes).index_fill_(0, torch.tensor([n_codes - 1]), 0.0)
                                 if dedup else torch.ones(n_codes), persistent=False)
        else:
            self.regression_head = nn.Linear(o.hidden, embeddings.dim)
        self.apply(init_transformer_weights)
        self._trie: SIDTrie | None = None
        self._incidence: torch.Tensor | None = None

    # ----- encoder -----------------------------------------------------------------------------------
    def item_inputs(self, items: torch.Tensor) -> torch.Tensor:
        """`[n, hidden]` input vectors of item indices `[n]` (MSP of the embedding, or summed code embeddings)."""
        if self.options.inputs == "msp":
            return self.msp(self.item_vectors[items])
        return self.code_embedding(self.item_codes[items] + self.code_offsets).sum(dim=1)

    def hidden_states(self, histories: torch.Tensor) -> torch.Tensor:
        """`[B, T, hidden]` causal states for left-aligned, -1 padded item sequences."""
        unique, inverse = torch.unique(histories.clamp(min=0), return_inverse=True)  # each item projected once
        return self.encoder(self.item_inputs(unique)[inverse])

    def last_states(self, histories: torch.Tensor) -> torch.Tensor:
        """`[B, hidden]` output state at each user's last item (what the heads read; for effective rank)."""
        histories = truncate_histories(histories, self.options.max_len)
        return last_states(self.hidden_states(histories), histories)

    @torch.no_grad()
    def diagnostics(self, dataset: Any, max_len: int) -> dict[str, float]:
        """Effective rank of the output states at the validation histories: the collapse claim (discrete MHQ
        targets keep it higher than regression onto the embeddings)."""
        _, histories, _ = dataset.split("valid", max_len)
        with evaluating(self):
            states = torch.cat([self.last_states(h) for h in histories.split(1024)])
        return {"effective_rank": effective_rank(states)}

    # ----- heads -------------------------------------------------------------------------------------
    def code_log_probs(self, states: torch.Tensor) -> torch.Tensor:
        """`[N, P, K_max]` log-probabilities of every code at every position (-inf beyond a position's K)."""
        if self.options.head_type == "linear":
            logits = torch.einsum("nh,pkh->npk", states, self.code_heads) + self.code_bias
        else:
            inner = F.gelu(torch.einsum("nh,phd->npd", states, self.head_w1) + self.head_b1)
            query = states[:, None, :] + torch.einsum("npd,pdh->nph", inner, self.head_w2)
            logits = torch.einsum("nph,pkh->npk", F.normalize(query, dim=-1),
                                  F.normalize(self.code_table(), dim=-1)) / self.options.temperature
        return torch.log_softmax(logits.masked_fill(self.code_mask, float("-inf")), dim=-1)

    def code_table(self) -> torch.Tensor:
        """`[P, K_max, hidden]` code embeddings, one row per (position, code); zero rows beyond a position's K."""
        k_max = self.code_mask.shape[1]
        index = (self.code_offsets[:, None] + torch.arange(k_max, device=self.code_offsets.device)).clamp(
            max=self.code_embedding.num_embeddings - 1)
        return self.code_embedding(index).masked_fill(self.code_mask[..., None], 0.0)

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        states = self.hidden_states(batch["inputs"])
        targets = batch["targets"]
        valid = targets >= 0
        states, targets = states[valid], targets[valid]
        if self.options.targets == "regression":
            pred, true = self.regression_head(states), self.item_vectors[targets]
            if self.options.regression_loss == "cosine":
                per_item = 1 - F.cosine_similarity(pred, true, dim=-1)
            else:
                per_item = (pred - true).pow(2).mean(-1)
            return per_item.sum(), valid.sum()
        log_probs = self.code_log_probs(states)  # [N, P, K]
        nll = -log_probs.gather(2, self.item_codes[targets][..., None]).squeeze(2)  # [N, P]
        return (nll * self.code_weights).sum(1).div(self.code_weights.sum()).sum(), valid.sum()

    # ----- ranking -----------------------------------------------------------------------------------
    @torch.no_grad()
    def item_scores(self, histories: torch.Tensor) -> torch.Tensor:
        """`[B, n_items]` exact scores: sum of each item's code log-probs (regression: dot product)."""
        states = self.last_states(histories)
        if self.options.targets == "regression":
            return self.regression_head(states) @ self.item_vectors.T
        log_probs = self.code_log_probs(states)
        log_probs = (log_probs.masked_fill(log_probs.isinf(), 0) * self.code_weights[:, None]).flatten(1)  # [B, P * K]
        with torch.autocast(log_probs.device.type, enabled=False):  # no bf16 sparse kernel (eval.precision=bf16)
            return (self.code_incidence @ log_probs.float().T).T

    @torch.no_grad()
    def item_code_log_probs(self, histories: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """`[B, k, P]` log-probability of each of each item's codes given the history (the heads are
        independent, so an item's exact score is their weighted sum; the report's user inspector)."""
        if self.options.targets != "mhq":
            raise ValueError("code log-probabilities need discrete targets (model.targets='mhq')")
        log_probs = self.code_log_probs(self.last_states(histories))  # [B, P, K]
        codes = self.item_codes[items.clamp(min=0)]  # [B, k, P]
        return log_probs[:, None].expand(-1, items.shape[1], -1, -1).gather(3, codes[..., None])[..., 0]

    @property
    def code_incidence(self) -> torch.Tensor:
        """Sparse `[n_items, P * K_max]` 0/1 matrix, row i = item i's code at every position (built once).

        Exact scoring is then one sparse-dense product: 25x faster than gathering `[B, items, P]` on
        Beauty (22k users in ~1 s on 2 cores) and its memory is that of the scores alone.
        """
        device = self.item_codes.device
        if self._incidence is None or self._incidence.device != device:
            n_items, n_codes = self.item_codes.shape
            k_max = self.code_mask.shape[1]
            columns = (self.item_codes + torch.arange(n_codes, device=device) * k_max).flatten()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
                self._incidence = torch.sparse_csr_tensor(
                    torch.arange(0, n_items * n_codes + 1, n_codes, device=device), columns,
                    torch.ones(n_items * n_codes, device=device), (n_items, n_codes * k_max), check_invariants=True)
        return self._incidence

    @property
    def trie(self) -> SIDTrie:
        """Prefix trie of the item code table (built on first use; codes must be unique, e.g. dedup-resolved)."""
        if self._trie is None or self._trie.children[0].device != self.item_codes.device:
            self._trie = SIDTrie(self.item_codes.cpu(), self.codebook_sizes).to(self.item_codes.device)
        return self._trie

    @torch.no_grad()
    def beam_top_k(self, histories: torch.Tensor, k: int, beam_width: int | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k items by a beam over code positions, kept on catalogue prefixes (trie), best first.

        The heads are independent given the state, so a prefix's score is the sum of its codes' log-probs;
        with beam_width >= n_items the search is exhaustive and equals exact scoring.
        """
        if self.options.targets != "mhq":
            raise ValueError("beam decoding needs discrete targets (model.targets='mhq')")
        beam_width = beam_width or self.options.beam_width
        if not 0 < k <= min(beam_width, self.n_items):
            raise ValueError(f"k ({k}) must be in [1, min(beam_width={beam_width}, n_items={self.n_items})]")
        log_probs = self.code_log_probs(self.last_states(histories))
        trie, batch = self.trie, len(histories)
        nodes = torch.zeros(batch, 1, dtype=torch.long, device=log_probs.device)
        scores = torch.zeros(batch, 1, device=log_probs.device)
        for position, size in enumerate(self.codebook_sizes):
            children = trie.next_nodes(position, nodes.clamp(min=0))  # [B, w, K]; -1 = off the catalogue
            cand = scores[..., None] + log_probs[:, position, None, :size] * self.code_weights[position]
            cand = cand.masked_fill(children < 0, float("-inf")).flatten(1)
            scores, flat = cand.topk(min(beam_width, cand.shape[1]), dim=1)
            nodes = children.flatten(1).gather(1, flat)
        return nodes[:, :k], scores[:, :k]  # topk keeps beams sorted, best first

    def recommend(self, histories: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.options.decode == "beam":
            return self.beam_top_k(histories, k)
        return scores_top_k(self.item_scores(histories), k)
