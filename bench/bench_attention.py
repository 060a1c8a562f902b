"""Benchmark: naive attention vs ``minilib.attention.flash_attention`` vs torch's fused SDPA.

Run with ``make bench`` (or ``.venv/bin/python bench/bench_attention.py``). Not a test: it
prints a table and whether the chapter's two targets are met, and always exits 0.

Set-up: float32 on the CPU, inputs of shape ``(B, H, N, d) = (1, 4, N, 64)`` for
N in {1024, 4096, 8192}. 4-D inputs matter: only then does torch's CPU
``scaled_dot_product_attention`` take its fused FlashAttention kernel, which is the bar.
Every implementation runs in the same process, with the same torch thread count, side by side.

Time: the median over several rounds after a warm-up round, under ``torch.no_grad()``. Each
round calls the three methods in turn (``minilib.bench.time_interleaved``), so a slow spell of
a shared machine slows all three alike and the ratios stay fair.

Extra peak memory: how far the process's resident-set high-water mark rises above its level
just before the call (``minilib.bench.extra_peak_memory``). The mark is reset through
``/proc/self/clear_refs`` and glibc is told to give every allocation of 64 KiB or more its own
``mmap``, so freed tensors leave the resident set and every new one shows up. The output
tensor counts (it is part of the cost). All timings are taken before the first memory
measurement, because that glibc setting slows allocation down a little.

Targets (from the book's foundation issue):
  * at N = 4096, flash_attention takes at most 1.5x the fused SDPA's time;
  * at N = 8192, flash_attention's extra peak memory is at most 10% of naive attention's.

``flash_attention`` runs its query blocks on as many worker threads as torch has threads
(see ``minilib.attention``), so all three methods use the same cores.

Options: ``--threads T`` sets torch's thread count (default: torch's own default);
``--sizes 1024 4096`` runs other lengths (the targets are reported only when their size runs).
On a machine shared with other jobs, timings are noisy; run it twice.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from minilib.attention import (  # noqa: E402
    DEFAULT_BLOCK_K,
    DEFAULT_BLOCK_Q,
    flash_attention,
    softmax_attention,
)
from minilib.bench import extra_peak_memory, memory_supported, time_interleaved  # noqa: E402

B, H, D = 1, 4, 64
METHODS = {
    "naive": lambda q, k, v: softmax_attention(q, k, v),
    "flash_attention": lambda q, k, v: flash_attention(q, k, v),
    "sdpa (fused)": lambda q, k, v: F.scaled_dot_product_attention(q, k, v),
}


def _mib(x: int | None) -> str:
    return "n/a" if x is None else f"{x / 2**20:9.1f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096, 8192])
    args = ap.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, "
          f"(B, H, N, d) = ({B}, {H}, N, {D}); flash_attention blocks "
          f"block_q={DEFAULT_BLOCK_Q}, block_k={DEFAULT_BLOCK_K}")

    inputs = {n: tuple(torch.randn(B, H, n, D) for _ in range(3)) for n in args.sizes}
    times: dict[tuple[int, str], float] = {}
    mems: dict[tuple[int, str], int | None] = {}
    with torch.no_grad():
        for n, (q, k, v) in inputs.items():  # 1) all timings
            repeats = 9 if n <= 4096 else 3
            fns = {name: (lambda fn=fn, q=q, k=k, v=v: fn(q, k, v)) for name, fn in METHODS.items()}
            for name, t in time_interleaved(fns, repeats=repeats).items():
                times[n, name] = t
            err = (flash_attention(q, k, v) - F.scaled_dot_product_attention(q, k, v)).abs().max()
            print(f"N={n}: max |flash_attention - sdpa| = {float(err):.1e}")
        for n, (q, k, v) in inputs.items():  # 2) then all memory measurements
            for name, fn in METHODS.items():
                out, mems[n, name] = extra_peak_memory(lambda fn=fn, q=q, k=k, v=v: fn(q, k, v))
                del out

    print()
    print(f"{'N':>6} {'method':<16} {'time (s)':>9} {'x sdpa':>7} {'extra peak MiB':>15} {'x naive':>8}")
    for n in args.sizes:
        for name in METHODS:
            t, m = times[n, name], mems[n, name]
            t_ratio = t / times[n, "sdpa (fused)"]
            m_naive = mems[n, "naive"]
            m_ratio = "n/a" if m is None or not m_naive else f"{m / m_naive:8.3f}"
            print(f"{n:>6} {name:<16} {t:9.3f} {t_ratio:7.2f} {_mib(m):>15} {m_ratio:>8}")
    print()
    if not memory_supported():
        print("memory: not measurable here (needs Linux /proc and glibc)")
    if 4096 in args.sizes:
        r = times[4096, "flash_attention"] / times[4096, "sdpa (fused)"]
        print(f"target 1: N=4096 flash_attention time <= 1.5x fused sdpa: {r:.2f}x -> "
              f"{'MET' if r <= 1.5 else 'NOT MET'}")
    if 8192 in args.sizes and mems[8192, "naive"]:
        m_flash, m_naive = mems[8192, "flash_attention"], mems[8192, "naive"]
        r = (m_flash or 0) / m_naive
        print(f"target 2: N=8192 flash_attention extra peak memory <= 10% of naive: {100 * r:.1f}% -> "
              f"{'MET' if r <= 0.10 else 'NOT MET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
