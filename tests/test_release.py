"""The library a lab installs is the library the book was built with (tools/release.py).

Every lab's bootstrap installs minilib from a git ref: `main` while the version is a development
version, the tag `vX.Y.Z` in a release. The ref must resolve in this repository, and the
minilib it names must define every minilib name the lab imports.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess

import pytest

import minilib
from tools import release
from tools.labs import ROOT, lab_paths

LABS = lab_paths()


def _code(nb: dict) -> str:
    cells = [c for c in nb["cells"] if c["cell_type"] == "code"]
    src = "\n".join("".join(c["source"]) if isinstance(c["source"], list) else c["source"] for c in cells)
    return "\n".join("" if ln.lstrip().startswith(("%", "!")) else ln for ln in src.splitlines())


def minilib_names(code: str) -> dict[str, set[str]]:
    """module -> names the code takes from it: ``from minilib.m import a``, ``m.a`` after
    ``from minilib import m``, and ``minilib.a`` / ``minilib.m.a``."""
    tree = ast.parse(code)
    used: dict[str, set[str]] = {}
    aliases: dict[str, str] = {"minilib": "minilib"}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "minilib":
            for a in node.names:
                if node.module == "minilib" and (ROOT / "minilib" / f"{a.name}.py").exists():
                    aliases[a.asname or a.name] = f"minilib.{a.name}"
                    used.setdefault(f"minilib.{a.name}", set())
                else:
                    used.setdefault(node.module, set()).add(a.name)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "minilib":
                    aliases[a.asname or a.name] = a.name
                    used.setdefault(a.name, set())
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            chain, cur = [node.attr], node.value
            while isinstance(cur, ast.Attribute):
                chain.append(cur.attr)
                cur = cur.value
            if isinstance(cur, ast.Name) and cur.id in aliases:
                chain.reverse()
                module = aliases[cur.id]
                while chain and (ROOT / module.replace(".", "/") / f"{chain[0]}.py").exists():
                    module, chain = f"{module}.{chain[0]}", chain[1:]  # a submodule, e.g. minilib.viz
                if chain:
                    used.setdefault(module, set()).add(chain[0])
    return used


def defined_names(source: str) -> set[str]:
    """Top-level names a module defines (functions, classes, assignments, imports)."""
    names: set[str] = set()
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                names |= {n.id for n in ast.walk(t) if isinstance(n, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


def _source_at(ref: str | None, module: str) -> str | None:
    rel = module.replace(".", "/")
    rel = f"{rel}/__init__.py" if (ROOT / rel).is_dir() else f"{rel}.py"
    if ref is None:  # the work tree: what the branch will hold once committed
        path = ROOT / rel
        return path.read_text() if path.exists() else None
    proc = subprocess.run(["git", "show", f"{ref}:{rel}"], cwd=ROOT, capture_output=True, text=True)
    return proc.stdout if proc.returncode == 0 else None


def test_the_version_and_the_ref_agree():
    assert release.ref_for(minilib.__version__) in (release.BRANCH, f"v{minilib.__version__}")
    assert release.ref_for("1.2.3") == "v1.2.3" and release.ref_for("1.3.0.dev0") == "main"
    assert release.next_dev("1.2.3") == "1.2.4.dev0"
    with pytest.raises(ValueError, match="version must"):
        release.ref_for("v1")


@pytest.mark.parametrize("path", LABS, ids=[p.stem for p in LABS])
def test_every_bootstrap_installs_a_minilib_that_has_what_the_lab_uses(path):
    nb = json.loads(path.read_text())
    ref, expects = release.bootstrap_pins(nb)
    assert expects == minilib.__version__, f"{path.name}: setup(expects={expects!r}) but minilib is {minilib.__version__}"
    assert ref == release.ref_for(minilib.__version__), f"{path.name}: installs @{ref}, expected @{release.ref_for(minilib.__version__)}"
    if ref == release.BRANCH:
        at = None  # this checkout is the branch: its minilib is what a reader of main installs
    else:
        ok = subprocess.run(["git", "rev-parse", "-q", "--verify", f"{ref}^{{commit}}"], cwd=ROOT, capture_output=True)
        assert ok.returncode == 0, f"{path.name}: installs @{ref}, which does not exist in this repository (run make release)"
        at = ref
    missing = []
    for module, names in minilib_names(_code(nb)).items():
        src = _source_at(at, module)
        if src is None:
            missing.append(f"module {module}")
            continue
        missing += [f"{module}.{n}" for n in sorted(names - defined_names(src))]
    assert not missing, f"{path.name}: the minilib at {ref} lacks {missing}"


def test_the_name_finder_sees_each_kind_of_use():
    code = (
        "import minilib\nfrom minilib import check, show as sh\nfrom minilib.rl import value_iteration, MDP\n"
        "check.close(1, 1, 'x')\nminilib.setup(seed=0)\nminilib.viz.use_style()\n"
    )
    used = minilib_names(code)
    assert used["minilib.rl"] == {"value_iteration", "MDP"}
    assert "close" in used["minilib.check"]
    assert "setup" in used["minilib"]
    assert "use_style" in used["minilib.viz"]
    assert "nope" in {n for n in minilib_names("from minilib.rl import nope\n")["minilib.rl"]}
    assert "nope" not in defined_names((ROOT / "minilib" / "rl.py").read_text())


def test_the_bootstrap_pin_is_not_part_of_the_freshness_stamp():
    from tools.labs import code_sha256

    nb = json.loads(LABS[0].read_text())
    before = code_sha256(nb)
    cell = next(c for c in nb["cells"] if c["cell_type"] == "code")
    src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
    cell["source"] = release.BOOT_EXPECTS.sub(r"\g<1>9.9.9\g<3>", release.BOOT_REF.sub(r"\g<1>v9.9.9\g<3>", src))
    assert cell["source"] != src
    assert code_sha256(nb) == before
    cell["source"] = src + "\nx = 1"
    assert code_sha256(nb) != before


def test_release_refuses_a_dirty_tree_or_a_dev_version(monkeypatch):
    with pytest.raises(SystemExit, match="release version"):
        release.release("1.0.0.dev0")
    monkeypatch.setattr(release, "_git", lambda *a: " M file" if a[0] == "status" else "main")
    with pytest.raises(SystemExit, match="uncommitted"):
        release.release("1.0.0")


def test_set_version_rewrites_the_bootstraps(tmp_path, monkeypatch):
    lab = tmp_path / "lab.ipynb"
    nb = json.loads(LABS[0].read_text())
    lab.write_text(json.dumps(nb))
    init = tmp_path / "__init__.py"
    init.write_text('__version__ = "0.1.0"\n')
    monkeypatch.setattr(release, "INIT", init)
    monkeypatch.setattr("tools.labs.lab_paths", lambda: [lab])
    release.set_version("2.0.0")
    assert release.bootstrap_pins(json.loads(lab.read_text())) == ("v2.0.0", "2.0.0")
    assert re.search(r'__version__ = "2.0.0"', init.read_text())
    release.set_version("2.0.1.dev0")
    assert release.bootstrap_pins(json.loads(lab.read_text())) == ("main", "2.0.1.dev0")
