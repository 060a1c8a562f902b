"""The PDF book (`make pdf`; run by `make test-pdf`): every chapter and lab is in it, in order."""

from __future__ import annotations

import pytest

from tools import bookmap
from tools.labs import ROOT

pytestmark = pytest.mark.pdf
PDF = ROOT / "_build" / "latex" / "derive-and-run.pdf"


def _outline_titles(outline, depth=0, out=None) -> list[tuple[int, str]]:
    out = [] if out is None else out
    for item in outline:
        if isinstance(item, list):
            _outline_titles(item, depth + 1, out)
        else:
            out.append((depth, " ".join(item.title.split())))
    return out


def test_the_pdf_has_every_chapter_and_lab_in_order():
    pypdf = pytest.importorskip("pypdf")
    assert PDF.exists(), "run `make pdf` first (make test-pdf does)"
    reader = pypdf.PdfReader(str(PDF))
    chapters = bookmap.chapters()
    assert len(reader.pages) >= 10 * len(chapters), f"{len(reader.pages)} pages for {len(chapters)} chapters"
    titles = [t for _, t in _outline_titles(reader.outline)]
    expected = []
    for c in chapters:
        expected += [f"{c.number} {c.title}", f"{c.number} {c.title}: lab"]
    positions = []
    for want in expected:
        hits = [i for i, t in enumerate(titles) if t == " ".join(want.split())]
        assert hits, f"the PDF's table of contents lacks {want!r}"
        positions.append(hits[0])
    assert positions == sorted(positions), "the chapters appear in the order of _toc.yml"
    text = reader.pages[len(reader.pages) // 2].extract_text()
    assert text and len(text) > 200, "pages carry text"
