"""DistributedDataParallel on CPU (gloo): 2 processes x 64 == 1 process x 128.

The data loader gives rank r of global batch b the r-th half of the same 128 samples, with the
same augmentation, so averaging the two ranks' gradients (DDP) equals the gradient of the
whole batch. Group norm keeps the forward pass batch-independent (BatchNorm statistics would
differ per rank, and SyncBatchNorm needs CUDA).

The two runs sum the same gradients in a different order, so they agree to float32 rounding,
not bit for bit. The comparison is only meaningful if the training map is smooth: with ReLU,
the digits' constant backgrounds put thousands of activations on one value, and a one-ulp
difference in the weights can switch them all across the kink at once (on AVX2 kernels this
moved stem.conv.weight by 5.7e-5 after 4 steps, 2% of its update). SiLU makes the map smooth
(and both runs train in NCHW, not in a format chosen by timing), and the tolerance then follows
from the arithmetic: each step's update is rounded to a few ulps of the weight, and momentum
carries a gradient's rounding error into later steps, at most 1 / (1 - momentum) times; so
after ``steps`` steps a weight tensor may differ by
``ULPS_PER_STEP / (1 - momentum) * steps * eps32 * max|w|``.
Measured: at most 2.2x
``steps * eps32 * max|w|`` on AVX2 and AVX-512 kernels alike (ATEN_CPU_CAPABILITY=avx2
ONEDNN_MAX_CPU_ISA=AVX2 emulates the former), well inside the bound of 40x; a real DDP error
(an unaveraged gradient, a wrong shard) moves the weights by a sizeable part of the update.
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
OPTS = {"depth": 8, "widths": (8, 16, 32), "stem_width": 8, "norm_layer": "gn", "act_layer": "silu"}
STEPS = 4
ULPS_PER_STEP = 4


def test_two_processes_of_64_equal_one_of_128(tmp_path):
    cache = tmp_path / "cache"
    common = dict(data="digits", image_size=16, subset=384, val_size=0, cache_dir=str(cache), iters=STEPS,
                  device="cpu", lr=0.1, schedule="constant", warmup=0, channels_last=False)
    # 384 images: 3 global batches per epoch, so 4 steps cross an epoch boundary.
    one = train(resolve_config({"model": "cifar_resnet", "model_opts": OPTS, "batch_size": 128,
                                "out": str(tmp_path / "one"), **common}))
    args = ["--data", "digits", "--image-size", "16", "--subset", "384", "--val-size", "0",
            "--cache-dir", str(cache), "--iters", str(STEPS), "--device", "cpu", "--lr", "0.1",
            "--schedule", "constant", "--warmup", "0", "--channels-last", "off", "--batch-size", "64",
            "--out", str(tmp_path / "two")]
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
    assert one["iters"] == two["step"] == STEPS
    momentum = one["config"]["momentum"]
    eps = torch.finfo(torch.float32).eps
    for k, v in a.items():
        if not v.is_floating_point():
            continue
        tol = ULPS_PER_STEP / (1 - momentum) * STEPS * eps * v.abs().max().item()
        diff = (v - two["model"][k]).abs().max().item()
        assert diff <= tol, f"{k}: max diff {diff:.2e} > {tol:.2e}"
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
