"""environment.yml (for conda users) agrees with the pinned requirement files."""

from __future__ import annotations

import re

import yaml

from tools.labs import ROOT


def _pins(path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==")
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


REQ = {**_pins(ROOT / "requirements/dev.txt"), **_pins(ROOT / "requirements/torch.txt")}
ENV = yaml.safe_load((ROOT / "environment.yml").read_text())


def _env_pins() -> dict[str, str]:
    pins = {}
    for dep in ENV["dependencies"]:
        if isinstance(dep, dict):
            for line in dep.get("pip", []):
                name, version = line.split("==")
                pins[name.strip().lower().replace("_", "-")] = version.strip()
        else:
            m = re.fullmatch(r"([A-Za-z0-9_.-]+)=([0-9][^=\s]*)", dep.strip())
            if m and m.group(1) != "python":
                pins[m.group(1).lower()] = m.group(2)
    return pins


def test_every_environment_pin_matches_the_requirements():
    env = _env_pins()
    assert env, "environment.yml pins nothing"
    wrong = {k: (v, REQ.get(k)) for k, v in env.items() if REQ.get(k) != v}
    assert not wrong, f"environment.yml disagrees with requirements/*.txt (env, req): {wrong}"


def test_environment_covers_the_toolchain_and_minilib_dependencies():
    env = _env_pins()
    needed = {"torch", "numpy", "matplotlib", "ipywidgets", "tqdm", "jupyter-book", "sphinx", "myst-nb",
              "sphinx-proof", "sphinx-exercise", "sphinxcontrib-bibtex", "pytest", "nbval", "playwright"}
    assert needed <= set(env), f"environment.yml lacks {sorted(needed - set(env))}"


def test_python_version_is_supported():
    py = [d for d in ENV["dependencies"] if isinstance(d, str) and d.startswith("python=")]
    assert py and tuple(int(x) for x in py[0].split("=")[1].split(".")[:2]) >= (3, 10)


def test_torch_is_pinned_to_the_cpu_wheel_version():
    assert REQ["torch"] == "2.13.0"
    assert "jupyter-book" in REQ and REQ["jupyter-book"].startswith("1.0.4")
