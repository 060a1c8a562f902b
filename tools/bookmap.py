"""The map of the book on the front page, drawn from ``_toc.yml`` and each page's prerequisites.

Every build draws it anew (``tools/sphinx_local.py`` calls :func:`write_map` before Sphinx reads
the pages), so it cannot go stale: a chapter added to the table of contents, or a prerequisite
link added to a page's "**Prerequisites:**" paragraph, appears on the next build.

    python -m tools.bookmap out.svg     # draw it by hand
"""

from __future__ import annotations

import re
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
FRONT_AND_BACK = {"Getting started", "Reference"}
MAP_PATH = Path("book/images/generated/book-map.svg")
_PREREQ = re.compile(r"^\*\*Prerequisites:?\*\*:?(.*?)(?:\n\s*\n|\Z)", re.M | re.S)
_LINK = re.compile(r"\]\(([^)#\s]+\.md)(?:#[^)]*)?\)")


@dataclass
class Chapter:
    number: int
    part: str
    docname: str  # e.g. "book/diffusion/ddpm"
    title: str
    prerequisites: list[str] = field(default_factory=list)  # docnames of earlier chapters


def chapters(root: Path = ROOT) -> list[Chapter]:
    """Every chapter in table-of-contents order, with its number, title and prerequisites."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    out: list[Chapter] = []
    for part in toc.get("parts", []):
        if part.get("caption") in FRONT_AND_BACK:
            continue
        files = [c["file"] for c in part.get("chapters", [])]
        for page in files[::2]:
            text = (root / f"{page}.md").read_text()
            title = next((ln[2:].strip() for ln in text.splitlines() if ln.startswith("# ")), page)
            out.append(Chapter(len(out) + 1, part["caption"], page, title, prerequisites_of(root, page, text)))
    return out


def prerequisites_of(root: Path, docname: str, text: str | None = None) -> list[str]:
    """The chapters linked from a page's "**Prerequisites:**" paragraph, as docnames."""
    text = (root / f"{docname}.md").read_text() if text is None else text
    m = _PREREQ.search(text)
    if not m:
        return []
    here = (root / docname).parent
    found = []
    for target in _LINK.findall(m.group(1)):
        doc = (here / target).resolve().relative_to(root.resolve()).with_suffix("").as_posix()
        if doc not in found:
            found.append(doc)
    return found


def draw(chs: list[Chapter]):
    """A matplotlib figure: one column per part, one box per chapter, an arrow per prerequisite."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    parts = list(dict.fromkeys(c.part for c in chs))
    rows = max(sum(1 for c in chs if c.part == p) for p in parts)
    colours = ["#3b6fb6", "#b5562c", "#2f8a5b", "#8a4fb0", "#a0762a", "#2a8a8a", "#b03b6f"]
    col_w, lane, box_w, box_h, row_h = 3.4, 0.45, 2.8, 0.62, 0.95
    fig = plt.figure(figsize=(col_w * len(parts) * 0.95, (rows + 0.5) * row_h * 0.95))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, col_w * len(parts))
    ax.set_ylim(-(rows - 0.3) * row_h, 0.95)
    ax.axis("off")
    fig.patch.set_facecolor("white")  # a white card reads the same in light and dark themes
    pos: dict[str, tuple[float, float]] = {}
    for j, part in enumerate(parts):
        x0 = j * col_w + lane  # the lane on the left of a column carries its arrows
        head = "\n".join(textwrap.wrap(part, 30))
        ax.text(x0 + box_w / 2, 0.5, head, ha="center", va="center", fontsize=10, weight="bold", color=colours[j % len(colours)])
        for i, c in enumerate(ch for ch in chs if ch.part == part):
            y = -i * row_h
            pos[c.docname] = (x0, y)
            ax.add_patch(FancyBboxPatch(
                (x0, y - box_h / 2), box_w, box_h, boxstyle="round,pad=0.02,rounding_size=0.08",
                facecolor="white", edgecolor=colours[j % len(colours)], linewidth=1.6, zorder=3,
            ))
            label = "\n".join(textwrap.wrap(f"{c.number}  {c.title}", 34, break_on_hyphens=False)[:2])
            ax.text(x0 + 0.1, y, label, ha="left", va="center", fontsize=8.2, color="#222", zorder=4)
    for c in chs:
        if c.docname not in pos:
            continue
        xd, yd = pos[c.docname]
        for pre in c.prerequisites:
            if pre not in pos:
                continue
            xs, ys = pos[pre]
            if xs == xd:  # same part: an arc in the lane on the left of the column
                span = abs(ys - yd)
                rad = 2 * (0.08 + 0.07 * span / row_h) / span  # longer spans bulge further out
                a, b, style = (xs, ys), (xd, yd), f"arc3,rad={rad if ys > yd else -rad:.3f}"
            else:
                a, b, style = (xs + box_w, ys), (xd, yd), "arc3,rad=0.08"
            ax.add_patch(FancyArrowPatch(
                a, b, connectionstyle=style, arrowstyle="-|>", mutation_scale=9, color="#777",
                linewidth=0.9, alpha=0.8, zorder=2, shrinkA=2, shrinkB=2,
            ))
    return fig


def write_map(root: Path = ROOT, out: Path | None = None) -> Path:
    """Draw the map into ``book/images/generated/book-map.svg`` (or ``out``); return the path."""
    import matplotlib.pyplot as plt

    path = root / (out or MAP_PATH)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = draw(chapters(root))
    try:
        with plt.rc_context({"svg.fonttype": "none"}):  # text stays text: searchable, selectable
            fig.savefig(path, format="svg", metadata={"Date": None})
        if out is None:  # the PDF book takes the same figure as PDF (pages pick `book-map.*`)
            fig.savefig(path.with_suffix(".pdf"), format="pdf", metadata={"CreationDate": None})
    finally:
        plt.close(fig)
    return path


if __name__ == "__main__":
    print(write_map(ROOT, Path(sys.argv[1]) if len(sys.argv) > 1 else None))
