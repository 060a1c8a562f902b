"""The lab tooling: the percent-script converter and the freshness stamp."""

from __future__ import annotations

import copy

import nbformat

from tools import labs, nbpy

SCRIPT = '''# %% [markdown]
# # A lab
#
# With $x^2$ math.

# %%
x = 1

# %% tags=["nbval-check-output"]
print(x)
'''


def test_percent_script_round_trip():
    cells = nbpy.py_to_cells(SCRIPT)
    assert [c.cell_type for c in cells] == ["markdown", "code", "code"]
    assert cells[0].source == "# A lab\n\nWith $x^2$ math."
    assert cells[2].metadata["tags"] == ["nbval-check-output"]
    nb = nbformat.v4.new_notebook(cells=cells)
    again = nbpy.py_to_cells(nbpy.cells_to_py(nb))
    assert [(c.cell_type, c.source, c.metadata.get("tags")) for c in again] == [
        (c.cell_type, c.source, c.metadata.get("tags")) for c in cells
    ]


def _stamped(nb):
    nb = copy.deepcopy(nb)
    nb.metadata[labs.STAMP_KEY] = {
        "code_sha256": labs.code_sha256(nb),
        "minilib": {"minilib.check": labs.module_sha256("minilib.check")},
    }
    return nb


def test_stamp_detects_code_changes_but_not_markdown_or_outputs():
    nb = nbformat.v4.new_notebook(cells=nbpy.py_to_cells(SCRIPT))
    assert labs.stale_reasons(nb), "an unstamped lab is stale"
    fresh = _stamped(nb)
    assert labs.stale_reasons(fresh) == []
    fresh.cells[0].source += "\nmore prose"
    fresh.cells[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    assert labs.stale_reasons(fresh) == []
    fresh.cells[1].source = "x = 2"
    assert labs.stale_reasons(fresh) == ["its code cells changed since it was executed"]


def test_stamp_detects_minilib_changes():
    nb = _stamped(nbformat.v4.new_notebook(cells=nbpy.py_to_cells(SCRIPT)))
    nb.metadata[labs.STAMP_KEY]["minilib"]["minilib.check"] = "0" * 64
    assert labs.stale_reasons(nb) == ["minilib/check.py changed since it was executed"]


def test_module_files_resolve():
    assert labs.module_file("minilib").name == "__init__.py"
    assert labs.module_file("minilib.check").name == "check.py"


def test_lab_groups_cover_every_lab_once_within_grahams_bound():
    """tools.run_labs splits labs between workers longest first; each lab runs exactly once and
    the longest group is within Graham's 4/3 - 1/(3n) of the best split, found by brute force."""
    import itertools
    import random
    from pathlib import Path

    import pytest

    from tools.run_labs import balanced_groups

    rng = random.Random(0)
    for _ in range(30):
        n = rng.choice([1, 2, 3])
        weights = {Path(f"lab{i}.ipynb"): rng.uniform(1, 60) for i in range(rng.randint(1, 8))}
        groups = balanced_groups(weights, n)
        flat = [p for g in groups for p in g]
        assert sorted(flat) == sorted(weights) and len(groups) <= n
        worst = max(sum(weights[p] for p in g) for g in groups)
        labs = list(weights)
        best = min(max(sum(weights[p] for p, k in zip(labs, assign) if k == j) for j in range(n))
                   for assign in itertools.product(range(n), repeat=len(labs)))
        assert worst <= (4 / 3 - 1 / (3 * n)) * best + 1e-9
    with pytest.raises(ValueError, match="n must be"):
        balanced_groups({Path("a.ipynb"): 1.0}, 0)
