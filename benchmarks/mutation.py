"""Mutation testing of the mechanisms that define each method: break one, and some test must go red.

Each mutant below removes one defining property (the straight-through gradient, Sinkhorn in
training, the causal mask, MSP routing, trie constraints, the leave-one-out split, ...). The script
copies `src/` and `tests/` to a scratch folder, applies one mutant at a time, runs the tests of that
stage with `-x` and records whether they failed (killed) or passed (survived). A baseline run of every
test subset on the unmutated copy comes first: a red baseline would make every mutant look killed.

    python benchmarks/mutation.py                 # all mutants -> benchmarks/results/mutation.{md,json}
    python benchmarks/mutation.py --only ste-rqvae causal-mask

The list targets one mutant per defining mechanism, including the models' and tokenizers' training code,
which is outside the generic tool's scope (`mutation_tool.py`: mutmut over every operator of the protocol,
decoding, balancing and non-uniform transform code; its per-mutant cost on generators that train does not fit on
2 cores).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from provenance import run_facts

from sidrec.io import atomic_path, read_json, write_json

CODE = ("src", "tests")  # what a mutation score depends on: a dirty result elsewhere does not mark it

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "mutation"


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str  # under src/sidrec/
    old: str
    new: str
    breaks: str
    tests: tuple[str, ...]


TOKENIZER_TESTS = ("tests/tokenizers",)
MUTANTS = [
    Mutant("ste-rqvae", "tokenizers/residual.py", "z_q = z + (total - z).detach()", "z_q = total.detach()",
           "RQ-VAE straight-through gradient (the encoder gets no reconstruction gradient)", TOKENIZER_TESTS),
    Mutant("sinkhorn-off-in-training", "tokenizers/residual.py", "if sinkhorn_last and level == self.n_levels - 1:",
           "if False:", "Sinkhorn balancing of the last level during RQ-VAE training", TOKENIZER_TESTS),
    Mutant("sinkhorn-no-iterations", "tokenizers/sinkhorn.py", "for _ in range(n_iters):", "for _ in range(0):",
           "Sinkhorn's marginal constraints (the plan becomes a plain softmin)", TOKENIZER_TESTS),
    Mutant("codebook-loss-zero", "tokenizers/residual.py",
           "loss = loss + F.mse_loss(q, r.detach()) + self.beta * F.mse_loss(r, q.detach())",
           "loss = loss + 0 * F.mse_loss(q, r.detach()) + self.beta * F.mse_loss(r, q.detach())",
           "the codebook term that moves the codebooks", TOKENIZER_TESTS),
    Mutant("commitment-loss-zero", "tokenizers/residual.py",
           "loss = loss + F.mse_loss(q, r.detach()) + self.beta * F.mse_loss(r, q.detach())",
           "loss = loss + F.mse_loss(q, r.detach()) + 0 * self.beta * F.mse_loss(r, q.detach())",
           "the commitment term that pulls the encoder to its codewords", TOKENIZER_TESTS),
    Mutant("dead-code-restart-off", "tokenizers/residual.py", "dead = (usage[level] == 0).nonzero().flatten()",
           "dead = (usage[level] < 0).nonzero().flatten()", "RQ-VAE / MHQ dead-codeword restart", TOKENIZER_TESTS),
    Mutant("mhq-ema-off", "tokenizers/mhq.py", "rq.codebooks.data[level] = self.total[m, level] / smoothed[:, None]",
           "pass", "MHQ's EMA codebook update", TOKENIZER_TESTS),
    Mutant("mhq-ste", "tokenizers/mhq.py", "d_st = d + (q - d).detach()", "d_st = q.detach()",
           "MHQ straight-through gradient to the projection", TOKENIZER_TESTS),
    Mutant("mhq-balance-off", "tokenizers/mhq.py", '"balance": balance_loss(view_energies(z, self.n_views)),',
           '"balance": 0 * balance_loss(view_energies(z, self.n_views)),', "MHQ's energy-balance term", TOKENIZER_TESTS),
    Mutant("mhq-ortho-off", "tokenizers/mhq.py", '"ortho": ortho_loss(self.projection),',
           '"ortho": 0 * ortho_loss(self.projection),', "MHQ's orthogonality term", TOKENIZER_TESTS),
    Mutant("nu-transform-bypassed", "tokenizers/nurqvae.py", "    def to_quant(self, z: torch.Tensor) -> torch.Tensor:\n"
           "        return self.transform(z)", "    def to_quant(self, z: torch.Tensor) -> torch.Tensor:\n        return z",
           "NU-RQ-VAE's non-uniform transform before quantization", TOKENIZER_TESTS),
    Mutant("causal-mask-off", "models/causal.py", "self.layers(x, mask=causal, is_causal=True)", "self.layers(x)",
           "the causal mask of SASRec / AsymRec (a later item must not change an earlier state)", ("tests/models",)),
    Mutant("tiger-item-causal-off", "models/tiger.py",
           "bias = bias.masked_fill(item[None, :] > item[:, None], torch.finfo(bias.dtype).min)", "bias = bias",
           "TIGER history-once's item-causal encoder mask", ("tests/models",)),
    Mutant("msp-gate-constant", "models/asymrec.py", "return torch.softmax(self.gate(x), dim=-1)",
           "return torch.softmax(self.gate(x) * 0, dim=-1)", "MSP routing (gate weights depend on the input)",
           ("tests/models",)),
    Mutant("asymrec-code-mask-off", "models/asymrec.py",
           'return torch.log_softmax(logits.masked_fill(self.code_mask, float("-inf")), dim=-1)',
           "return torch.log_softmax(logits, dim=-1)", "AsymRec's mask of codes beyond a position's codebook",
           ("tests/models",)),
    Mutant("trie-constraint-off", "decoding/beam_search.py",
           'cand = (scores[..., None] + log_probs).masked_fill(children < 0, float("-inf")).flatten(1)',
           "cand = (scores[..., None] + log_probs).flatten(1)",
           "constrained beam search (only catalogue items can be decoded)", ("tests/decoding", "tests/models")),
    Mutant("leave-one-out-leak", "data/dataset.py", "return torch.where(lengths >= 3, lengths - 2, lengths)",
           "return torch.where(lengths >= 3, lengths - 1, lengths)",
           "leave-one-out (training never sees a validation target)", ("tests/data", "tests/evaluation")),
    Mutant("ndcg-discount", "evaluation/metrics.py", "gains = 1.0 / torch.log2(ranks + 2.0)",
           "gains = 1.0 / torch.log2(ranks + 3.0)", "NDCG's exact discount", ("tests/evaluation",)),
    Mutant("recall-cutoff", "evaluation/metrics.py", "hit = ranks < k", "hit = ranks <= k",
           "Recall@K's cut-off", ("tests/evaluation",)),
]


def scratch_copy(scratch: Path) -> None:
    """This checkout's src/, tests/ and pyproject.toml in `scratch`, checked to be the sidrec imported from there."""
    for part in ("src", "tests"):
        shutil.copytree(ROOT / part, scratch / part, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(ROOT / "pyproject.toml", scratch)
    where = subprocess.run([sys.executable, "-c", "import sidrec; print(sidrec.__file__)"], cwd=scratch,
                           env={**os.environ, "PYTHONPATH": str(scratch / "src")}, capture_output=True, text=True)
    if not where.stdout.startswith(str(scratch)):
        raise SystemExit(f"the scratch copy is not the sidrec imported ({where.stdout.strip() or where.stderr})")


def run_tests(scratch: Path, tests: tuple[str, ...], timeout: float) -> tuple[bool, str, float]:
    """(passed, first failing test or reason, seconds) of `pytest -x` over `tests` in the scratch copy."""
    env = {**os.environ, "PYTHONPATH": str(scratch / "src"), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    start = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                              cwd=scratch, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"timeout after {timeout:.0f} s", time.perf_counter() - start
    seconds = time.perf_counter() - start
    failed = re.search(r"^(?:FAILED|ERROR) (\S+)", done.stdout, re.MULTILINE)
    return done.returncode == 0, failed.group(1) if failed else done.stdout.strip().splitlines()[-1:][0] if done.stdout.strip() else "", seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", help="mutant names (default: all)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per test run")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--render-only", action="store_true", help="rewrite mutation.md from mutation.json")
    args = parser.parse_args()
    if args.render_only:
        saved = read_json(args.out.with_suffix(".json"))
        return write(saved["mutants"], saved["meta"], args.out)
    chosen = [m for m in MUTANTS if not args.only or m.name in args.only]
    unknown = set(args.only or []) - {m.name for m in MUTANTS}
    if unknown:
        parser.error(f"unknown mutants {sorted(unknown)}; known: {', '.join(m.name for m in MUTANTS)}")
    meta = run_facts(*CODE)
    rows = []
    with tempfile.TemporaryDirectory(prefix="sidrec-mutation-") as tmp:
        scratch = Path(tmp)
        scratch_copy(scratch)
        for tests in sorted({m.tests for m in chosen}):
            passed, detail, seconds = run_tests(scratch, tests, args.timeout)
            print(f"baseline {' '.join(tests)}: {'green' if passed else 'RED: ' + detail} ({seconds:.0f} s)", flush=True)
            if not passed:
                raise SystemExit("the unmutated tests are red: fix them before scoring mutants")
        for mutant in chosen:
            path = scratch / "src" / "sidrec" / mutant.file
            original = path.read_text()
            if original.count(mutant.old) != 1:
                raise SystemExit(f"{mutant.name}: the code to mutate occurs {original.count(mutant.old)} times in "
                                 f"{mutant.file} (expected once): update the mutant")
            path.write_text(original.replace(mutant.old, mutant.new))
            try:
                passed, detail, seconds = run_tests(scratch, mutant.tests, args.timeout)
            finally:
                path.write_text(original)
            rows.append({**asdict(mutant), "killed": not passed, "by": detail if not passed else "",
                         "seconds": round(seconds, 1)})
            print(f"{mutant.name}: {'killed by ' + detail if not passed else 'SURVIVED'} ({seconds:.0f} s)", flush=True)
    write(rows, meta, args.out)


def write(rows: list[dict], meta: dict, out: Path) -> None:
    killed = sum(r["killed"] for r in rows)
    write_json(out.with_suffix(".json"), {"meta": meta, "mutants": rows})
    lines = ["# Mutation testing of the defining mechanisms (`benchmarks/mutation.py`)", "",
             "Regenerated by the script. Each mutant removes one mechanism a method is defined by; the tests of its "
             "stage run with `-x` on a scratch copy. Killed = some test went red. The list is targeted (one mutant "
             "per defining mechanism), including the training code of the models and tokenizers; mutmut's exhaustive "
             "operator mutations of the protocol, decoding, balancing and non-uniform transform code are in "
             "`mutation_tool.md`.", "",
             f"**Score: {killed} / {len(rows)} killed.** Commit {meta['commit']}, {meta['date']}, {meta['cpu']}, "
             f"Python {meta['python']}. Command: `python benchmarks/mutation.py`.", "",
             "| mutant | breaks | file | tests | killed by | s |", "|---|---|---|---|---|---|"]
    for r in rows:
        by = f"`{r['by']}`" if r["killed"] else "**survived**"
        lines.append(f"| {r['name']} | {r['breaks']} | `{r['file']}` | {' '.join(r['tests'])} | {by} | {r['seconds']} |")
    with atomic_path(out.with_suffix(".md")) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
