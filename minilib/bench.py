"""Small, honest measurements of time and extra peak memory on a CPU.

Time: the median of several calls after a warm-up call (:func:`time_call`). To compare several
functions on a machine whose speed drifts (shared cores, frequency changes), time them with
:func:`time_interleaved`: it calls them in turn, round after round, so a slow spell slows every
one of them alike instead of one function's whole run.

Memory (:func:`extra_peak_memory`): the rise of the process's resident-set high-water mark
(``VmHWM`` in ``/proc/self/status``) above its resident size just before the call. The mark is
reset first by writing ``5`` to ``/proc/self/clear_refs`` (Linux >= 4.0). Two details make
this count tensor memory faithfully:

* glibc keeps freed blocks of the heap resident and reuses them, which would hide a second
  allocation of the same size. So the helper first calls ``mallopt(M_MMAP_THRESHOLD, 64 KiB)``:
  every block of 64 KiB or more then gets its own ``mmap`` and is returned to the system when
  freed, and a new allocation shows up as new resident pages.
* Freed blocks that already sit in the heap are handed back with ``malloc_trim(0)`` just
  before the measurement, so they cannot absorb (and hide) the call's allocations.
* The count is in pages actually touched, which is what a tensor costs once it is written.

That ``mallopt`` call changes how later large allocations behave (each one maps fresh pages),
which slows allocation-heavy code a little; take timings before the first memory
measurement, as ``bench/bench_attention.py`` does. Where ``/proc`` or glibc is missing
(macOS, Windows) the memory is reported as ``None``.
"""

from __future__ import annotations

import ctypes
import gc
import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["extra_peak_memory", "memory_supported", "time_call", "time_interleaved"]

_M_MMAP_THRESHOLD = -3  # from glibc's malloc.h
_mmap_pinned = False


def _status_bytes(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024  # the kernel reports kB
    raise RuntimeError(f"{key} is missing from /proc/self/status")


def memory_supported() -> bool:
    """Whether :func:`extra_peak_memory` can measure here (Linux with glibc and ``/proc``)."""
    try:
        _status_bytes("VmHWM")
        Path("/proc/self/clear_refs").open("w").close()
        ctypes.CDLL("libc.so.6").mallopt  # noqa: B018 - probe for glibc
    except (OSError, RuntimeError, AttributeError):
        return False
    return True


def _pin_mmap_threshold() -> None:
    global _mmap_pinned
    if not _mmap_pinned:
        ctypes.CDLL("libc.so.6").mallopt(_M_MMAP_THRESHOLD, 1 << 16)
        _mmap_pinned = True


def extra_peak_memory(fn: Callable[[], Any]) -> tuple[Any, int | None]:
    """Call ``fn()`` and measure how far resident memory rose above its level before the call.

    The result of ``fn`` is kept alive until the peak is read, so it counts (the output of an
    attention call is part of its cost). See the module docstring for the method.

    Args:
        fn: a function of no arguments.

    Returns:
        ``(result, extra_bytes)``; ``extra_bytes`` is None where the method is unsupported.

    >>> import torch
    >>> _, extra = extra_peak_memory(lambda: torch.ones(4_000_000))  # 16 MB of float32
    >>> extra is None or 15e6 < extra < 20e6
    True
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    if not memory_supported():
        return fn(), None
    _pin_mmap_threshold()
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # release free heap pages so reuse cannot hide usage
    base = _status_bytes("VmRSS")
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # reset the high-water mark to the current resident size
    result = fn()
    peak = _status_bytes("VmHWM")
    return result, max(0, peak - base)


def time_call(fn: Callable[[], Any], *, repeats: int = 3, warmup: int = 1) -> float:
    """The median wall time of ``fn()`` in seconds, over ``repeats`` calls after ``warmup`` calls.

    Args:
        fn: a function of no arguments.
        repeats: timed calls (>= 1).
        warmup: untimed calls first (>= 0), so one-off costs (allocation, thread start) drop out.

    Returns:
        Seconds, the median of the timed calls.

    >>> time_call(lambda: sum(range(100)), repeats=3) >= 0
    True
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    return time_interleaved({"fn": fn}, repeats=repeats, warmup=warmup)["fn"]  # one function: no turns


def time_interleaved(
    fns: Mapping[str, Callable[[], Any]], *, repeats: int = 5, warmup: int = 1
) -> dict[str, float]:
    """The median wall time of each function, timed in turn, round after round.

    Each round calls every function of ``fns`` once, in order; after ``warmup`` untimed rounds
    come ``repeats`` timed ones. Ratios between the medians are then fair even when the machine
    speeds up or slows down during the run, which back-to-back :func:`time_call` runs are not.

    Args:
        fns: names mapped to functions of no arguments (at least one).
        repeats: timed rounds (>= 1).
        warmup: untimed rounds first (>= 0).

    Returns:
        ``{name: seconds}``, the median over the timed rounds, in the order of ``fns``.

    >>> t = time_interleaved({"a": lambda: None, "b": lambda: sum(range(100))}, repeats=3)
    >>> list(t), all(x >= 0 for x in t.values())
    (['a', 'b'], True)
    """
    if not isinstance(fns, Mapping) or not fns:
        raise TypeError(f"fns must be a non-empty mapping of names to functions, got {fns!r}")
    for name, fn in fns.items():
        if not callable(fn):
            raise TypeError(f"fns[{name!r}] must be callable, got {type(fn).__name__}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an int >= 1, got {repeats!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be an int >= 0, got {warmup!r}")
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}
