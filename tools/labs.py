"""What the refresh script and the tests share about labs: where they are, and their stamps.

A lab's stamp lives in its notebook metadata under ``derive_and_run``:

* ``code_sha256``: hash of the lab's code cells, in order;
* ``minilib``: ``{module name: sha256 of its source file}`` for every ``minilib`` module the
  lab's kernel had imported when ``make refresh`` executed it;
* ``minilib_version`` and ``seconds`` (the wall time of that execution).

A lab whose stamp no longer matches its code or the minilib sources it used is stale.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
STAMP_KEY = "derive_and_run"


def lab_paths() -> list[Path]:
    return sorted(p for p in NOTEBOOKS.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def code_sha256(nb: dict) -> str:
    """Hash of the code cells, in order. The bootstrap's pins (the git ref it installs minilib
    from and the version it expects) are masked: they change at a release (tools/release.py)
    and do not change what the lab computes."""
    from tools.release import BOOT_EXPECTS, BOOT_REF

    sources = []
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            src = cell["source"]
            src = ("".join(src) if isinstance(src, list) else src).rstrip()
            if not sources:  # the bootstrap
                src = BOOT_EXPECTS.sub(r"\g<1>*\g<3>", BOOT_REF.sub(r"\g<1>*\g<3>", src))
            sources.append(src)
    return hashlib.sha256(json.dumps(sources).encode()).hexdigest()


def module_file(module: str) -> Path:
    parts = module.split(".")
    if parts[0] != "minilib":
        raise ValueError(f"not a minilib module: {module}")
    base = ROOT.joinpath(*parts)
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def module_sha256(module: str) -> str | None:
    path = module_file(module)
    if not path.exists():
        return None
    return hashlib.sha256(path.read_bytes()).hexdigest()


def stale_reasons(nb: dict) -> list[str]:
    """Why the committed outputs of this lab no longer match its code; empty when fresh."""
    stamp = nb.get("metadata", {}).get(STAMP_KEY)
    if not stamp:
        return ["it has no execution stamp (it was never run through `make refresh`)"]
    reasons = []
    if stamp.get("code_sha256") != code_sha256(nb):
        reasons.append("its code cells changed since it was executed")
    for module, digest in sorted(stamp.get("minilib", {}).items()):
        if module_sha256(module) != digest:
            reasons.append(f"{module_file(module).relative_to(ROOT)} changed since it was executed")
    return reasons
