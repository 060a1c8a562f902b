"""minilib's core: setup, check, show, widgets, viz."""

from __future__ import annotations

import io
import random

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import minilib  # noqa: E402
from minilib import check  # noqa: E402
from minilib.widgets import explorer  # noqa: E402


# -- setup --------------------------------------------------------------------------------
def test_setup_seeds_every_generator():
    minilib.setup(7, device="cpu", style=False, quiet=True)
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    minilib.setup(7, device="cpu", style=False, quiet=True)
    b = (random.random(), np.random.rand(), torch.rand(1).item())
    assert a == b
    minilib.setup(8, device="cpu", style=False, quiet=True)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) != a


def test_setup_device_and_threads(monkeypatch):
    threads = torch.get_num_threads()
    try:
        monkeypatch.setenv("MINILIB_DEVICE", "meta")
        cfg = minilib.setup(0, style=False, quiet=True)
        assert cfg.device.type == "meta" and cfg.scale == 1 and cfg.threads == 1
        assert torch.get_num_threads() == 1
        monkeypatch.delenv("MINILIB_DEVICE")
        cfg = minilib.setup(0, threads=2, style=False, quiet=True)
        expected = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
        assert cfg.device.type == expected
        assert torch.get_num_threads() == 2
        assert cfg.scaled(10) == 10 * cfg.scale
    finally:
        torch.set_num_threads(threads)


def test_setup_prints_summary(capsys):
    minilib.setup(0, device="cpu", style=False)
    assert f"minilib {minilib.__version__}" in capsys.readouterr().out


def test_setup_version_mismatch_prints_the_fix():
    with pytest.raises(RuntimeError, match=r"(?s)expects minilib 9\.9\.9.*pip install -U .*@v9\.9\.9"):
        minilib.setup(0, expects="9.9.9", style=False, quiet=True)
    minilib.setup(0, expects=minilib.__version__, device="cpu", style=False, quiet=True)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"seed": -1}, ValueError, "seed"),
        ({"seed": 1.5}, ValueError, "seed"),
        ({"device": "tpu9"}, ValueError, "device"),
        ({"threads": 0}, ValueError, "threads"),
    ],
)
def test_setup_bad_input(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        minilib.setup(**{"style": False, "quiet": True, **kwargs})


def test_setup_rejects_unavailable_cuda(monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ValueError, match="cuda"):
        minilib.setup(0, device="cuda", style=False, quiet=True)


def test_setup_applies_style():
    matplotlib.rcdefaults()
    minilib.setup(0, device="cpu", quiet=True)
    assert matplotlib.rcParams["figure.facecolor"] == "white"
    assert matplotlib.rcParams["axes.prop_cycle"].by_key()["color"][0] == minilib.viz.PALETTE[0]


# -- check --------------------------------------------------------------------------------
def test_close_passes_and_prints_error(capsys):
    check.close(torch.tensor([1.0, 2.0]), np.array([1.0, 2.0 + 1e-7]), "vectors", atol=1e-6)
    assert capsys.readouterr().out.strip() == "✓ vectors (max abs err 1.0e-07)"


def test_close_fails_with_location():
    with pytest.raises(check.CheckFailed, match=r"index \(1,\)"):
        check.close(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.1]), "vectors")


def test_close_shape_mismatch_is_a_failure():
    with pytest.raises(check.CheckFailed, match="shape"):
        check.close(torch.zeros(3), torch.zeros(3, 1), "shapes")


def test_close_inf_and_nan_handling():
    inf = float("inf")
    check.close(torch.tensor([inf, -inf]), torch.tensor([inf, -inf]), "infinities")
    with pytest.raises(check.CheckFailed):
        check.close(torch.tensor([inf]), torch.tensor([-inf]), "opposite infinities")
    with pytest.raises(check.CheckFailed, match="NaN"):
        check.close(torch.tensor([float("nan")]), torch.tensor([0.0]), "nan")


def test_check_helpers_fail_when_they_should():
    with pytest.raises(check.CheckFailed):
        check.true(False, "false")
    with pytest.raises(check.CheckFailed):
        check.less(2.0, 1.0, "two below one")
    with pytest.raises(check.CheckFailed):
        check.less(float("nan"), 1.0, "nan below one")
    with pytest.raises(check.CheckFailed):
        check.equal(torch.tensor([1, 2]), torch.tensor([1, 3]), "ints")
    with pytest.raises(check.CheckFailed):
        check.raises(ValueError, lambda: None, "no error")
    with pytest.raises(TypeError):  # a different error propagates
        check.raises(ValueError, lambda: (_ for _ in ()).throw(TypeError("x")), "wrong error")


def test_check_bad_arguments():
    with pytest.raises(TypeError, match="what"):
        check.true(True, "")
    with pytest.raises(TypeError, match="cond"):
        check.true("yes", "string condition")
    with pytest.raises(ValueError, match="atol"):
        check.close(1.0, 1.0, "x", atol=-1)
    with pytest.raises(TypeError, match="meta"):
        check.close(torch.zeros(2, device="meta"), torch.zeros(2), "meta")


# -- show ---------------------------------------------------------------------------------
def test_show_renders_source_and_html():
    src = minilib.show(check.true)
    assert repr(src).startswith("def true(")
    html = src._repr_html_()
    assert "minilib.check.true" in html and "<pre" in html


def test_show_rejects_non_code():
    with pytest.raises(TypeError, match="function"):
        minilib.show(42)


# -- widgets ------------------------------------------------------------------------------
def _render(a, b="x"):
    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.set_title(f"{a} {b}")
    ax.plot([0, 1], [0, float(a)])
    return fig


def test_explorer_static_player_renders_the_full_grid_when_small():
    ex = explorer(_render, {"a": [1, 2, 3], "b": ["x", "y"]}, defaults={"a": 2})
    assert ex.mode == "grid" and len(ex.frames) == 6 and len(ex.images) == 6
    html = ex.static_html()
    assert html.count('class="dr-frame"') == 6
    # one control per parameter: a menu for b (two values), a slider would need more than three
    assert html.count('class="dr-select dr-control"') == 2 and "dr-slider" not in html
    assert 'data-mode="grid"' in html and "Every combination" in html
    # the frame shown first is the defaults' frame; each frame was rendered with its own values
    shown = html.split('style="max-width:100%;height:auto;display:block"')[0].rsplit('<img class="dr-frame" alt="', 1)[1]
    assert shown.startswith("a = 2, b = x")
    assert not plt.get_fignums()  # every rendered figure was closed


def test_explorer_renders_each_control_alone_when_the_grid_is_large():
    ex = explorer(_render, {"a": list(range(10)), "b": ["x", "y", "z"]}, defaults={"a": 4}, max_frames=12)
    assert ex.mode == "axes"
    assert sorted(ex.frames) == sorted({(a, "x") for a in range(10)} | {(4, "y"), (4, "z")})
    html = ex.static_html()
    assert 'type="range"' in html and 'max="9"' in html and 'value="4"' in html
    assert "one control at a time" in html


def test_explorer_stores_identical_frames_once_and_as_palette_pngs():
    from PIL import Image

    ex = explorer(_render, {"a": [1, 2], "b": ["x", "y"]}, max_frames=4)
    assert len(ex.frames) == 4 and len(ex.images) == 4
    same = explorer(lambda a, b: _render(a), {"a": [1, 2], "b": ["x", "y"]})
    assert len(same.frames) == 4 and len(same.images) == 2  # b does not change the figure
    with Image.open(io.BytesIO(ex.images[0])) as im:
        assert im.mode == "P"


def test_explorer_subsamples_long_parameters_keeping_the_ends_and_the_default():
    ex = explorer(_render, {"a": list(range(100))}, static_frames=5)
    assert ex.static_values["a"] == [0, 25, 50, 74, 99]
    ex = explorer(_render, {"a": list(range(100))}, static_frames=5, defaults={"a": 10})
    assert ex.static_values["a"] == [0, 10, 25, 50, 74, 99]


def test_explorer_bundle_outside_a_kernel_is_html_only():
    bundle = explorer(_render, {"a": [1, 2]})._repr_mimebundle_()
    assert set(bundle) == {"text/plain", "text/html"}


def test_explorer_widget_redraws_on_change():
    ex = explorer(_render, {"a": [1, 2, 3, 4], "b": ["x", "y"]})
    box = ex.widget()
    slider, buttons, out = box.children
    assert slider.value == 1 and buttons.value == "x"
    slider.value = 3
    buttons.value = "y"
    assert slider.value == 3
    assert not plt.get_fignums()


def test_explorer_frames_are_deterministic():
    a = explorer(_render, {"a": [1, 2]}).static_html()
    b = explorer(_render, {"a": [1, 2]}).static_html()
    assert a == b


@pytest.mark.parametrize(
    "args, kwargs, exc, match",
    [
        ((42, {"a": [1]}), {}, TypeError, "render"),
        ((_render, {}), {}, ValueError, "params"),
        ((_render, {"not valid": [1]}), {}, ValueError, "identifiers"),
        ((_render, {"a": "abc"}), {}, TypeError, "sequence"),
        ((_render, {"a": []}), {}, ValueError, "at least one"),
        ((_render, {"a": [1, 2]}), {"defaults": {"a": 5}}, ValueError, "not one of"),
        ((_render, {"a": [1, 2]}), {"defaults": {"z": 5}}, ValueError, "unknown"),
        ((_render, {"a": [1, 2]}), {"static_frames": 1}, ValueError, "static_frames"),
        ((_render, {"a": [1, 2]}), {"max_frames": 0}, ValueError, "max_frames"),
    ],
)
def test_explorer_bad_input(args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        explorer(*args, **kwargs)


def test_explorer_render_must_return_a_figure():
    with pytest.raises(TypeError, match="Figure"):
        explorer(lambda a: 3, {"a": [1, 2]})


def test_figure_png_rejects_non_figures():
    with pytest.raises(TypeError, match="Figure"):
        minilib.viz.figure_png("not a figure")


def _sanitized_verdict(capsys, fn, *args, **kwargs) -> str:
    """What nbval compares: the printed verdict after tests/nbval_sanitize.cfg's masks."""
    import re
    from pathlib import Path

    from nbval.plugin import get_sanitize_patterns

    fn(*args, **kwargs)
    text = capsys.readouterr().out
    patterns = get_sanitize_patterns(Path(__file__).with_name("nbval_sanitize.cfg").read_text())
    assert patterns, "tests/nbval_sanitize.cfg holds no regex/replace pairs"
    for regex, replace in patterns:
        text = re.sub(regex, replace, text)
    return text


def test_sanitizer_masks_measured_values_but_not_verdicts_or_tolerances(capsys):
    s = lambda *a, **k: _sanitized_verdict(capsys, *a, **k)  # noqa: E731
    # measured values differ between CPUs: masked
    assert s(check.less, 3.1e-07, 1e-5, "row sum") == s(check.less, 2.5e-07, 1e-5, "row sum")
    assert s(check.less, 0.11, 0.4, "order", fmt=".2f") == s(check.less, 0.13, 0.4, "order", fmt=".2f")
    assert s(check.less, -0.5, 0.4, "gap", fmt=".2f") == s(check.less, 0.3, 0.4, "gap", fmt=".2f")
    assert s(check.close, 1.0, 1.0 + 3e-7, "x") == s(check.close, 1.0, 1.0 + 1e-7, "x")
    # the wording and the tolerance still count
    assert s(check.less, 0.1, 0.4, "order", fmt=".2f") != s(check.less, 0.1, 0.5, "order", fmt=".2f")
    assert s(check.less, 0.1, 0.4, "order", fmt=".2f") != s(check.less, 0.1, 0.4, "orders", fmt=".2f")
    assert s(check.true, True, "a") != s(check.true, True, "b")


# One deliberately wrong value per helper: each must raise CheckFailed. A new helper in
# check.__all__ without an entry here fails test_every_check_helper_has_a_wrong_value_case.
WRONG_VALUE_CASES = {
    "close": lambda: check.close(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0 + 1e-3]), "off by 1e-3"),
    "equal": lambda: check.equal([1, 2], [1, 3], "lists"),
    "true": lambda: check.true(torch.tensor(False), "false tensor"),
    "less": lambda: check.less(1.0, 1.0, "equal is not less"),
    "greater": lambda: check.greater(0.5, 0.5, "equal is not greater"),
    "between": lambda: check.between(torch.tensor([0.5, 1.2]), 0.0, 1.0, "one element above"),
    "within_se": lambda: check.within_se(np.random.default_rng(0).normal(0.2, 1.0, 4000), 0.0, "biased by 0.2"),
    "monotone": lambda: check.monotone([3.0, 2.0, 2.5, 1.0], "a bump", increasing=False),
    "raises": lambda: check.raises(ValueError, lambda: 1, "nothing raised"),
}


def test_every_check_helper_has_a_wrong_value_case():
    helpers = {n for n in check.__all__ if n != "CheckFailed"}
    assert helpers == set(WRONG_VALUE_CASES), f"add a wrong-value case for {helpers ^ set(WRONG_VALUE_CASES)}"


@pytest.mark.parametrize("name", sorted(WRONG_VALUE_CASES))
def test_every_check_helper_raises_on_a_wrong_value(name, capsys):
    with pytest.raises(check.CheckFailed, match="✗"):
        WRONG_VALUE_CASES[name]()
    assert "✓" not in capsys.readouterr().out


def test_new_check_helpers_pass_on_right_values_and_reject_nan(capsys):
    check.greater(torch.tensor([0.7, 0.9]), 0.5, "every element above", fmt=".2f")
    check.between(0.5, 0.5, 0.5, "closed interval", fmt=".2f")
    check.within_se(np.random.default_rng(1).normal(0.0, 1.0, 4000), 0.0, "unbiased")
    check.monotone([1.0, 0.99, 2.0], "rises within slack", slack=0.02)
    out = capsys.readouterr().out
    assert out.count("✓") == 4 and "0.70 > 0.50" in out and "(3 values, increasing)" in out
    for fn in (
        lambda: check.greater(float("nan"), 0.0, "nan"),
        lambda: check.between(float("nan"), 0.0, 1.0, "nan"),
        lambda: check.within_se([0.0, float("nan")], 0.0, "nan"),
        lambda: check.monotone([0.0, float("nan")], "nan"),
    ):
        with pytest.raises(check.CheckFailed):
            fn()


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: check.between(0.5, 1.0, 0.0, "x"), ValueError, "low must be <= high"),
        (lambda: check.within_se([1.0], 1.0, "x"), ValueError, "at least 2"),
        (lambda: check.within_se([1.0, 2.0], 1.0, "x", z=0), ValueError, "z must be"),
        (lambda: check.monotone([1.0], "x"), ValueError, "at least 2"),
        (lambda: check.monotone([1.0, 2.0], "x", slack=-1), ValueError, "slack must"),
        (lambda: check.greater(1.0, 0.0, ""), TypeError, "what must"),
    ],
)
def test_new_check_helpers_bad_arguments(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_sanitizer_masks_the_new_helpers_measured_values(capsys):
    s = lambda *a, **k: _sanitized_verdict(capsys, *a, **k)  # noqa: E731
    assert s(check.greater, 0.91, 0.5, "acc", fmt=".2f") == s(check.greater, 0.93, 0.5, "acc", fmt=".2f")
    assert s(check.greater, 0.91, 0.5, "acc", fmt=".2f") != s(check.greater, 0.91, 0.6, "acc", fmt=".2f")
    assert s(check.between, 0.51, 0.4, 0.6, "share", fmt=".2f") == s(check.between, 0.55, 0.4, 0.6, "share", fmt=".2f")
    assert s(check.between, 0.51, 0.4, 0.6, "share", fmt=".2f") != s(check.between, 0.51, 0.3, 0.6, "share", fmt=".2f")
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 100), rng.normal(0, 1.1, 100)
    assert s(check.within_se, a, 0.0, "m") == s(check.within_se, b, 0.0, "m")
    assert s(check.within_se, a, 0.0, "m") != s(check.within_se, a, 0.0, "m", z=5.0)


def test_hypothesis_is_derandomized_under_ci():
    import os

    from hypothesis import settings

    if os.environ.get("CI"):
        assert settings().derandomize, "CI runs hypothesis derandomized (tests/conftest.py)"
    assert settings.get_profile("ci").derandomize
