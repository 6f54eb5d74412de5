"""Put the table `sidrec demo` wrote (RUN_DIR/report.md) into the README's demo block, with where it came from.

    make demo && .venv/bin/python docs/demo_table.py runs/demo
    .venv/bin/python docs/demo_table.py /tmp/fresh/runs/demo --checkout /tmp/fresh   # a demo run in a fresh clone

The commit it states is the HEAD of the checkout that ran the demo (`--checkout`, default this one).
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from provenance import commit, cpu_model, replace_marked  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="the --out folder of `sidrec demo`")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--checkout", type=Path, default=ROOT, help="the git checkout that ran the demo")
    args = parser.parse_args()
    report = args.run_dir / "report.md"
    if not report.exists():
        sys.exit(f"{report}: no demo report (run `make demo` first)")
    source = (f"Written by `docs/demo_table.py` from the demo's `report.md`: commit {commit(root=args.checkout)}, "
              f"{datetime.date.today().isoformat()}, {cpu_model()}, {torch.get_num_threads()} threads.")
    if not replace_marked(args.readme, "demo-table", report.read_text().strip() + "\n\n" + source):
        sys.exit(f"{args.readme}: no <!-- demo-table --> ... <!-- /demo-table --> block")
    print(f"{args.readme}: demo table replaced ({source})")


if __name__ == "__main__":
    main()
