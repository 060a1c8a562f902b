"""Chapter numbers come from _toc.yml: a derivation page and its lab share one number."""

from __future__ import annotations

from tools.labs import ROOT
from tools.numbering import chapter_numbers


def test_chapters_are_numbered_in_toc_order_and_labs_share_the_number(tmp_path):
    toc = tmp_path / "_toc.yml"
    toc.write_text(
        "format: jb-book\nroot: book/intro\nparts:\n"
        "  - caption: Getting started\n    chapters:\n      - file: book/how-to-use\n"
        "  - caption: A\n    chapters:\n      - file: book/a/x\n      - file: notebooks/a/x\n"
        "      - file: book/a/y\n      - file: notebooks/a/y\n"
        "  - caption: B\n    chapters:\n      - file: book/b/z\n      - file: notebooks/b/z\n"
        "  - caption: Reference\n    chapters:\n      - file: book/api\n"
    )
    assert chapter_numbers(toc) == {
        "book/a/x": 1, "notebooks/a/x": 1, "book/a/y": 2, "notebooks/a/y": 2, "book/b/z": 3, "notebooks/b/z": 3,
    }


def test_the_book_numbers_every_chapter_once():
    numbers = chapter_numbers(ROOT / "_toc.yml")
    values = sorted(set(numbers.values()))
    assert values == list(range(1, len(values) + 1)) and len(numbers) == 2 * len(values)
