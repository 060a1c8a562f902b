"""Versions and the ref a lab's bootstrap installs ``minilib`` from.

The invariant: *the library a lab installs is the library the book was built with.*

* On ``main`` the version is a development version (``0.2.0.dev0``) and every lab's bootstrap
  installs ``minilib`` from the branch ``main``: a Colab reader who opens a lab from ``main``
  gets the ``minilib`` of that same commit, with every function the lab calls.
* A release ``x.y.z`` is a commit whose version is ``x.y.z``, whose bootstraps install from the
  tag ``vx.y.z``, and which carries that tag; right after it, ``main`` moves on to the next
  development version and its bootstraps go back to ``main``.

``make release VERSION=x.y.z`` does all of it (it needs a clean work tree on ``main``):

1. set ``minilib.__version__`` to ``x.y.z`` and pin every bootstrap to ``@vx.y.z``;
2. commit "Release vx.y.z" and tag it ``vx.y.z`` (annotated);
3. set the version to ``x.y.(z+1).dev0``, point the bootstraps back at ``main``, and commit.

Push with ``git push --follow-tags``. The pin is not part of a lab's freshness stamp
(``tools/labs.py`` masks it), so a release re-executes nothing. ``tests/test_release.py``
checks the invariant: every bootstrap's ref resolves, in this repository, to a ``minilib``
that defines every ``minilib`` name the lab imports.

Usage: ``python -m tools.release VERSION`` (a release) or ``python -m tools.release --set VERSION``
(only rewrite the version and the bootstraps, e.g. to start a development version).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INIT = ROOT / "minilib" / "__init__.py"
BRANCH = "main"
_VERSION = re.compile(r"^\d+\.\d+\.\d+(\.dev\d+)?$")
_INIT_VERSION = re.compile(r'^__version__ = "([^"]+)"$', re.M)
#: The pinned parts of a bootstrap cell: the install ref and the expected version.
BOOT_REF = re.compile(r'(git\+https://[^"@\s]+@)([^"\s]+)(")')
BOOT_EXPECTS = re.compile(r'(expects=")([^"]+)(")')


def is_dev(version: str) -> bool:
    return ".dev" in version


def ref_for(version: str) -> str:
    """The git ref a bootstrap installs from: ``main`` for a development version, else the tag."""
    if not _VERSION.match(version):
        raise ValueError(f"version must look like 1.2.3 or 1.3.0.dev0, got {version!r}")
    return BRANCH if is_dev(version) else f"v{version}"


def current_version() -> str:
    m = _INIT_VERSION.search(INIT.read_text())
    if not m:
        raise RuntimeError(f"no __version__ line in {INIT}")
    return m.group(1)


def _bootstrap(nb: dict) -> dict | None:
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code":
            return cell
    return None


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def bootstrap_pins(nb: dict) -> tuple[str | None, str | None]:
    """(install ref, expected version) of a lab's bootstrap cell."""
    cell = _bootstrap(nb)
    if cell is None:
        return None, None
    text = _source(cell)
    ref, exp = BOOT_REF.search(text), BOOT_EXPECTS.search(text)
    return (ref.group(2) if ref else None), (exp.group(2) if exp else None)


def set_version(version: str) -> list[Path]:
    """Write ``version`` into minilib and every lab's bootstrap; return the files changed."""
    from tools.labs import lab_paths

    ref = ref_for(version)
    changed = []
    text = INIT.read_text()
    new = _INIT_VERSION.sub(f'__version__ = "{version}"', text)
    if new != text:
        INIT.write_text(new)
        changed.append(INIT)
    for path in lab_paths():
        raw = path.read_text()
        nb = json.loads(raw)
        cell = _bootstrap(nb)
        if cell is None:
            continue
        src = _source(cell)
        out = BOOT_EXPECTS.sub(lambda m: m.group(1) + version + m.group(3), BOOT_REF.sub(lambda m: m.group(1) + ref + m.group(3), src))
        if out != src:
            cell["source"] = out.splitlines(keepends=True)
            path.write_text(json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False) + "\n")  # as nbformat writes
            changed.append(path)
    return changed


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()


def next_dev(version: str) -> str:
    major, minor, patch = (int(x) for x in version.split("."))
    return f"{major}.{minor}.{patch + 1}.dev0"


def release(version: str) -> None:
    if is_dev(version) or not _VERSION.match(version):
        raise SystemExit(f"VERSION must be a release version like 1.2.3, got {version!r}")
    if _git("status", "--porcelain"):
        raise SystemExit("the work tree has uncommitted changes: commit or stash them first")
    if _git("rev-parse", "--abbrev-ref", "HEAD") != BRANCH:
        raise SystemExit(f"releases are made from {BRANCH}")
    if subprocess.run(["git", "rev-parse", "-q", "--verify", f"refs/tags/v{version}"], cwd=ROOT).returncode == 0:
        raise SystemExit(f"the tag v{version} exists already")
    files = [str(p) for p in set_version(version)]
    _git("add", *files)
    _git("commit", "-q", "-m", f"Release v{version}: labs install minilib from the tag v{version}")
    _git("tag", "-a", f"v{version}", "-m", f"Derive & Run v{version}")
    dev = next_dev(version)
    files = [str(p) for p in set_version(dev)]
    _git("add", *files)
    _git("commit", "-q", "-m", f"Start {dev}: labs install minilib from {BRANCH} again")
    print(f"tagged v{version}; main is now {dev}. Publish with: git push --follow-tags")


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--set":
        for p in set_version(argv[1]):
            print(f"updated {p.relative_to(ROOT)}")
        return 0
    if len(argv) == 1:
        release(argv[0])
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
