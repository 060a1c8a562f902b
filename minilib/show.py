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
