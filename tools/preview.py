"""Build a small preview book holding only some pages, with warnings as errors.

    python -m tools.preview book/diffusion/ddpm.md notebooks/diffusion/ddpm.ipynb

Writes the HTML to ``_build/preview-<first page's stem>/`` and prints where. Useful while a
chapter is being written and is not yet in ``_toc.yml``. The API page is included, so
docstrings are checked too.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    files = []
    for a in argv:
        p = Path(a).resolve()
        if not p.exists():
            print(f"no such file: {a}", file=sys.stderr)
            return 2
        files.append(p.relative_to(ROOT).with_suffix("").as_posix())
    chapters = "\n".join(f"      - file: {f}" for f in ["book/how-to-use", "book/notation", "book/api", *files, "book/bibliography"])
    toc = f"format: jb-book\nroot: book/intro\nparts:\n  - caption: Preview\n    chapters:\n{chapters}\n"
    out = ROOT / "_build" / f"preview-{Path(files[0]).name}"
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False, dir=ROOT / "_build") as fh:
        fh.write(toc)
    cmd = [str(Path(sys.executable).parent / "jupyter-book"), "build", str(ROOT), "--toc", fh.name,
           "--path-output", str(out), "-W", "--keep-going", "--builder", "html"]
    rc = subprocess.call(cmd, cwd=ROOT)
    Path(fh.name).unlink()
    print(f"\npreview: {out / '_build' / 'html'}  (exit {rc})")
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
