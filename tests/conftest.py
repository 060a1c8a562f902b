"""Unit-test settings: one torch thread (the tests' tensors are tiny; a second thread only adds
contention on a loaded 2-core machine), a headless matplotlib backend, and hypothesis profiles.

Under CI (the ``CI`` environment variable is set, as `.ci/run` runs) hypothesis is
*derandomized*: every run on every machine draws the same examples, so a pass or a failure is
reproducible. Locally the default profile explores new examples on each run, which is how
weak tolerances get found; pin one with ``--hypothesis-profile=ci`` or ``--hypothesis-seed=N``.
"""

import os

import matplotlib

matplotlib.use("Agg")

import torch  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

torch.set_num_threads(1)

settings.register_profile(
    "ci", derandomize=True, deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", deadline=None, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")
