"""``minilib.setup``: one call at the top of every lab."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

import numpy as np
import torch

_DEVICE_KINDS = ("cpu", "cuda", "mps", "meta")


@dataclass(frozen=True)
class Config:
    """What :func:`setup` decided.

    Attributes:
        device: the ``torch.device`` labs should put tensors and models on.
        scale: a size multiplier: 1 on a CPU, larger on an accelerator. Labs grow their
            batch sizes, step counts or data sets with :meth:`scaled`.
        seed: the seed everything was seeded with.
        threads: torch's intra-op CPU thread count.
    """

    device: torch.device
    scale: int
    seed: int
    threads: int

    @property
    def on_accelerator(self) -> bool:
        return self.device.type in ("cuda", "mps")

    def scaled(self, n: int) -> int:
        """``n`` times :attr:`scale`, as an int (``cfg.scaled(2000)`` data points, say).

        >>> Config(torch.device("cpu"), 1, 0, 1).scaled(2000)
        2000
        """
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ValueError(f"n must be a non-negative int, got {n!r}")
        return n * self.scale


def install_command(version: str) -> str:
    """The pip command that installs the minilib matching a given book version.

    A release ``x.y.z`` installs from the tag ``vx.y.z``; a development version (``x.y.z.devN``)
    from the branch ``main``, which is where the labs of a development version live.

    >>> install_command("0.1.0").endswith('@v0.1.0"')
    True
    >>> install_command("0.2.0.dev0").endswith('@main"')
    True
    """
    from minilib import REPOSITORY

    ref = "main" if ".dev" in version else f"v{version}"
    return f'pip install -U "derive-and-run-minilib @ git+{REPOSITORY}@{ref}"'


def _pick_device(device: str | torch.device | None) -> torch.device:
    requested = device if device is not None else os.environ.get("MINILIB_DEVICE", "").strip()
    if requested:
        try:
            dev = torch.device(requested)
        except (RuntimeError, TypeError) as err:
            raise ValueError(
                f"device (or MINILIB_DEVICE) must name a torch device such as 'cpu' or 'cuda', "
                f"got {requested!r}"
            ) from err
        if dev.type not in _DEVICE_KINDS:
            raise ValueError(f"device must be one of {_DEVICE_KINDS}, got {dev.type!r}")
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("device 'cuda' was requested but torch.cuda.is_available() is False")
        if dev.type == "mps" and not torch.backends.mps.is_available():
            raise ValueError("device 'mps' was requested but the MPS backend is not available")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def setup(
    seed: int = 0,
    *,
    expects: str | None = None,
    device: str | torch.device | None = None,
    threads: int | None = None,
    style: bool = True,
    quiet: bool = False,
) -> Config:
    """Seed everything, set CPU threads, pick the device and apply the plot style.

    Args:
        seed: seeds Python's ``random``, NumPy's global generator and torch (all devices).
        expects: the minilib version the lab was written against. On a mismatch this raises
            ``RuntimeError`` whose message is the exact command that installs the right one.
        device: overrides the automatic choice. Otherwise the environment variable
            ``MINILIB_DEVICE`` is honoured, and then the order is cuda > mps > cpu.
        threads: torch's CPU thread count. Default 1 (or ``MINILIB_THREADS``): the labs'
            models are tiny, and for tiny ops a second thread costs more than it saves.
        style: apply :func:`minilib.viz.use_style`.
        quiet: do not print the one-line summary.

    Returns:
        A :class:`Config` with the device and the scale factor labs use to grow on a GPU.

    >>> cfg = setup(0, device="cpu", style=False, quiet=True)
    >>> cfg.device.type, cfg.scale
    ('cpu', 1)
    """
    from minilib import __version__

    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if expects is not None and expects != __version__:
        raise RuntimeError(
            f"This lab expects minilib {expects} but {__version__} is installed. Fix it with\n"
            f"    %{install_command(expects)}\n"
            "then restart the kernel (Colab: Runtime > Restart session) and run the lab again."
        )
    if threads is None:
        threads = int(os.environ.get("MINILIB_THREADS", "1"))
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive int, got {threads!r}")

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    dev = _pick_device(device)
    torch.set_num_threads(threads)
    scale = 1 if dev.type in ("cpu", "meta") else 4
    if style:
        from minilib.viz import use_style

        use_style()
    cfg = Config(device=dev, scale=scale, seed=seed, threads=threads)
    if not quiet:
        print(f"minilib {__version__} · device {dev.type} · scale ×{scale} · seed {seed}")
    return cfg
