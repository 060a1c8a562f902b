"""Claims are computed, not typed (issue "Trust", tools/claims.py).

Three layers: the scanner finds what it must and ignores what it must (constants in math,
equation numbers, sizes, code); it catches a planted drifted sentence in a lab and a typed
number on a page; and every chapter of the book passes it, with every glue role resolving.
"""

from __future__ import annotations

import copy
import json

import nbformat
import pytest

from tools import claims
from tools.labs import ROOT

CHAPTERS = claims.chapters()


def _texts(text: str) -> list[str]:
    return [c.text for c in claims.find_claims(text)]


@pytest.mark.parametrize(
    "sentence, found",
    [
        ("Packing saves 53% of the time.", ["53%"]),
        ("The overhead is 30–40 % in practice.", ["30–40 %"]),
        ("A 3.7× smaller peak.", ["3.7×"]),
        ("about 2 to 2.5× at batch 1", ["2 to 2.5×"]),
        ("one step takes 10.4 ms here", ["10.4 ms"]),
        ("the peak is 1.56 MiB", ["1.56 MiB"]),
        ("the lab ran for 45 s", ["45 s"]),
        ("J goes from 5.0 to 5.46 of 6.0", ["5.46"]),
        ("an error of 4.9e-5 remained", ["4.9e-5"]),
        ("within about 0.15 nats of the entropy rate", ["0.15 nats"]),
    ],
)
def test_scanner_finds_measured_looking_numbers(sentence, found):
    assert _texts(sentence) == found


@pytest.mark.parametrize(
    "sentence",
    [
        "With $\\gamma = 0.99$ and $\\beta_T = 0.999$ the sampler is stable.",
        "A wrapped $\\int_0^1 \\beta =\n10.05$ stays math.",
        "$$\nx = 0.125\n$$ (some-label)",
        "Equation (7.3) and section 2.1 of the paper.",
        "A 3×3 convolution and a 64×64 image.",
        "Install torch 2.13.0 and Python 3.11.",
        "Call `check.less(err, 0.01)` and see ``x = 1.25``.",
        "See [the figure](../images/fig_0.25.png) and <img width=\"80%\" src=\"a.png\">.",
        ":::{figure} a.png\n:width: 80%\nA caption.\n:::",
        "As reported, FID 3.17 on CIFAR-10 {cite}`ho2020denoising`.",
        "The value is {glue:text}`../../notebooks/a/b.ipynb::key:.2f` ms.",
        "```python\nx = 0.375  # 12.5%\n```",
        "Use 16 layers, 4 heads and a batch of 8.",
    ],
)
def test_scanner_ignores_constants_math_code_and_references(sentence):
    assert _texts(sentence) == []


def _lab(markdown: str, printed: str) -> dict:
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_markdown_cell(markdown),
            nbformat.v4.new_code_cell("print(...)", outputs=[nbformat.v4.new_output("stream", name="stdout", text=printed)]),
        ]
    )
    return json.loads(nbformat.writes(nb))


def test_a_planted_drifted_sentence_in_a_lab_is_caught():
    printed = "segments  time (ms)\n0  9.7\n4  10.4\nratio 1.07\n"
    honest = _lab("Checkpointing took 10.4 ms against 9.7 ms, a ratio of 1.07×.", printed)
    assert claims.unsupported_in_lab(honest) == []
    drifted = _lab("Checkpointing took 10.4 ms against 9.7 ms, a 30% overhead.", printed)
    bad = claims.unsupported_in_lab(drifted)
    assert [c.text for c in bad] == ["30%"]
    rounded = _lab("Latent training is 9.70 ms per step.", printed)  # same value, other digits
    assert claims.unsupported_in_lab(rounded) == []
    stale = _lab("Latent training is 9.6 ms per step.", printed)  # a re-run changed the output
    assert [c.text for c in claims.unsupported_in_lab(stale)] == ["9.6 ms"]


def test_a_percentage_may_be_printed_as_a_fraction():
    assert claims.unsupported_in_lab(_lab("Impossible pairs: 20.1%.", "impossible 0.201\n")) == []


def test_glue_outputs_are_not_visible_prints():
    nb = _lab("The overhead is 33%.", "")
    nb["cells"][1]["outputs"] = [
        {
            "output_type": "display_data",
            "metadata": {"scrapbook": {"name": "x", "mime_prefix": "application/papermill.record/"}},
            "data": {"application/papermill.record/text/plain": "33"},
        }
    ]
    assert [c.text for c in claims.unsupported_in_lab(nb)] == ["33%"]


def test_a_typed_number_on_a_page_is_caught():
    page = "The lab measures a 12% recomputation overhead, as $\\frac{1}{3}$ predicts."
    assert [c.text for c in claims.typed_in_page(page)] == ["12%"]
    glued = "The lab measures a {glue:text}`../../notebooks/a/b.ipynb::oh:.0f`% overhead."
    assert claims.typed_in_page(glued) == []


def test_broken_glue_roles_are_reported(tmp_path):
    (tmp_path / "notebooks").mkdir()
    lab = tmp_path / "notebooks" / "lab.ipynb"
    nb = _lab("# Lab", "")
    nb["cells"][1]["outputs"].append(
        {
            "output_type": "display_data",
            "metadata": {"scrapbook": {"name": "ok", "mime_prefix": "application/papermill.record/"}},
            "data": {"application/papermill.record/text/plain": "1.5"},
        }
    )
    lab.write_text(json.dumps(nb))
    page = tmp_path / "book" / "page.md"
    page.parent.mkdir()
    page.write_text(
        "a {glue:text}`../notebooks/lab.ipynb::ok:.1f` b {glue:text}`../notebooks/lab.ipynb::missing:.1f` "
        "c {glue:text}`../notebooks/lab.ipynb::ok` d {glue:text}`ok:.1f` e {glue:text}`../notebooks/nope.ipynb::ok:s`"
    )
    problems = claims.broken_glue(page)
    assert len(problems) == 4, problems
    assert any("'missing'" in p for p in problems)
    assert any("format spec is required" in p for p in problems)
    assert any("name the lab" in p for p in problems)
    assert any("does not exist" in p for p in problems)


def test_minilib_glue_writes_what_myst_nb_reads():
    """The output minilib.glue writes is read back by MyST-NB's own glue extraction and format."""
    from myst_nb.core.variables import format_plain_text
    from myst_nb.ext.glue import extract_glue_data_cell
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(
            "import torch, minilib\nminilib.glue('ratio', torch.tensor(1.2345))\nminilib.glue('word', 'slower')"
        )]
    )
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    NotebookClient(nb, kernel_name="python3", timeout=120).execute()
    cell = copy.deepcopy(nb.cells[0])
    data = dict(extract_glue_data_cell(cell))
    assert set(data) == {"ratio", "word"}
    assert cell.outputs == [], "glued values are not displayed"
    assert format_plain_text(data["ratio"]["data"]["text/plain"], ".2f") == "1.23"
    assert format_plain_text(data["word"]["data"]["text/plain"], "s") == "slower"
    assert claims.glued_keys(json.loads(nbformat.writes(nb))) == {"ratio", "word"}


def test_glue_rejects_bad_values():
    import torch

    import minilib

    for bad, exc in [(float("nan"), ValueError), (torch.ones(2), ValueError), ([1, 2], TypeError), (True, TypeError)]:
        with pytest.raises(exc, match="value must"):
            minilib.glue("key", bad)
    with pytest.raises(ValueError, match="name must"):
        minilib.glue("a::b", 1.0)


@pytest.mark.parametrize("page, lab", CHAPTERS, ids=[p.split("/")[-1][:-3] for p, _ in CHAPTERS])
def test_chapter_claims_are_computed(page, lab):
    """Every measured-looking number in the lab's prose is printed by the lab; the page types none
    and pastes them with glue from keys the committed lab records."""
    problems = claims.report([page])
    assert not problems, "\n".join(problems)


def test_every_chapter_is_scanned():
    assert len(CHAPTERS) >= 27
    for page, lab in CHAPTERS:
        assert (ROOT / page).exists() and (ROOT / lab).exists()
