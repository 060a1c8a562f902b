"""The chapter 1 lab in a Colab-like environment.

A fresh venv gets only what Google Colab preinstalls (torch, numpy, matplotlib, ipywidgets,
ipykernel, tqdm) and no minilib. The lab's own bootstrap cell must install minilib (here from
this checkout, through MINILIB_SOURCE) and the lab must then run top to bottom.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tools.labs import ROOT

pytestmark = pytest.mark.slow

LAB = ROOT / "notebooks" / "attention" / "online-softmax.ipynb"
COLAB_PACKAGES = ["torch==2.13.0", "numpy", "matplotlib", "ipywidgets", "ipykernel", "tqdm"]


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return proc


@pytest.fixture(scope="module")
def colab_kernel(tmp_path_factory) -> tuple[str, Path, dict, Path]:
    base = tmp_path_factory.mktemp("colab")
    venv = base / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    py = venv / "bin" / "python"
    # torch first and pinned, so nothing pulls a CUDA build.
    _run([str(py), "-m", "pip", "install", "-q", COLAB_PACKAGES[0]])
    _run([str(py), "-m", "pip", "install", "-q", *COLAB_PACKAGES[1:]])
    probe = subprocess.run([str(py), "-c", "import minilib"], capture_output=True, cwd=base)
    assert probe.returncode != 0, "the Colab-like venv must start without minilib"
    kernels = base / "jupyter"
    _run([str(py), "-m", "ipykernel", "install", "--prefix", str(kernels), "--name", "colab-like"])
    env = {
        **os.environ,
        "JUPYTER_PATH": str(kernels / "share" / "jupyter"),
        "MINILIB_SOURCE": str(ROOT),  # the bootstrap installs from this checkout, not GitHub
        "MINILIB_DEVICE": "cpu",
    }
    env.pop("PYTHONPATH", None)
    return "colab-like", py, env, base


def test_chapter1_lab_runs_in_a_colab_like_venv(colab_kernel, tmp_path, monkeypatch):
    kernel_name, py, env, base = colab_kernel
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("PYTHONPATH", raising=False)
    nb = nbformat.read(LAB, as_version=4)
    client = NotebookClient(nb, kernel_name=kernel_name, timeout=600, resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    boot = nb.cells[1]
    text = "".join(o.get("text", "") for o in boot.outputs if o.get("output_type") == "stream")
    assert "minilib" in text and "device cpu" in text, text
    # The bootstrap really installed minilib into the fresh venv, at the book's version.
    proc = _run([str(py), "-c", "import json, minilib; print(json.dumps([minilib.__version__, minilib.__file__]))"], cwd=base)
    version, where = json.loads(proc.stdout)
    import minilib

    assert version == minilib.__version__
    assert str(ROOT) not in where, "minilib must be installed into the venv, not imported from the checkout"
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.get("output_type") == "error"]
    assert not errors, errors
