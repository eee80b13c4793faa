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


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A finished 12-step run of a tiny CIFAR ResNet on the digits (one per test module that asks):
    ``(run folder, uint8 cache folder)``."""
    from cnnzoo.train import resolve_config, train

    out = tmp_path_factory.mktemp("runs") / "tiny"
    cache = str(tmp_path_factory.mktemp("cache"))
    train(resolve_config(dict(
        model="cifar_resnet", model_opts={"depth": 8, "widths": (8, 16, 32), "stem_width": 8}, data="digits",
        image_size=16, subset=256, val_size=64, cache_dir=cache, out=str(out), iters=12, batch_size=64,
        device="cpu")))
    return out, cache
