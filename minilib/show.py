"""``minilib.show``: display a function's (or class's) source, highlighted."""

from __future__ import annotations

import html
import inspect
import textwrap
from typing import Any


class Source:
    """A piece of source code that renders highlighted in Jupyter and as text elsewhere."""

    def __init__(self, code: str, name: str) -> None:
        self.code = code
        self.name = name

    def __repr__(self) -> str:
        return self.code

    def _repr_html_(self) -> str:
        try:
            from pygments import highlight
            from pygments.formatters import HtmlFormatter
            from pygments.lexers import PythonLexer

            body = highlight(self.code, PythonLexer(), HtmlFormatter(noclasses=True, nowrap=True, style="friendly"))
        except ImportError:  # pragma: no cover - pygments ships with IPython
            body = html.escape(self.code)
        return (
            '<details open class="dr-source"><summary style="cursor:pointer;color:#555">'
            f"source of <code>{html.escape(self.name)}</code></summary>"
            '<pre style="background:#f8f8f8;color:#222;padding:0.6em;border-radius:6px;'
            f'overflow-x:auto;font-size:0.85em;line-height:1.35">{body}</pre></details>'
        )


def show(obj: Any) -> Source:
    """Return the highlighted source of a function, class or method (the last cell value shows it).

    >>> def f(x):
    ...     return x + 1
    >>> print(repr(show(f)).strip())
    def f(x):
        return x + 1
    """
    if isinstance(obj, (staticmethod, classmethod)):
        obj = obj.__func__
    target = inspect.unwrap(obj) if callable(obj) else obj
    if not (inspect.isfunction(target) or inspect.isclass(target) or inspect.ismethod(target)):
        raise TypeError(f"obj must be a function, method or class, got {type(obj).__name__}")
    try:
        code = inspect.getsource(target)
    except (OSError, TypeError) as err:
        raise TypeError(f"the source of {obj!r} is not available: {err}") from err
    name = f"{target.__module__}.{target.__qualname__}"
    return Source(textwrap.dedent(code), name)


#: The mime prefix MyST-NB's ``glue`` uses for a value that is recorded but not displayed.
GLUE_PREFIX = "application/papermill.record/"
_GLUE_NAME = __import__("re").compile(r"[A-Za-z][A-Za-z0-9_-]*")


def glue(name: str, value: Any) -> None:
    """Record ``value`` under ``name`` so that a derivation page can paste it with ``{glue:text}``.

    This writes exactly the output that MyST-NB's own ``glue(name, value, display=False)``
    writes (a ``display_data`` whose mime types carry the ``application/papermill.record/``
    prefix and whose metadata names the key), without needing myst-nb, which Colab lacks. In
    Colab and Jupyter the output is invisible; the book reads it from the committed lab. A page
    pastes it with ``{glue:text}`../../notebooks/part/lab.ipynb::name:.2f``` (the format spec
    is required after a ``path::``).

    Numbers (Python, NumPy or one-element tensors) are recorded as floats or ints, so the page
    chooses the format; strings are recorded as they are.

    >>> glue("bad name", 1.0)
    Traceback (most recent call last):
    ...
    ValueError: name must be letters, digits, '-' or '_' (starting with a letter), got 'bad name'
    """
    if not isinstance(name, str) or not _GLUE_NAME.fullmatch(name):
        raise ValueError(f"name must be letters, digits, '-' or '_' (starting with a letter), got {name!r}")
    plain = _glue_plain(value)
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:  # pragma: no cover - IPython ships with Jupyter and Colab
        return
    if get_ipython() is None:  # a plain interpreter: nothing to record into
        return
    display(
        {GLUE_PREFIX + "text/plain": plain}, raw=True,
        metadata={"scrapbook": {"name": name, "mime_prefix": GLUE_PREFIX}},
    )


def _glue_plain(value: Any) -> str:
    import math
    import numbers

    if isinstance(value, str):
        return repr(value)
    if hasattr(value, "numel") and hasattr(value, "item"):  # a torch tensor
        if value.numel() != 1:
            raise ValueError(f"value must be a number, a string or a one-element tensor, got shape {tuple(value.shape)}")
        value = value.item()
    elif hasattr(value, "item") and getattr(value, "size", None) == 1:  # a NumPy scalar or array
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"value must be a number or a string, got {type(value).__name__}")
    if isinstance(value, numbers.Integral):
        return repr(int(value))
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"value must be finite, got {value}")
    return repr(value)
