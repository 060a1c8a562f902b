"""Explorers: a figure as a function of parameters, live in a kernel and static on the site.

One call, :func:`explorer`, produces both views in a single output:

* in a live kernel (Jupyter, Colab, VS Code) an ipywidgets UI with one slider (or menu) per
  parameter, re-drawing the figure on every change;
* a ``text/html`` player: the figure pre-rendered for each value of the *first* parameter
  (the others at their defaults) behind a plain HTML range slider and a few lines of inline
  JavaScript. It needs no kernel and no network, so it keeps working on the static site,
  where the book's configuration prefers it over the widget view.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["Explorer", "explorer"]


def _label(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _in_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover
        return False
    ip = get_ipython()
    return ip is not None and getattr(ip, "kernel", None) is not None


def _subsample(n: int, k: int) -> list[int]:
    """``k`` evenly spread indices into ``range(n)``, both ends included."""
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


class Explorer:
    """The object :func:`explorer` returns; displaying it shows the explorer.

    Attributes:
        params: the parameter grid, name -> list of values.
        defaults: the value each parameter starts at.
        frames: the static frames as ``(value_of_first_param, png_bytes)`` pairs.
    """

    def __init__(
        self,
        render: Callable[..., Any],
        params: dict[str, list[Any]],
        defaults: dict[str, Any],
        title: str | None,
        static_frames: int,
        dpi: int | None,
    ) -> None:
        self.render = render
        self.params = params
        self.defaults = defaults
        self.title = title
        self.dpi = dpi
        first, values = next(iter(params.items()))
        self.frames: list[tuple[Any, bytes]] = []
        for i in _subsample(len(values), static_frames):
            self.frames.append((values[i], self._png({**defaults, first: values[i]})))
        self._widget: Any = None

    # -- rendering ---------------------------------------------------------------------
    def _figure(self, values: dict[str, Any]) -> Any:
        import matplotlib.pyplot as plt
        from matplotlib.figure import Figure

        fig = self.render(**values)
        if fig is None:
            fig = plt.gcf()
        if not isinstance(fig, Figure):
            raise TypeError(f"render must return a matplotlib Figure, got {type(fig).__name__}")
        return fig

    def _png(self, values: dict[str, Any]) -> bytes:
        import matplotlib.pyplot as plt

        from minilib.viz import figure_png

        fig = self._figure(values)
        try:
            return figure_png(fig, dpi=self.dpi)
        finally:
            plt.close(fig)

    # -- the static player ---------------------------------------------------------------
    def static_html(self) -> str:
        """The kernel-free player: a range slider over the first parameter's frames."""
        first = next(iter(self.params))
        digest = hashlib.sha1(b"".join(p for _, p in self.frames)).hexdigest()[:12]
        uid = f"dr-explorer-{digest}"
        labels = [_label(v) for v, _ in self.frames]
        start = next((i for i, (v, _) in enumerate(self.frames) if v == self.defaults[first]), 0)
        imgs = "".join(
            f'<img class="dr-frame" alt="{html.escape(first)} = {html.escape(lab)}" '
            f'style="max-width:100%;height:auto;display:{"block" if i == start else "none"}" '
            f'src="data:image/png;base64,{base64.b64encode(png).decode()}"/>'
            for i, ((_, png), lab) in enumerate(zip(self.frames, labels))
        )
        others = [k for k in self.params if k != first]
        fixed = ", ".join(f"{k} = {_label(self.defaults[k])}" for k in others)
        note = "Static preview"
        if fixed:
            note += f" with {html.escape(fixed)}"
        note += ". Open the lab in Colab or Jupyter to move every slider."
        title = f'<div style="font-weight:600;margin-bottom:4px">{html.escape(self.title)}</div>' if self.title else ""
        return (
            f'<div class="dr-explorer" id="{uid}" style="border:1px solid #ccc;border-radius:8px;'
            f'padding:8px;background:#fff;color:#222;max-width:100%">{title}'
            f'<label style="display:flex;gap:8px;align-items:center;font-family:sans-serif;font-size:14px">'
            f'<span>{html.escape(first)}</span>'
            f'<input class="dr-slider" type="range" min="0" max="{len(self.frames) - 1}" step="1" '
            f'value="{start}" aria-label="{html.escape(first)}" style="flex:1"/>'
            f'<output class="dr-value" style="min-width:4em">{html.escape(labels[start])}</output></label>'
            f"{imgs}"
            f'<div style="font-size:12px;color:#666;font-family:sans-serif">{note}</div></div>'
            "<script>(function(){"
            f'var root=document.getElementById("{uid}");if(!root)return;'
            f"var labels={json.dumps(labels)};"
            'var s=root.querySelector(".dr-slider"),o=root.querySelector(".dr-value"),'
            'f=root.querySelectorAll(".dr-frame");'
            's.addEventListener("input",function(){var k=+s.value;'
            'for(var i=0;i<f.length;i++){f[i].style.display=(i===k)?"block":"none";}'
            "o.textContent=labels[k];});})();</script>"
        )

    # -- the live widget -----------------------------------------------------------------
    def widget(self) -> Any:
        """The ipywidgets UI (built once)."""
        if self._widget is not None:
            return self._widget
        import ipywidgets as w
        import matplotlib.pyplot as plt
        from IPython.display import display

        controls = {}
        for name, values in self.params.items():
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values) and len(values) > 3:
                c = w.SelectionSlider(
                    options=[(_label(v), v) for v in values], value=self.defaults[name],
                    description=name, continuous_update=False, layout=w.Layout(width="420px"),
                )
            else:
                c = w.ToggleButtons(options=[(_label(v), v) for v in values], value=self.defaults[name], description=name)
            controls[name] = c
        out = w.Output()

        def redraw(*_: Any) -> None:
            values = {k: c.value for k, c in controls.items()}
            fig = self._figure(values)
            with out:
                out.clear_output(wait=True)
                display(fig)
            plt.close(fig)

        for c in controls.values():
            c.observe(redraw, names="value")
        redraw()
        children = ([w.HTML(f"<b>{html.escape(self.title)}</b>")] if self.title else []) + [*controls.values(), out]
        self._widget = w.VBox(children)
        return self._widget

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        bundle: dict[str, Any] = {"text/plain": repr(self), "text/html": self.static_html()}
        if _in_kernel():
            live = self.widget()._repr_mimebundle_(include=include, exclude=exclude)
            if isinstance(live, tuple):  # (data, metadata)
                live = live[0]
            bundle.update({k: v for k, v in live.items() if k != "text/plain"})
        return bundle

    def __repr__(self) -> str:
        spans = ", ".join(f"{k}: {len(v)} values" for k, v in self.params.items())
        return f"Explorer({spans}; {len(self.frames)} static frames)"


def explorer(
    render: Callable[..., Any],
    params: Mapping[str, Sequence[Any]],
    *,
    defaults: Mapping[str, Any] | None = None,
    title: str | None = None,
    static_frames: int = 16,
    dpi: int | None = 72,
) -> Explorer:
    """Make an explorer of ``render(**values)`` over a grid of parameter values.

    Args:
        render: called with one keyword per parameter; returns a *new* matplotlib Figure
            (the explorer closes it).
        params: name -> the values its control steps through, in order. The first
            parameter is the one the static player slides over. Numeric parameters with more
            than three values get a slider; anything else gets buttons.
        defaults: the starting value of each parameter (default: its first value).
        title: shown above the controls.
        static_frames: at most this many frames are pre-rendered for the static player,
            spread evenly over the first parameter's values, ends included.
        dpi: resolution of the static frames.

    Returns:
        An :class:`Explorer`; make it the last expression of a cell to display it.

    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt
    >>> def render(a, b):
    ...     fig, ax = plt.subplots(figsize=(2, 2))
    ...     ax.plot([0, 1], [0, a * b])
    ...     return fig
    >>> ex = explorer(render, {"a": [1, 2, 3], "b": [1.0, 2.0]})
    >>> len(ex.frames), ex.defaults
    (3, {'a': 1, 'b': 1.0})
    """
    if not callable(render):
        raise TypeError(f"render must be callable, got {type(render).__name__}")
    if not isinstance(params, Mapping) or not params:
        raise ValueError("params must be a non-empty mapping of name -> sequence of values")
    grid: dict[str, list[Any]] = {}
    for name, values in params.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"params keys must be identifiers (they become keyword arguments), got {name!r}")
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) and not hasattr(values, "tolist"):
            raise TypeError(f"params[{name!r}] must be a sequence of values, got {type(values).__name__}")
        vals = list(values.tolist() if hasattr(values, "tolist") else values)
        if not vals:
            raise ValueError(f"params[{name!r}] must hold at least one value")
        grid[name] = vals
    chosen = dict(defaults or {})
    unknown = set(chosen) - set(grid)
    if unknown:
        raise ValueError(f"defaults names unknown parameters {sorted(unknown)}; known: {list(grid)}")
    for name, vals in grid.items():
        if name in chosen and chosen[name] not in vals:
            raise ValueError(f"defaults[{name!r}] = {chosen[name]!r} is not one of params[{name!r}]")
        chosen.setdefault(name, vals[0])
    if not isinstance(static_frames, int) or static_frames < 2:
        raise ValueError(f"static_frames must be an int >= 2, got {static_frames!r}")
    if dpi is not None and (not isinstance(dpi, int) or dpi <= 0):
        raise ValueError(f"dpi must be a positive int or None, got {dpi!r}")
    return Explorer(render, grid, chosen, title, static_frames, dpi)
