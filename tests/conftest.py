import os

# One intra-op thread per test process (and per subprocess a test starts). The tests run many
# tiny ops; with two OpenMP threads and any other load on a 2-core machine, each op's barrier
# waits for a descheduled thread and a forward pass gets up to 50x slower. pytest-xdist runs
# test processes side by side instead (see pyproject's addopts).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
