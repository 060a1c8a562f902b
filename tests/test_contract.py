"""The chapter contract (../shared/CHAPTER.md), checked by walking `_toc.yml`.

Everything here is what a program can check: the pair exists and is ordered, the page has
its parts (theorems, labelled equations, citations, exercises), the lab has its parts (title
and link, the bootstrap, checks tagged for comparison, no MyST-only syntax, "Try this", an
in-order execution), every equation label that minilib names exists in the book, the
repository URL agrees everywhere, and no lab's committed outputs are stale.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
import yaml

import minilib
from tools.labs import ROOT, lab_paths, stale_reasons
from tools.release import ref_for

CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
TOC = yaml.safe_load((ROOT / "_toc.yml").read_text())
REPO_URL = CONFIG["repository"]["url"].rstrip("/")
SITE_URL = CONFIG["html"]["baseurl"].rstrip("/")
FRONT_AND_BACK = {"Getting started", "Reference"}
MYST_ONLY = re.compile(r"\{[a-z][a-z:-]*\}`|^\s*(```|~~~|:::)\s*\{|^\s*:::", re.M)
EQ_LABEL = re.compile(r"^\$\$\s*\(([A-Za-z0-9_:-]+)\)\s*$", re.M)
IMPLEMENTS = re.compile(r"Implements\s+((?:\([A-Za-z0-9_:-]+\)(?:,\s*|\s+and\s+)?)+)")


def chapters() -> list[tuple[str, str, str]]:
    """(part caption, derivation file, lab file) for every chapter in the toc."""
    out = []
    for part in TOC["parts"]:
        if part["caption"] in FRONT_AND_BACK:
            continue
        files = [c["file"] for c in part["chapters"]]
        assert len(files) % 2 == 0, f"part {part['caption']!r} must list pairs (page, lab): {files}"
        for page, lab in zip(files[::2], files[1::2]):
            out.append((part["caption"], page, lab))
    return out


CHAPTERS = chapters()
IDS = [Path(p).name for _, p, _ in CHAPTERS]


def _cell_text(cell) -> str:
    src = cell["source"]
    return "".join(src) if isinstance(src, list) else src


def book_labels() -> dict[str, set[str]]:
    labels: dict[str, set[str]] = {}
    for md in (ROOT / "book").rglob("*.md"):
        labels[md.relative_to(ROOT).with_suffix("").as_posix()] = set(EQ_LABEL.findall(md.read_text()))
    return labels


def test_toc_lists_at_least_one_chapter():
    assert CHAPTERS, "the toc has no chapters"


def test_toc_files_exist():
    for part in TOC["parts"]:
        for c in part["chapters"]:
            stem = ROOT / c["file"]
            assert any(stem.with_suffix(s).exists() for s in (".md", ".ipynb")), f"{c['file']} is missing"


@pytest.mark.parametrize("part, page, lab", CHAPTERS, ids=IDS)
def test_pair_layout(part, page, lab):
    p, n = Path(page), Path(lab)
    assert p.parts[0] == "book" and n.parts[0] == "notebooks", (page, lab)
    assert p.parts[1:] == n.parts[1:], f"page and lab must share part and slug: {page} vs {lab}"
    assert (ROOT / f"{page}.md").exists(), f"{page}.md is missing"
    assert (ROOT / f"{lab}.ipynb").exists(), f"{lab}.ipynb is missing"


@pytest.mark.parametrize("part, page, lab", CHAPTERS, ids=IDS)
def test_derivation_page(part, page, lab):
    text = (ROOT / f"{page}.md").read_text()
    assert text.lstrip().startswith("# "), "the page opens with its title"
    assert f"notebooks/{Path(lab).relative_to('notebooks').as_posix()}.ipynb" in text, "the page links to its lab"
    assert re.search(r"```\{prf:(theorem|proposition|lemma)\}", text), "at least one theorem/lemma"
    assert re.search(r"```\{prf:proof\}", text), "at least one proof"
    assert re.search(r"```\{prf:\w+\}[^\n]*\n:label:", text), "sphinx-proof directives carry labels"
    assert EQ_LABEL.search(text), "labelled display equations"
    assert "{cite}`" in text or "{cite:" in text, "cites its sources"
    exercises = re.findall(r"^:::\{exercise\}", text, re.M)
    solutions = re.findall(r"^:::\{solution\}[^\n]*\n(?::label:[^\n]*\n)?:class: dropdown", text, re.M)
    assert len(exercises) >= 3, f"at least three exercises (found {len(exercises)})"
    assert len(solutions) >= len(exercises), "every exercise has a collapsed solution"
    assert "it can be shown" not in text.lower(), "derive, don't assert"
    words = len(re.sub(r"\$\$.*?\$\$", " ", text, flags=re.S).split())
    assert words >= 1500, f"about 1,500-4,000 words expected, found {words}"


@pytest.mark.parametrize("part, page, lab", CHAPTERS, ids=IDS)
def test_lab_structure(part, page, lab):
    nb = json.loads((ROOT / f"{lab}.ipynb").read_text())
    cells = nb["cells"]
    first, second = cells[0], cells[1]
    assert first["cell_type"] == "markdown" and _cell_text(first).lstrip().startswith("# "), "title cell"
    assert f"{SITE_URL}/{page}.html" in _cell_text(first), f"first cell links to {SITE_URL}/{page}.html"
    boot = _cell_text(second)
    assert second["cell_type"] == "code", "the second cell is the bootstrap"
    assert "import minilib" in boot and "%pip install" in boot, "bootstrap installs minilib when missing"
    assert f'"git+{REPO_URL}@{ref_for(minilib.__version__)}"' in boot, "bootstrap installs from the repository at the book's ref"
    assert 'minilib.setup(seed=' in boot and f'expects="{minilib.__version__}"' in boot, "bootstrap calls setup()"
    assert len(boot.splitlines()) <= 12, "the bootstrap reads at a glance"
    tagged = [c for c in cells if c["cell_type"] == "code" and "nbval-check-output" in c.get("metadata", {}).get("tags", [])]
    assert any("check." in _cell_text(c) for c in tagged), "at least one check in a cell tagged nbval-check-output"
    for c in tagged:
        outs = c.get("outputs", [])
        assert outs and all(o["output_type"] == "stream" and o["name"] == "stdout" for o in outs), (
            f"a check cell's only output is its verdict lines:\n{_cell_text(c)[:200]}"
        )
        # nbval compares these cells on other CPUs with the measured values masked: a plain
        # print of a measured number there would differ on a CPU with another vector width.
        printed = "".join("".join(o["text"]) if isinstance(o["text"], list) else o["text"] for o in outs)
        stray = [ln for ln in printed.splitlines() if ln.strip() and not ln.startswith("✓")]
        assert not stray, f"a check cell prints only ✓ verdict lines; move these prints to an untagged cell: {stray[:2]}"
    for c in cells:
        if c["cell_type"] == "markdown":
            bad = MYST_ONLY.search(_cell_text(c))
            assert not bad, f"MyST-only syntax in lab markdown (shows as junk in Colab): {bad.group(0)!r}"
    for c in cells:  # a markdown heading that ended up as comments at the end of a code cell never renders
        if c["cell_type"] == "code":
            swallowed = re.search(r"^# (#{1,4} \S.*|%%.*)$", _cell_text(c), re.M)
            assert not swallowed, f"markdown swallowed into a code cell as a comment: {swallowed.group(0)!r}"
    assert any(c["cell_type"] == "markdown" and re.search(r"^#+\s*Try this", _cell_text(c), re.M) for c in cells), (
        "the lab ends with a 'Try this' list"
    )
    assert any("minilib.show(" in _cell_text(c) for c in cells if c["cell_type"] == "code"), "shows minilib source"
    counts = [c.get("execution_count") for c in cells if c["cell_type"] == "code"]
    assert None not in counts and counts == sorted(counts) and len(set(counts)) == len(counts), (
        f"{lab} must be committed executed top to bottom in order: run make refresh NB={lab}.ipynb"
    )


@pytest.mark.parametrize("part, page, lab", CHAPTERS, ids=IDS)
def test_lab_equation_links_resolve(part, page, lab):
    """A lab that cites 'equation (label)' with a link must point at a label that exists."""
    labels = book_labels()
    nb = json.loads((ROOT / f"{lab}.ipynb").read_text())
    for c in nb["cells"]:
        if c["cell_type"] != "markdown":
            continue
        for target, label in re.findall(rf"{re.escape(SITE_URL)}/([\w/.-]+)\.html#equation-([\w:-]+)", _cell_text(c)):
            assert label in labels.get(target, set()), f"{lab}: link to {target}#equation-{label}, which does not exist"


def test_no_lab_outside_the_toc():
    listed = {f"{lab}.ipynb" for _, _, lab in CHAPTERS}
    for path in lab_paths():
        assert path.relative_to(ROOT).as_posix() in listed, f"{path} is not in _toc.yml"


@pytest.mark.parametrize("path", lab_paths(), ids=[p.stem for p in lab_paths()])
def test_lab_outputs_are_fresh(path):
    nb = json.loads(path.read_text())
    reasons = stale_reasons(nb)
    rel = path.relative_to(ROOT).as_posix()
    assert not reasons, f"{rel} has stale outputs: {'; '.join(reasons)}. Run: make refresh NB={rel}"


def _implemented_labels() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for py in sorted((ROOT / "minilib").glob("*.py")):
        tree = ast.parse(py.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)):
                doc = ast.get_docstring(node) or ""
                for group in IMPLEMENTS.findall(doc):
                    for label in re.findall(r"\(([A-Za-z0-9_:-]+)\)", group):
                        found.setdefault(label, set()).add(py.name)
    return found


def test_equation_labels_named_in_minilib_exist_in_the_book():
    labels = set().union(*book_labels().values())
    implemented = _implemented_labels()
    missing = {lab: sorted(files) for lab, files in implemented.items() if lab not in labels}
    assert not missing, f"docstrings name equation labels that no book page defines: {missing}"


def test_book_equation_labels_are_unique():
    seen: dict[str, str] = {}
    for md in sorted((ROOT / "book").rglob("*.md")):
        for label in EQ_LABEL.findall(md.read_text()):
            assert label not in seen, f"equation label {label!r} is defined in {seen.get(label)} and {md}"
            seen[label] = str(md)


def test_repository_url_is_defined_once_and_agreed_on():
    assert minilib.REPOSITORY == REPO_URL, "minilib.REPOSITORY must equal repository.url in _config.yml"
    assert SITE_URL.startswith("https://"), "html.baseurl is the published site"


def test_every_minilib_module_is_on_the_api_page():
    # the API reference is book/api.md and its per-part pages book/api/*.md
    api = "\n".join(p.read_text() for p in [ROOT / "book" / "api.md", *sorted((ROOT / "book" / "api").glob("*.md"))])
    for py in sorted((ROOT / "minilib").glob("*.py")):
        if py.name.startswith("_"):
            continue
        name = f"minilib.{py.stem}"
        assert re.search(rf"\.\. auto(module|function|class):: {re.escape(name)}\b", api), (
            f"{name} is not documented on book/api.md"
        )


def test_no_proof_is_collapsed_by_a_class():
    """`:class: dropdown` on a sphinx-proof block makes sphinx-togglebutton look for a title bar
    the block does not have; the script then throws and no dropdown after it on the page works.
    Collapse a proof by wrapping it in a ``{dropdown}`` block instead."""
    bad = []
    for md in sorted((ROOT / "book").rglob("*.md")):
        lines = md.read_text().splitlines()
        for i, line in enumerate(lines[:-1]):
            if re.match(r"^\s*(`{3,}|:{3,})\{prf:[a-z]+\}", line):
                j = i + 1
                while j < len(lines) and lines[j].lstrip().startswith(":"):
                    if re.match(r"^\s*:class:.*dropdown", lines[j]):
                        bad.append(f"{md.relative_to(ROOT)}:{j + 1}")
                    j += 1
    assert not bad, f"prf blocks collapsed with :class: dropdown (breaks every dropdown on the page): {bad}"


def test_every_public_minilib_name_is_exported():
    """The API page documents a module through its ``__all__`` when it has one (automodule
    :members:), so a public function or class left out of it would be missing from the API."""
    import importlib
    import inspect

    missing = []
    for py in sorted((ROOT / "minilib").glob("*.py")):
        if py.name.startswith("_"):
            continue
        mod = importlib.import_module(f"minilib.{py.stem}")
        if not hasattr(mod, "__all__"):
            continue  # without __all__, autodoc documents every public member
        exported = set(mod.__all__)
        for name, obj in vars(mod).items():
            if name.startswith("_") or not (inspect.isfunction(obj) or inspect.isclass(obj)):
                continue
            if obj.__module__ == mod.__name__ and name not in exported:
                missing.append(f"{mod.__name__}.{name}")
    assert not missing, f"public names not in their module's __all__: {missing}"


def test_readme_says_truly_how_the_site_is_published():
    """The README's address is html.baseurl, and the workflow it names tests, builds and deploys."""
    readme = (ROOT / "README.md").read_text()
    assert f"<{SITE_URL}/>" in readme, "the README gives the site address of _config.yml's html.baseurl"
    assert ".github/workflows/pages.yml" in readme, "the README names the workflow that publishes the site"
    flow = yaml.safe_load((ROOT / ".github/workflows/pages.yml").read_text())
    steps = [s.get("run", "") + s.get("uses", "") for job in flow["jobs"].values() for s in job["steps"]]
    assert any("bash .ci/run" in s for s in steps), "the workflow runs the test suite"
    assert any("make book" in s for s in steps), "the workflow builds the book"
    assert any(s.startswith("actions/upload-pages-artifact") for s in steps)
    assert any(s.startswith("actions/deploy-pages") for s in steps)
    assert "is published at" not in readme, "the README does not claim a site that a workflow has not deployed"


def test_corrections_headings_carry_the_current_chapter_numbers():
    """The corrections page names each chapter by its number; a chapter inserted earlier in the
    toc renumbers the later ones, so the headings must follow the toc, not be typed once."""
    from tools.numbering import chapter_numbers

    numbers = chapter_numbers(ROOT / "_toc.yml")
    text = (ROOT / "book" / "corrections.md").read_text()
    headings = re.findall(r"^### \[(\d+) [^\]]+\]\(([^)]+)\.md\)", text, flags=re.M)
    assert headings, "the corrections page has no chapter headings"
    wrong = [f"{path}: {num} (toc: {numbers.get('book/' + path)})" for num, path in headings
             if numbers.get("book/" + path) != int(num)]
    assert not wrong, f"corrections headings with stale chapter numbers: {wrong}"
