"""DistributedDataParallel on CPU (gloo): 2 processes x 64 == 1 process x 128.

The data loader gives rank r of global batch b the r-th half of the same 128 samples, with the
same augmentation, so averaging the two ranks' gradients (DDP) equals the gradient of the
whole batch. Group norm keeps the forward pass batch-independent (BatchNorm statistics would
differ per rank, and SyncBatchNorm needs CUDA).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

import cnnzoo
from cnnzoo.train import load_checkpoint, resolve_config, train

ROOT = Path(__file__).resolve().parents[1]
OPTS = {"depth": 8, "widths": (8, 16, 32), "stem_width": 8, "norm_layer": "gn"}


def test_two_processes_of_64_equal_one_of_128(tmp_path):
    cache = tmp_path / "cache"
    common = dict(data="digits", image_size=16, subset=384, val_size=0, cache_dir=str(cache), iters=4,
                  device="cpu", lr=0.1, schedule="constant", warmup=0)
    # 384 images: 3 global batches per epoch, so 4 steps cross an epoch boundary.
    one = train(resolve_config({"model": "cifar_resnet", "model_opts": OPTS, "batch_size": 128,
                                "out": str(tmp_path / "one"), **common}))
    args = ["--data", "digits", "--image-size", "16", "--subset", "384", "--val-size", "0",
            "--cache-dir", str(cache), "--iters", "4", "--device", "cpu", "--lr", "0.1",
            "--schedule", "constant", "--warmup", "0", "--batch-size", "64", "--out", str(tmp_path / "two")]
    for k, v in OPTS.items():
        args += ["--opt", f"{k}={v}".replace(" ", "")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    r = subprocess.run([*torchrun, "-m", "cnnzoo", "train", "cifar_resnet", *args],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    # only rank 0 reports: one summary line per epoch, not two
    assert r.stdout.count("epoch   1 ") == 1

    a = load_checkpoint(tmp_path / "one" / "last.pt")["model"]
    two = load_checkpoint(tmp_path / "two" / "last.pt")
    assert one["iters"] == two["step"] == 4
    for k, v in a.items():
        assert torch.allclose(v, two["model"][k], rtol=0, atol=1e-5), \
            f"{k}: max diff {(v - two['model'][k]).abs().max():.2e}"
    # and training did move the weights (by far more than the tolerance)
    torch.manual_seed(0)
    init = cnnzoo.create_model("cifar_resnet", num_classes=10, in_chans=1, **OPTS).state_dict()
    assert max((init[k] - v).abs().max().item() for k, v in a.items()) > 1e-2


def test_a_data_error_on_rank_0_stops_every_rank(tmp_path):
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    r = subprocess.run([*torchrun, "-m", "cnnzoo", "train", "resnet20", "--data", "cifar10", "--data-dir",
                        str(tmp_path / "nothing"), "--out", str(tmp_path / "run"), "--device", "cpu"],
                       cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                       timeout=120)  # a hang (a rank waiting for rank 0) would time out
    assert r.returncode != 0
    assert r.stderr.count("cnnzoo train: error: cifar10 not found") == 2
