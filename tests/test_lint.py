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
