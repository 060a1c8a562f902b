"""Repository-wide pytest hooks: the per-lab time budget for `pytest --nbval-lax notebooks`.

nbval turns every code cell of a lab into a test item. We add up the setup, call and teardown
time of a lab's items (kernel start-up included), so each lab is executed exactly once and
timed by that same run. A lab over budget fails at the first cell that crosses the line,
and the session ends with a table of every lab's wall time.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

LAB_BUDGET_SECONDS = 60.0
_seconds: dict[Path, float] = defaultdict(float)
_over: set[Path] = set()


def _lab_of(item: pytest.Item) -> Path | None:
    path = Path(str(getattr(item, "path", getattr(item, "fspath", ""))))
    return path if path.suffix == ".ipynb" else None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    lab = _lab_of(item)
    if lab is None:
        return
    report = outcome.get_result()
    _seconds[lab] += call.duration
    if _seconds[lab] > LAB_BUDGET_SECONDS and lab not in _over and call.when == "call":
        _over.add(lab)
        report.outcome = "failed"
        report.longrepr = (
            f"{lab.name} has run for {_seconds[lab]:.1f} s, over the {LAB_BUDGET_SECONDS:.0f} s "
            "budget of a lab on a 2-core CPU (../shared/CHAPTER.md): make it smaller"
        )


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if not _seconds:
        return
    root = Path(str(config.rootpath))
    tr = terminalreporter
    tr.section("lab wall times (CPU)")
    total = 0.0
    for lab, secs in sorted(_seconds.items(), key=lambda kv: -kv[1]):
        total += secs
        flag = "  OVER BUDGET" if secs > LAB_BUDGET_SECONDS else ""
        try:
            name = lab.relative_to(root)
        except ValueError:
            name = lab
        tr.write_line(f"{secs:7.1f} s  {name}{flag}")
    times = sorted(_seconds.values())
    median = times[len(times) // 2] if len(times) % 2 else sum(times[len(times) // 2 - 1 : len(times) // 2 + 1]) / 2
    tr.write_line(f"{total:7.1f} s  total over {len(times)} labs (median {median:.1f} s, budget {LAB_BUDGET_SECONDS:.0f} s each)")
