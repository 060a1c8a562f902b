"""ruff (configured in pyproject.toml) finds nothing in the library, tests, tools and labs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tools.labs import ROOT


def test_ruff_is_clean():
    ruff = Path(sys.executable).parent / "ruff"
    proc = subprocess.run(
        [str(ruff), "check", "--output-format", "concise", "minilib", "tests", "tools", "bench", "notebooks", "conftest.py"],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]


def test_no_control_characters_in_book_text():
    """A `\\t` or `\\r` typed into a Python string that wrote a page becomes a tab or carriage
    return, which silently breaks LaTeX such as `\\times` or `\\rvert` (it happened on the
    notation page). Pages, notebooks and the bibliography hold no control character but newline."""
    bad = []
    files = [*ROOT.glob("book/**/*.md"), *ROOT.glob("notebooks/**/*.ipynb"), ROOT / "book/references.bib"]
    for path in files:
        data = path.read_bytes()
        for i, byte in enumerate(data):
            if byte < 0x20 and byte != 0x0A:
                line = data[:i].count(b"\n") + 1
                bad.append(f"{path.relative_to(ROOT)}:{line}: control byte 0x{byte:02x}")
                break
    assert not bad, "\n".join(bad)


def test_no_doubled_kind_before_a_numbered_reference():
    """`{ref}` to an exercise and `{prf:ref}` to a theorem render with their kind and number
    ("Exercise 34", "Theorem 90"), so "exercise {ref}`x`" reads "exercise Exercise 34" on the site
    (it did, in 13 chapters). Write the role alone."""
    import re

    pattern = re.compile(
        r"\b(exercises?|solutions?|theorems?|propositions?|lemmas?|corollar(?:y|ies)|definitions?|algorithms?)"
        r"\s+\{(?:prf:)?ref\}`", re.I)
    bad = []
    for path in sorted(ROOT.glob("book/**/*.md")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                bad.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()[:100]}")
    assert not bad, "\n".join(bad)


def test_each_reference_role_matches_its_target():
    """An exercise or solution label is reached with `{ref}`, a sphinx-proof label (theorem,
    proof, definition, ...) with `{prf:ref}`; the wrong role is a broken reference that only the
    full site build reports (it did, in a new chapter)."""
    import re

    exercise_labels, proof_labels, uses = set(), set(), []
    directive = re.compile(r"^\s*(`{3,}|:{3,})\{(prf:[a-z]+|exercise|solution)\}")
    for path in sorted(ROOT.glob("book/**/*.md")):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            m = directive.match(line)
            if m:
                for opt in lines[i + 1:i + 6]:
                    lab = re.match(r"^\s*:label:\s*(\S+)", opt)
                    if lab:
                        (proof_labels if m.group(2).startswith("prf:") else exercise_labels).add(lab.group(1))
                        break
                    if not opt.lstrip().startswith(":"):
                        break
            for role, target in re.findall(r"\{(prf:ref|ref)\}`(?:[^`<]*<)?([^`>]+)>?`", line):
                uses.append((f"{path.relative_to(ROOT)}:{i + 1}", role, target))
    assert exercise_labels and proof_labels and uses
    bad = [f"{where}: {{{role}}}`{target}`" for where, role, target in uses
           if (role == "prf:ref" and target in exercise_labels) or (role == "ref" and target in proof_labels)]
    assert not bad, "wrong role for the target's kind:\n" + "\n".join(bad)
