"""Run every lab under nbval, on as many workers as the machine has cores (at most two).

A lab runs on one CPU thread (``minilib.setup`` sets ``torch.set_num_threads(1)`` unless
``MINILIB_THREADS`` says otherwise), so on the book's 2-core reference machine one nbval process
leaves a core idle. This script splits the labs into balanced groups (longest first, by the wall
time recorded in each lab's stamp) and runs one ``pytest --nbval-lax`` process per group at the
same time. Each process applies the per-lab budget of ``conftest.py`` to its own labs and prints
its own table of lab times; the script prints them one after the other and fails if any fails.

Usage: ``python -m tools.run_labs [--workers N] [lab.ipynb ...]`` (default: every lab in the toc's
``notebooks/`` folder, ``N = min(2, cores)``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tools.labs import ROOT, STAMP_KEY, lab_paths

NBVAL_ARGS = ["--nbval-lax", "--nbval-current-env", "--nbval-sanitize-with", "tests/nbval_sanitize.cfg"]


def recorded_seconds(path: Path) -> float:
    """The wall time of the lab's last `make refresh`, or a middling guess for a lab without one."""
    stamp = json.loads(path.read_text()).get("metadata", {}).get(STAMP_KEY, {})
    return float(stamp.get("seconds", 20.0))


def balanced_groups(weights: dict[Path, float], n: int) -> list[list[Path]]:
    """Greedy longest-processing-time split of the labs into ``n`` groups of similar total weight;
    within a group the labs keep the book's order."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    groups: list[list[Path]] = [[] for _ in range(n)]
    totals = [0.0] * n
    for lab in sorted(weights, key=lambda p: (-weights[p], str(p))):
        k = totals.index(min(totals))
        groups[k].append(lab)
        totals[k] += weights[lab]
    return [sorted(g) for g in groups if g]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("labs", nargs="*", type=Path, help="labs to run (default: all)")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args(argv)
    labs = [p.resolve() for p in args.labs] or lab_paths()
    if args.workers < 1:
        parser.error("--workers must be >= 1")
    groups = balanced_groups({p: recorded_seconds(p) for p in labs}, args.workers)
    print(f"running {len(labs)} labs under nbval on {len(groups)} worker(s)", flush=True)
    procs = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, group in enumerate(groups):
            log = open(Path(tmp) / f"worker{k}.log", "w+")  # noqa: SIM115 (closed below)
            cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *NBVAL_ARGS,
                   *[str(p.relative_to(ROOT)) for p in group]]
            procs.append((subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT), log))
        codes = []
        for k, (proc, log) in enumerate(procs):
            codes.append(proc.wait())
            log.seek(0)
            print(f"\n===== worker {k + 1} of {len(procs)}: {len(groups[k])} labs, exit {codes[-1]} =====")
            print(log.read(), end="", flush=True)
            log.close()
    failed = [k + 1 for k, c in enumerate(codes) if c != 0]
    print(f"\nlabs: {'FAILED on worker(s) ' + str(failed) if failed else 'all workers passed'}")
    return max(codes) if codes else 0


if __name__ == "__main__":
    sys.exit(main())
