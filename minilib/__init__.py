"""minilib: the tiny, hand-written library that the labs of *Derive & Run* import.

One module per topic family (``attention``, ``diffusion``, ``rl``, ...) plus small shared
helpers (``check``, ``widgets``, ``viz``, ``data``, ``metrics``, ``nn``). Import the topic
modules explicitly, e.g. ``from minilib import attention``.

>>> import minilib
>>> all(part.isdigit() for part in minilib.__version__.split(".")[:3])  # x.y.z or x.y.z.devN
True
"""

from __future__ import annotations

__version__ = "0.2.0.dev0"

#: Where the book lives. Must agree with ``repository.url`` in ``_config.yml`` (a test checks).
REPOSITORY = "https://github.com/derive-and-run/derive-and-run"

from minilib import check  # noqa: E402
from minilib._setup import Config, install_command, setup  # noqa: E402
from minilib.show import glue, show  # noqa: E402

__all__ = ["Config", "REPOSITORY", "__version__", "check", "glue", "install_command", "setup", "show"]
