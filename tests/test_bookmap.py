"""The front page's map is drawn from _toc.yml and the pages' prerequisites (tools/bookmap.py)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from tools import bookmap
from tools.labs import ROOT
from tools.numbering import chapter_numbers


def test_every_chapter_is_on_the_map_with_the_site_number():
    chs = bookmap.chapters()
    numbers = chapter_numbers(ROOT / "_toc.yml")
    assert [c.number for c in chs] == list(range(1, len(chs) + 1))
    assert {c.docname: c.number for c in chs} == {d: n for d, n in numbers.items() if d.startswith("book/")}


def test_prerequisites_are_existing_earlier_pages():
    chs = bookmap.chapters()
    order = {c.docname: c.number for c in chs}
    for c in chs:
        for pre in c.prerequisites:
            assert (ROOT / f"{pre}.md").exists(), f"{c.docname}: prerequisite {pre} does not exist"
            if pre in order:
                assert order[pre] < c.number, f"{c.docname} needs {pre}, which comes later in the book"
    assert sum(len(c.prerequisites) for c in chs) >= len(chs) // 2


def test_prerequisites_are_read_from_the_paragraph(tmp_path):
    (tmp_path / "book" / "p").mkdir(parents=True)
    text = (
        "# T\n\nIntro with a [link](other.md) that is not a prerequisite.\n\n"
        "**Prerequisites:** [A](a.md) (stuff), and [B](../q/b.md#sec); also\n[A again](a.md).\n\nBody [C](c.md).\n"
    )
    assert bookmap.prerequisites_of(tmp_path, "book/p/x", text) == ["book/p/a", "book/q/b"]


def test_the_map_is_an_svg_naming_every_chapter(tmp_path):
    path = bookmap.write_map(ROOT, tmp_path / "map.svg")
    root = ET.fromstring(path.read_text())
    text = " ".join(" ".join(t.itertext()) for t in root.iter("{http://www.w3.org/2000/svg}text"))
    words = " ".join(text.split())
    for c in bookmap.chapters():
        first_words = " ".join(f"{c.number}  {c.title}".split()[:3])
        assert first_words in words, f"chapter {c.number} ({c.title}) is not on the map"
    n_edges = sum(len(c.prerequisites) for c in bookmap.chapters())
    assert len(list(root.iter("{http://www.w3.org/2000/svg}path"))) >= len(bookmap.chapters()) + n_edges // 2
