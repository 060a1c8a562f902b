"""Plot style and small drawing helpers shared by the labs.

Figures are drawn on an opaque white card with dark ink, so they read the same in the site's
light and dark themes, and in Colab, JupyterLab and GitHub.
"""

from __future__ import annotations

import io
from typing import Any

import matplotlib

#: A colour-blind-safe cycle (Okabe–Ito), used for every line plot in the book.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]

_STYLE: dict[str, Any] = {
    "figure.facecolor": "white",
    "axes.facecolor": "white",
    "savefig.facecolor": "white",
    "figure.dpi": 90,
    "savefig.dpi": 90,
    "figure.figsize": (6.4, 3.6),
    "figure.constrained_layout.use": True,
    "axes.grid": True,
    "grid.alpha": 0.25,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 9,
    "legend.frameon": False,
    "font.size": 10,
    "image.cmap": "viridis",
    "text.color": "#222222",
    "axes.labelcolor": "#222222",
    "xtick.color": "#333333",
    "ytick.color": "#333333",
}


def use_style() -> None:
    """Apply the book's matplotlib style (idempotent)."""
    from cycler import cycler

    matplotlib.rcParams.update(_STYLE)
    matplotlib.rcParams["axes.prop_cycle"] = cycler(color=PALETTE)


def figure_png(fig: Any, *, dpi: int | None = None) -> bytes:
    """Render a matplotlib figure to PNG bytes (white background, tight bounding box)."""
    from matplotlib.figure import Figure

    if not isinstance(fig, Figure):
        raise TypeError(f"fig must be a matplotlib Figure, got {type(fig).__name__}")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi or matplotlib.rcParams["savefig.dpi"], bbox_inches="tight", facecolor="white")
    return buf.getvalue()
