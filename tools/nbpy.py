"""Convert between a lab notebook and a plain "percent" script, for editing labs as text.

    python -m tools.nbpy to-nb lab.py notebooks/part/lab.ipynb
    python -m tools.nbpy to-py notebooks/part/lab.ipynb > lab.py

Cells start with ``# %%`` (code) or ``# %% [markdown]`` (markdown, every line prefixed with
``# ``). Tags go on the marker line: ``# %% tags=["nbval-check-output"]``. Converting to a
notebook keeps the outputs of an existing notebook's cells whose source did not change, but
run ``make refresh NB=...`` afterwards anyway.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import nbformat

_MARK = re.compile(r"^# %%(?P<md> \[markdown\])?(?: tags=(?P<tags>\[.*\]))?\s*$")


def py_to_cells(text: str) -> list:
    cells, kind, tags, lines = [], None, [], []

    def flush() -> None:
        if kind is None:
            return
        body = "\n".join(lines).strip("\n")
        if kind == "markdown":
            body = "\n".join(ln[2:] if ln.startswith("# ") else ln.lstrip("#") for ln in body.split("\n"))
            cell = nbformat.v4.new_markdown_cell(body)
        else:
            cell = nbformat.v4.new_code_cell(body)
        if tags:
            cell.metadata["tags"] = tags
        cells.append(cell)

    for line in text.split("\n"):
        m = _MARK.match(line)
        if m:
            flush()
            kind = "markdown" if m.group("md") else "code"
            tags = json.loads(m.group("tags")) if m.group("tags") else []
            lines = []
        elif kind is not None:
            lines.append(line)
    flush()
    return cells


def cells_to_py(nb) -> str:
    out = []
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        suffix = f" tags={json.dumps(tags)}" if tags else ""
        if cell.cell_type == "markdown":
            out.append(f"# %% [markdown]{suffix}")
            out.extend(("# " + ln) if ln else "#" for ln in cell.source.split("\n"))
        else:
            out.append(f"# %%{suffix}")
            out.append(cell.source)
        out.append("")
    return "\n".join(out)


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "to-py":
        print(cells_to_py(nbformat.read(argv[1], as_version=4)))
        return 0
    if len(argv) == 3 and argv[0] == "to-nb":
        src, dst = Path(argv[1]), Path(argv[2])
        cells = py_to_cells(src.read_text())
        old = {}
        if dst.exists():
            prev = nbformat.read(dst, as_version=4)
            old = {c.source: c for c in prev.cells if c.cell_type == "code"}
        for c in cells:
            if c.cell_type == "code" and c.source in old:
                c.outputs, c.execution_count = old[c.source].outputs, old[c.source].execution_count
        nb = nbformat.v4.new_notebook(cells=cells)
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nb.metadata["language_info"] = {"name": "python"}
        dst.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, dst)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
