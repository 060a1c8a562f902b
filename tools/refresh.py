"""Re-execute labs in place, storing outputs, widget state and a freshness stamp.

Usage: python -m tools.refresh [notebooks/part/lab.ipynb ...]   (default: every lab)

After executing, it runs the claims scan (tools/claims.py) on the chapters it refreshed and
exits non-zero when a sentence quotes a number that the new outputs no longer print.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from minilib import __version__
from tools import claims
from tools.labs import ROOT, STAMP_KEY, code_sha256, lab_paths, module_sha256

PROBE = (
    "import sys as _s, json as _j\n"
    "print(_j.dumps(sorted(m for m in _s.modules if m == 'minilib' or m.startswith('minilib.'))))"
)


def refresh(path: Path) -> float:
    nb = nbformat.read(path, as_version=4)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nb.cells.append(nbformat.v4.new_code_cell(PROBE))
    env_before = dict(os.environ)
    os.environ["MINILIB_DEVICE"] = "cpu"  # committed outputs are the CPU ones, as on the site
    os.environ.pop("MINILIB_THREADS", None)
    try:
        client = NotebookClient(
            nb, timeout=900, kernel_name="python3", store_widget_state=True,
            resources={"metadata": {"path": str(path.parent)}},
        )
        start = time.perf_counter()
        client.execute()
        seconds = time.perf_counter() - start
    finally:
        os.environ.clear()
        os.environ.update(env_before)
    probe = nb.cells.pop()
    modules = json.loads("".join(o.get("text", "") for o in probe.outputs if o.get("name") == "stdout"))
    nb.metadata[STAMP_KEY] = {
        "code_sha256": code_sha256(nb),
        "minilib": {m: module_sha256(m) for m in modules if module_sha256(m)},
        "minilib_version": __version__,
        "seconds": round(seconds, 1),
    }
    nbformat.validate(nb)
    nbformat.write(nb, path)
    return seconds


def main(argv: list[str]) -> int:
    paths = [Path(a).resolve() for a in argv] if argv else lab_paths()
    for p in paths:
        if p.suffix != ".ipynb" or not p.exists():
            print(f"not a lab: {p}", file=sys.stderr)
            return 2
    for p in paths:
        seconds = refresh(p)
        flag = "  OVER BUDGET (60 s)" if seconds > 60 else ""
        print(f"refreshed {p.relative_to(ROOT)} in {seconds:.1f} s{flag}")
    # A re-run can change a number that the prose quotes: say so now, not at test time.
    problems = claims.report([p.relative_to(ROOT).as_posix() for p in paths])
    if problems:
        print("\nThe prose no longer matches the new outputs (re-read these sentences):", file=sys.stderr)
        print("\n".join(f"  {x}" for x in problems), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
