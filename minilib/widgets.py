"""Explorers: a figure as a function of parameters, live in a kernel and static on the site.

One call, :func:`explorer`, produces both views in a single output:

* in a live kernel (Jupyter, Colab, VS Code) an ipywidgets UI with one slider (or menu) per
  parameter, re-drawing the figure on every change;
* a ``text/html`` player with every control: the figure pre-rendered for every combination of
  the parameters' values when there are few (``max_frames``), otherwise for each parameter on
  its own around the defaults, behind plain HTML sliders and menus and a few lines of inline
  JavaScript. Frames are palette PNGs, and identical frames are stored once. It needs no
  kernel and no network, so it keeps working on the static site, where the book's
  configuration prefers it over the widget view.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import itertools
import json
import math
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


def _is_slider(values: list[Any]) -> bool:
    """Numbers with more than three values get a slider; anything else a menu."""
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values) and len(values) > 3


def _palette_png(png: bytes) -> bytes:
    """Re-encode a PNG with a 256-colour palette: about a third of the bytes of RGBA for plots."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        out = io.BytesIO()
        im.convert("RGB").quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(out, format="PNG")
    return out.getvalue()


def _progress(items: list[Any], desc: str) -> Any:
    """A tqdm bar when rendering takes long enough to need one (more than a few frames)."""
    if len(items) <= 8:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, leave=False)


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
        static_values: name -> the values the static player offers (at most ``static_frames``
            of them, spread evenly, ends and default included).
        mode: ``"grid"`` when every combination of the static values is pre-rendered, or
            ``"axes"`` when each control is pre-rendered on its own, the others at their
            defaults (when the grid would exceed ``max_frames``).
        frames: ``{tuple of values, one per parameter: index into images}``.
        images: the distinct pre-rendered frames, as palette PNG bytes.
    """

    def __init__(
        self,
        render: Callable[..., Any],
        params: dict[str, list[Any]],
        defaults: dict[str, Any],
        title: str | None,
        static_frames: int,
        dpi: int | None,
        max_frames: int = 32,
    ) -> None:
        self.render = render
        self.params = params
        self.defaults = defaults
        self.title = title
        self.dpi = dpi
        self.static_values: dict[str, list[Any]] = {}
        for name, values in params.items():
            keep = set(_subsample(len(values), static_frames)) | {values.index(defaults[name])}
            self.static_values[name] = [values[i] for i in sorted(keep)]
        names = list(params)
        grid_size = math.prod(len(v) for v in self.static_values.values())
        self.mode = "grid" if grid_size <= max_frames else "axes"
        if self.mode == "grid":
            combos = [dict(zip(names, vs)) for vs in itertools.product(*self.static_values.values())]
        else:
            combos = [dict(defaults)]
            for name in names:
                combos += [{**defaults, name: v} for v in self.static_values[name] if v != defaults[name]]
        self.images: list[bytes] = []
        self.frames: dict[tuple[Any, ...], int] = {}
        seen: dict[bytes, int] = {}
        for values in _progress(combos, "static frames"):
            png = self._png(values)
            idx = seen.setdefault(png, len(self.images))
            if idx == len(self.images):
                self.images.append(png)
            self.frames[tuple(values[n] for n in names)] = idx
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
            return _palette_png(figure_png(fig, dpi=self.dpi))
        finally:
            plt.close(fig)

    # -- the static player ---------------------------------------------------------------
    def static_html(self) -> str:
        """The kernel-free player: one control per parameter over the pre-rendered frames."""
        names = list(self.params)
        digest = hashlib.sha1(b"".join(self.images)).hexdigest()[:12]
        uid = f"dr-explorer-{digest}"
        labels = [[_label(v) for v in self.static_values[n]] for n in names]
        start = [self.static_values[n].index(self.defaults[n]) for n in names]
        keys = {
            ",".join(str(self.static_values[n].index(v)) for n, v in zip(names, key)): idx
            for key, idx in self.frames.items()
        }
        first = self.frames[tuple(self.defaults[n] for n in names)]
        controls = []
        for k, name in enumerate(names):
            values = self.static_values[name]
            lab = html.escape(name)
            if _is_slider(values):
                ctl = (
                    f'<input class="dr-slider dr-control" data-k="{k}" type="range" min="0" max="{len(values) - 1}" '
                    f'step="1" value="{start[k]}" aria-label="{lab}" style="flex:1"/>'
                    f'<output class="dr-value" style="min-width:4em">{html.escape(labels[k][start[k]])}</output>'
                )
            else:
                opts = "".join(
                    f'<option value="{i}"{" selected" if i == start[k] else ""}>{html.escape(t)}</option>'
                    for i, t in enumerate(labels[k])
                )
                ctl = f'<select class="dr-select dr-control" data-k="{k}" aria-label="{lab}">{opts}</select>'
            controls.append(
                '<label style="display:flex;gap:8px;align-items:center;font-family:sans-serif;font-size:14px">'
                f'<span style="min-width:5em">{lab}</span>{ctl}</label>'
            )
        alt = ", ".join(f"{n} = {_label(self.defaults[n])}" for n in names)
        imgs = "".join(
            f'<img class="dr-frame" alt="{html.escape(alt) if i == first else "frame " + str(i)}" '
            f'style="max-width:100%;height:auto;display:{"block" if i == first else "none"}" '
            f'src="data:image/png;base64,{base64.b64encode(png).decode()}"/>'
            for i, png in enumerate(self.images)
        )
        if len(names) == 1:
            note = "Pre-rendered for each value shown."
        elif self.mode == "grid":
            note = "Every combination of the values shown is pre-rendered."
        else:
            note = (
                "Pre-rendered one control at a time: moving a control sets the others back to "
                "their defaults."
            )
        note += " Open the lab in Colab or Jupyter for the live version."
        title = f'<div style="font-weight:600;margin-bottom:4px">{html.escape(self.title)}</div>' if self.title else ""
        return (
            f'<div class="dr-explorer" id="{uid}" data-mode="{self.mode}" style="border:1px solid #ccc;'
            f'border-radius:8px;padding:8px;background:#fff;color:#222;max-width:100%">{title}'
            f'{"".join(controls)}{imgs}'
            f'<div class="dr-note" style="font-size:12px;color:#666;font-family:sans-serif">{note}</div></div>'
            "<script>(function(){"
            f'var root=document.getElementById("{uid}");if(!root)return;'
            f"var labels={json.dumps(labels)},keys={json.dumps(keys)},start={json.dumps(start)},"
            f'axes={"true" if self.mode == "axes" else "false"};'
            'var c=root.querySelectorAll(".dr-control"),f=root.querySelectorAll(".dr-frame");'
            "function idx(){var a=[];for(var i=0;i<c.length;i++){a.push(+c[i].value);}return a;}"
            "function show(){var a=idx(),j=keys[a.join(\",\")];if(j===undefined)return;"
            'for(var i=0;i<f.length;i++){f[i].style.display=(i===j)?"block":"none";}'
            "for(var i=0;i<c.length;i++){var o=c[i].parentNode.querySelector(\".dr-value\");"
            "if(o)o.textContent=labels[i][a[i]];}}"
            "for(var i=0;i<c.length;i++){(function(k){"
            'c[k].addEventListener(c[k].tagName==="SELECT"?"change":"input",function(){'
            "if(axes){for(var m=0;m<c.length;m++){if(m!==k)c[m].value=start[m];}}show();});})(i);}"
            "})();</script>"
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
            if _is_slider(values):
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
        return f"Explorer({spans}; {len(self.frames)} static frames, {self.mode})"


def explorer(
    render: Callable[..., Any],
    params: Mapping[str, Sequence[Any]],
    *,
    defaults: Mapping[str, Any] | None = None,
    title: str | None = None,
    static_frames: int = 16,
    dpi: int | None = 72,
    max_frames: int = 32,
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
        static_frames: the static player offers at most this many values of each parameter
            (spread evenly, ends and default included).
        dpi: resolution of the static frames.
        max_frames: the static player pre-renders every combination of those values when
            there are at most this many; otherwise each parameter on its own, the others at
            their defaults (the player says which). A frame costs about 0.1-0.5 s to render
            on a 2-core CPU, so the default keeps an explorer within a few seconds.

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
    >>> len(ex.frames), ex.mode, ex.defaults
    (6, 'grid', {'a': 1, 'b': 1.0})
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
    if not isinstance(max_frames, int) or max_frames < 1:
        raise ValueError(f"max_frames must be a positive int, got {max_frames!r}")
    if dpi is not None and (not isinstance(dpi, int) or dpi <= 0):
        raise ValueError(f"dpi must be a positive int or None, got {dpi!r}")
    return Explorer(render, grid, chosen, title, static_frames, dpi, max_frames)
