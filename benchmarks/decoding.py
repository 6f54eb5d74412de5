"""Constrained beam search latency: sidrec's batched decoder vs Hugging Face `generate`.

Same network on both sides (TIGER-paper T5: 4+4 layers, d_model 128, 6 heads, d_ff 1024, exported
1:1 with `TIGER.to_hf()`), a 12,101-item catalogue with unique 4-token codes (3 random levels x
256 + a dedup level), 80 input tokens (20 history items), 20 beams, 20 items returned. HF uses
`prefix_allowed_tokens_fn` over a Python dict trie. Weights are random (T5 initialisation, not
trained): latency does not depend on them, and both decoders must still agree on the top-10.

    python benchmarks/decoding.py [--threads 2] [--hf-users 256]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path


import torch  # noqa: E402

from sidrec.io import atomic_path, write_json  # noqa: E402
from sidrec.models import build_model  # noqa: E402
from sidrec.semantic_ids import SemanticIDs  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def random_catalogue(n_items: int, levels: int, size: int, generator: torch.Generator) -> SemanticIDs:
    """Random codes plus a dedup level numbering the items that share them (0, 1, 2, ...)."""
    codes = torch.randint(0, size, (n_items, levels), generator=generator)
    _, group = torch.unique(codes, dim=0, return_inverse=True)
    order = torch.argsort(group, stable=True)
    starts = torch.ones(n_items, dtype=torch.bool)
    starts[1:] = group[order][1:] != group[order][:-1]
    pos = torch.arange(n_items)
    dedup = torch.empty(n_items, dtype=torch.long)
    dedup[order] = pos - torch.cummax(torch.where(starts, pos, 0), 0).values
    return SemanticIDs(torch.cat([codes, dedup[:, None]], 1), [size] * levels + [int(dedup.max()) + 1], "dedup")


def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def hf_generate(hf, allowed: dict, ids, mask, beams: int, k: int, n_levels: int):
    return hf.generate(
        input_ids=ids, attention_mask=mask.long(), num_beams=beams, num_return_sequences=k, do_sample=False,
        max_new_tokens=n_levels + 1, prefix_allowed_tokens_fn=lambda b, s: allowed.get(tuple(s[1:].tolist()), [0]),
    )


def summary(per_user_ms: list[float]) -> dict:
    qs = sorted(per_user_ms)
    return {
        "p50_ms_per_user": round(statistics.median(qs), 3),
        "p99_ms_per_user": round(qs[min(len(qs) - 1, int(0.99 * len(qs)))], 3),
        "users_per_s": round(1000.0 / statistics.mean(qs), 1),
        "samples": len(qs),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-items", type=int, default=12101)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--beams", type=int, default=20)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--b1-users", type=int, default=50, help="users timed one at a time (ours)")
    ap.add_argument("--big-batches", type=int, default=4, help="timed batches of --batch users (ours)")
    ap.add_argument("--hf-b1-users", type=int, default=10)
    ap.add_argument("--hf-users", type=int, default=256, help="users in HF's one timed large batch")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import transformers

    g = torch.Generator().manual_seed(args.seed)
    sids = random_catalogue(args.n_items, 3, 256, g)
    torch.manual_seed(args.seed)
    model = build_model("tiger", {"preset": "paper"}, sids.n_items, sids=sids).eval()
    hf = model.to_hf()
    n_params = sum(p.numel() for p in model.parameters())
    n_users = max(args.batch * args.big_batches, args.b1_users)
    histories = torch.randint(0, sids.n_items, (n_users, 20), generator=g)
    ids, mask = model.encoder_inputs(histories)
    allowed: dict[tuple, list] = {}
    for row in sids.tokens().tolist():
        for level in range(len(row)):
            allowed.setdefault(tuple(row[:level]), []).append(row[level])
        allowed.setdefault(tuple(row), []).append(1)
    allowed = {p: sorted(set(v)) for p, v in allowed.items()}

    def ours(lo: int, hi: int):
        return model.recommend(histories[lo:hi], args.k, beam_width=args.beams, batch_size=hi - lo)

    ours(0, 8)  # warm-up
    b1 = [timed(ours, u, u + 1)[1] * 1000 for u in range(args.b1_users)]
    big, big_items = [], []
    for i in range(args.big_batches):
        (items, _), dt = timed(ours, i * args.batch, (i + 1) * args.batch)
        big.append(dt * 1000 / args.batch)
        big_items.append(items)
    ours_items = torch.cat(big_items)

    with torch.no_grad():
        hf_generate(hf, allowed, ids[:1], mask[:1], args.beams, args.k, sids.n_levels)  # warm-up
        hf_b1 = [
            timed(hf_generate, hf, allowed, ids[u : u + 1], mask[u : u + 1], args.beams, args.k, sids.n_levels)[1] * 1000
            for u in range(args.hf_b1_users)
        ]
        out, dt = timed(hf_generate, hf, allowed, ids[: args.hf_users], mask[: args.hf_users], args.beams, args.k, sids.n_levels)
    hf_big = [dt * 1000 / args.hf_users]
    hf_items = model.trie.lookup(out[:, 1 : 1 + sids.n_levels] - sids.offsets).view(args.hf_users, args.k)
    same_top10 = (hf_items[:, :10] == ours_items[: args.hf_users, :10]).all(1)

    result = {
        "benchmark": "trie-constrained beam search, TIGER-paper T5",
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "seed": args.seed,
        "data": f"random catalogue: {sids.n_items} items, codes 3 x 256 random + dedup level "
        f"(size {sids.codebook_sizes[-1]}), random histories of 20 items (80 input tokens); random-init weights",
        "model": {"preset": "paper", "parameters": n_params, **{k: v for k, v in vars(model.config).items()}},
        "beams": args.beams, "k": args.k, "threads": args.threads,
        "machine": f"{platform.machine()} {torch.get_num_threads()} threads, load avg {Path('/proc/loadavg').read_text().split()[:3]}",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "sidrec": {"batch_1": summary(b1), f"batch_{args.batch}": summary(big)},
        "hf_generate": {"batch_1": summary(hf_b1), f"batch_{args.hf_users}": summary(hf_big)},
        "same_top10_users": f"{int(same_top10.sum())}/{args.hf_users}",
    }
    s_b1, h_b1 = result["sidrec"]["batch_1"], result["hf_generate"]["batch_1"]
    s_big, h_big = result["sidrec"][f"batch_{args.batch}"], result["hf_generate"][f"batch_{args.hf_users}"]
    result["speedup_p50"] = {
        "batch_1": round(h_b1["p50_ms_per_user"] / s_b1["p50_ms_per_user"], 1),
        f"batch_{args.batch}": round(h_big["p50_ms_per_user"] / s_big["p50_ms_per_user"], 1),
    }
    print(json.dumps(result, indent=2))
    write_json(args.out / "decoding.json", result)
    rows = [
        ("sidrec constrained_beam_search", "1", s_b1),
        ("HF generate + dict trie", "1", h_b1),
        ("sidrec constrained_beam_search", str(args.batch), s_big),
        ("HF generate + dict trie", str(args.hf_users), h_big),
    ]
    md = [
        "# Constrained beam search: sidrec vs Hugging Face `generate`",
        "",
        f"Run {result['when']}, seed {args.seed}, {result['machine']}, torch {torch.__version__}, "
        f"transformers {transformers.__version__}. Produced by `python benchmarks/decoding.py`.",
        "",
        f"Model: TIGER paper T5 (4+4 layers, d_model 128, 6 heads x 64, d_ff 1024, {n_params / 1e6:.2f} M parameters), "
        f"the same weights in both (exported with `TIGER.to_hf()`). Data: {result['data']}. "
        f"{args.beams} beams, {args.k} items returned; scores = log p(SID tokens + eos).",
        "",
        "| decoder | batch | p50 ms/user | p99 ms/user | users/s | timed samples |",
        "|---|---|---|---|---|---|",
        *(f"| {n} | {b} | {s['p50_ms_per_user']} | {s['p99_ms_per_user']} | {s['users_per_s']} | {s['samples']} |" for n, b, s in rows),
        "",
        f"Speed-up (p50): {result['speedup_p50']['batch_1']}x at batch 1, "
        f"{result['speedup_p50'][f'batch_{args.batch}']}x at batch {args.batch}. "
        f"Identical top-10 items (same order): {result['same_top10_users']} users.",
        "",
        "At batch > 1, ms/user = batch wall time / batch size (p50/p99 over timed batches; HF: one batch).",
        "The machine is shared: absolute times drift; the two decoders ran back to back in one process.",
    ]
    with atomic_path(args.out / "decoding.md") as tmp:
        tmp.write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
