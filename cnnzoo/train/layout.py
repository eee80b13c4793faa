"""``channels_last="auto"``: the memory format a run trains in, chosen by measuring both.

Whether NHWC (channels-last) or NCHW trains faster depends on the model, the batch, the number
of threads, the CPU's vector unit (or the GPU) and the torch version: on one 2-core AVX-512
machine with torch 2.14.1, channels-last trained a CIFAR ResNet-20 1.28x faster at 2 threads and
a quarter-width cifar_googlenet 2.3x faster at one (docs/performance.md), where an older
measurement had it at 0.49x for ResNet-20 at 1 thread (docs/training.md). So the engine does not
guess: before the first step it times a few training steps of a copy of the run's model, in each
format, interleaved (NCHW, NHWC, NCHW, ...) so that a change in the machine's load falls on both
alike, and trains in the faster one.

The measurement is kept in the cache folder (``--cache-dir``), one small JSON file per
(model, options, input size, batch, AMP, device, threads, torch) key, and the first one written
wins: every later run with the same key on the same machine trains in the same format, so two
runs of one config are comparable and a resumed run (whose ``config.yaml`` records the format
chosen) matches the run it continues. The measurement never touches the run's model, optimizer
or random streams: it trains a deep copy with a learning rate of 0, under a forked RNG.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn

from .evaluate import autocast

ROUNDS = 3  # timed steps per format, interleaved, after one untimed step each
BUDGET_S = 20.0  # stop after fewer rounds once the timed steps took this long (large models on a CPU)


def layout_key(*, model: str, model_opts: dict[str, Any], input_size, batch_size: int, amp: str,
               device: torch.device, world_size: int) -> dict[str, Any]:
    """Everything the faster format depends on, as JSON-able values."""
    if device.type == "cuda":
        where = torch.cuda.get_device_name(device)
    else:
        where = f"{torch.backends.cpu.get_cpu_capability()} {os.cpu_count()} cpus"
    return {"model": model, "model_opts": model_opts, "input_size": list(input_size),
            "batch_size": batch_size, "amp": amp, "device": f"{device.type}: {where}",
            "threads": torch.get_num_threads(), "processes": world_size, "torch": torch.__version__}


def _cache_file(cache_dir: str, key: dict[str, Any]) -> str:
    text = json.dumps(key, sort_keys=True, default=str)
    return os.path.join(cache_dir, "layout", hashlib.sha256(text.encode()).hexdigest()[:20] + ".json")


def _read(path: str) -> dict[str, Any] | None:
    try:
        with open(path) as f:
            found = json.load(f)
        ok = isinstance(found.get("channels_last"), bool) and all(
            isinstance(found.get(k), (int, float)) for k in ("nchw", "nhwc"))
        return found if ok else None
    except (OSError, ValueError, AttributeError):
        return None


def _keep_first(path: str, record: dict[str, Any]) -> dict[str, Any]:
    """Store ``record`` at ``path`` unless a record is there already; return ``record`` itself if
    it was stored (or could not be: a read-only cache folder), else the one found there."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(record, f, indent=1, default=str)
        try:
            os.link(tmp, path)  # fails if another run stored its measurement first
            return record
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    except OSError:  # a read-only cache folder: use this measurement, store nothing
        return record
    return _read(path) or record


def measure(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
            loss_fn: Callable[[Any, torch.Tensor], torch.Tensor], amp_dtype: torch.dtype | None,
            rounds: int = ROUNDS, budget_s: float = BUDGET_S) -> dict[str, float]:
    """Training images/s of copies of ``model`` in NCHW (``"nchw"``) and in channels-last
    (``"nhwc"``) on batch ``(x, y)``, the number of timed steps of each (``"steps"``) and the
    median of the paired ratios NHWC/NCHW speed (``"median_ratio"``).

    Each step is forward, loss, backward and an SGD step with momentum (learning rate 0), the
    formats alternating; the fastest timed step of each is kept (the least disturbed by other
    work on the machine). The caller's model and RNG states are not changed.
    """
    device = x.device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    nets, batches = {}, {}
    for name, fmt in (("nchw", torch.contiguous_format), ("nhwc", torch.channels_last)):
        net = copy.deepcopy(model).train().to(memory_format=fmt)
        opt = torch.optim.SGD(net.parameters(), lr=0.0, momentum=0.9)
        nets[name], batches[name] = (net, opt), x.contiguous(memory_format=fmt)

    def step(name: str) -> float:
        net, opt = nets[name]
        sync()
        t0 = time.perf_counter()
        with autocast(device.type, amp_dtype):
            out = net(batches[name])
        loss_fn(out, y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        return time.perf_counter() - t0

    times: dict[str, list[float]] = {name: [] for name in nets}
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for name in nets:
            step(name)  # warm-up: kernel selection, allocator
        spent = 0.0
        for _ in range(rounds):
            for name in nets:
                times[name].append(step(name))
                spent += times[name][-1]
            if spent > budget_s:
                break
    return {name: x.shape[0] / min(t) for name, t in times.items()} | {
        "steps": len(times["nchw"]), "median_ratio": statistics.median(
            a / b for a, b in zip(times["nchw"], times["nhwc"], strict=True))}


def choose_channels_last(model: nn.Module, *, key: dict[str, Any], cache_dir: str | None,
                         num_classes: int, loss_fn: Callable[[Any, torch.Tensor], torch.Tensor],
                         amp_dtype: torch.dtype | None, device: torch.device) -> tuple[bool, str]:
    """``(channels_last, one line saying why)`` for a run of ``model`` with ``key``'s settings."""
    path = _cache_file(cache_dir, key) if cache_dir else None
    found = _read(path) if path else None
    how = "measured earlier on this machine"
    if found is None:
        c, h, w = key["input_size"]
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(key["batch_size"], c, h, w, generator=gen).to(device)
        y = torch.randint(0, num_classes, (key["batch_size"],), generator=gen).to(device)
        rates = measure(model, x, y, loss_fn, amp_dtype)
        found = {"channels_last": rates["nhwc"] > rates["nchw"], **rates, "key": key,
                 "measured": time.strftime("%Y-%m-%d %H:%M:%S")}
        how = f"measured now, {found['steps']} training steps each"
        if path:
            stored = _keep_first(path, found)
            if stored is not found:
                found, how = stored, "measured by a run that finished measuring first"
    chosen = found["channels_last"]
    line = (f"memory format: {'channels-last' if chosen else 'NCHW'} (--channels-last auto: "
            f"{found['nhwc']:.0f} img/s channels-last, {found['nchw']:.0f} img/s NCHW, {how}; "
            f"--channels-last on or off to choose)")
    return chosen, line
