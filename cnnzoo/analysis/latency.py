"""Measured forward latency: the median over timed runs after warm-up, with the threads stated.

Multiply-adds predict cost only roughly (memory traffic, branch count and concatenations
matter too), so ``cnnzoo summary --bench`` reports a measurement beside them.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn


@dataclass(frozen=True)
class Latency:
    """Wall-clock milliseconds per forward pass of one batch."""

    median_ms: float
    min_ms: float
    max_ms: float
    runs: int
    warmup: int
    threads: int
    batch_size: int
    device: str

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return (f"{self.median_ms:.2f} ms median (min {self.min_ms:.2f}, max {self.max_ms:.2f}) "
                f"over {self.runs} runs after {self.warmup} warm-up, batch {self.batch_size}, "
                f"{self.threads} thread(s), {self.device}")


def measure_latency(model: nn.Module, input_size: Sequence[int] | None = None, *, batch_size: int = 1,
                    runs: int = 20, warmup: int = 3, threads: int | None = None) -> Latency:
    """Time ``model``'s forward pass (eval mode, ``torch.inference_mode``) on its own device.

    ``threads`` sets ``torch.set_num_threads`` for the measurement (restored afterwards);
    ``None`` keeps the current setting, which is what is reported. On CUDA each run is
    synchronized. The model must hold real weights (not the ``meta`` device).
    """
    from .profile import _check_input_size, _check_model, _device_dtype, _model_input_size

    _check_model("measure_latency", model)
    size = _check_input_size(input_size if input_size is not None else _model_input_size(model))
    for name, v, low in (("runs", runs, 1), ("warmup", warmup, 0), ("batch_size", batch_size, 1)):
        if not isinstance(v, int) or isinstance(v, bool) or v < low:
            raise ValueError(f"{name} must be an int >= {low}, got {v!r}")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive int, got {threads!r}")
    device, dtype = _device_dtype(model)
    if device.type == "meta":
        raise ValueError("latency needs a model with real weights, not one on the meta device")
    x = torch.randn((batch_size, *size), device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    old_threads = torch.get_num_threads()
    was_training = model.training
    model.eval()
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        times = []
        with torch.inference_mode():
            for i in range(warmup + runs):
                sync()
                t0 = time.perf_counter()
                model(x)
                sync()
                if i >= warmup:
                    times.append((time.perf_counter() - t0) * 1e3)
        used = torch.get_num_threads()
    finally:
        torch.set_num_threads(old_threads)
        model.train(was_training)
    return Latency(statistics.median(times), min(times), max(times), runs, warmup, used,
                   batch_size, str(device))
