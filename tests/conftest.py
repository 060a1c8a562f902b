"""Unit-test settings: one torch thread (the tests' tensors are tiny; a second thread only adds
contention on a loaded 2-core machine) and a headless matplotlib backend."""

import matplotlib

matplotlib.use("Agg")

import torch  # noqa: E402

torch.set_num_threads(1)
