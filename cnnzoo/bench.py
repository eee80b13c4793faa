"""Side-by-side speed: a cnnzoo model against torchvision's or timm's, with the same weights.

:func:`bench` builds cnnzoo's model and, where the other library has it, that library's
counterpart (:data:`COUNTERPARTS`), whose weights it loads into cnnzoo's through
:mod:`cnnzoo.interop`, so both compute the same function. It then times, in one process,
interleaved (A, B, P, A, B, P, ...), after warm-up:

* A, cnnzoo's model: a forward pass (``mode="infer"``, under ``torch.inference_mode``) or a
  training step (forward, cross-entropy, backward, SGD with momentum) on one random batch;
* B, the counterpart, the same way;
* P, the machine's convolution peak: a large 3x3 conv (:data:`PEAK_CONV`) in cnnzoo's dtype and
  memory format, forward only.

Each reports the median wall-clock time per call, images/s, and the multiply-adds per second
it achieves: multiply-adds per image from :func:`cnnzoo.analysis.profile`, counted 3x in
training (forward, input gradients, weight gradients), against P's rate.

Settings. Without ``fast`` both models run alike: eager (or both compiled), in the memory
format of ``channels_last``, in fp32 or under bf16 autocast (``amp="bf16"``): a like-for-like
check of parity. With ``fast`` (inference only) cnnzoo's side is
:func:`cnnzoo.optimize.for_inference` (channels-last, BNs folded, bf16 weights with
``amp="bf16"``, compiled with ``compile``) and the counterpart is the baseline the fast path is
measured against: eager fp32, in the memory format of ``channels_last`` (NCHW by default).
CPU only.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

MODES = ("infer", "train")
AGAINST = ("auto", "torchvision", "timm", "none")
AMPS = ("none", "bf16")

# cnnzoo name -> (the library's name, constructor keywords), per library. Only models whose
# weights cnnzoo.interop maps exactly (tests/test_bench.py checks every entry).
COUNTERPARTS: dict[str, dict[str, tuple[str, dict[str, Any]]]] = {
    "torchvision": {
        **{f"resnet{d}": (f"resnet{d}", {}) for d in (18, 34, 50, 101, 152)},
        "wide_resnet50_2": ("wide_resnet50_2", {}),
        **{f"vgg{d}{bn}": (f"vgg{d}{bn}", {}) for d in (11, 13, 16, 19) for bn in ("", "_bn")},
        **{f"densenet{d}": (f"densenet{d}", {}) for d in (121, 161, 169, 201)},
        # cnnzoo's googlenet_tv is torchvision's layout; no aux heads, as registered.
        "googlenet_tv": ("googlenet", dict(aux_logits=False, init_weights=False)),
    },
    "timm": {
        **{f"resnet{d}": (f"resnet{d}", {}) for d in (18, 34, 50, 101, 152)},
        # timm's SE rounds its width to a multiple of 8: equal to cnnzoo's (channels / 16) only
        # for the bottleneck nets, whose SE gates see 256 channels or more.
        **{f"se_resnet{d}": (f"seresnet{d}", {}) for d in (50, 101, 152)},
        "wide_resnet50_2": ("wide_resnet50_2", {}),
    },
}

# The conv that measures the machine's peak: big enough for any core count to run at full rate
# (7.4 G multiply-adds a call), shaped like the 3x3 convs of a ResNet's middle stages.
PEAK_CONV = dict(batch=4, channels=256, size=56, kernel=3)
# Its multiply-adds a call: output elements x input channels x kernel area (same padding).
PEAK_MACS = (PEAK_CONV["batch"] * PEAK_CONV["channels"] ** 2 * PEAK_CONV["kernel"] ** 2
             * PEAK_CONV["size"] ** 2)


def machine() -> dict[str, Any]:
    """What the numbers were measured on: CPU, its vector extension, core count, versions."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    from . import __version__
    from .optimize import reusing_freed_memory

    return {"cpu": cpu, "isa": torch.backends.cpu.get_cpu_capability(), "logical_cpus": os.cpu_count(),
            "python": platform.python_version(), "torch": torch.__version__, "cnnzoo": __version__,
            "reuse_freed_memory": reusing_freed_memory()}


def counterpart_of(name: str, against: str = "auto") -> tuple[str, str, dict[str, Any]] | None:
    """``(library, its model name, constructor keywords)`` of cnnzoo's ``name``, or ``None``.

    ``against="auto"``: torchvision's where it has the model, else timm's (if installed).
    """
    if against not in AGAINST:
        raise ValueError(f"against={against!r} is not allowed; choose one of {list(AGAINST)}")
    if against == "none":
        return None
    libs = ["torchvision", "timm"] if against == "auto" else [against]
    for lib in libs:
        if name in COUNTERPARTS[lib] and (against != "auto" or lib != "timm" or _has_timm()):
            return (lib, *COUNTERPARTS[lib][name])
    return None


def _has_timm() -> bool:
    import importlib.util

    return importlib.util.find_spec("timm") is not None


def build_counterpart(library: str, ext_name: str, kwargs: dict[str, Any], num_classes: int) -> nn.Module:
    """The other library's model, its own initialisation, ``num_classes`` outputs."""
    if library == "torchvision":
        import torchvision

        return torchvision.models.get_model(ext_name, weights=None, num_classes=num_classes, **kwargs)
    if not _has_timm():
        raise ValueError("timm is not installed (pip install timm)")
    import timm

    return timm.create_model(ext_name, pretrained=False, num_classes=num_classes, **kwargs)


# --------------------------------------------------------------------------------------------
# The result.


@dataclass
class Timed:
    """One timed thing: what it is, how it ran, and its per-call times."""

    model: str
    library: str
    setup: str
    images: int  # per call
    macs: int  # multiply-adds per call
    times_s: list[float] = field(default_factory=list)

    @property
    def median_s(self) -> float:
        return statistics.median(self.times_s)

    @property
    def images_per_s(self) -> float:
        return self.images / self.median_s

    @property
    def gmacs_per_s(self) -> float:
        return self.macs / self.median_s / 1e9


@dataclass
class BenchResult:
    """What :func:`bench` measured. ``ratio``: cnnzoo's images/s over the counterpart's (medians)."""

    model: str
    mode: str
    batch_size: int
    input_size: tuple[int, int, int]
    threads: int
    iters: int
    warmup: int
    ours: Timed
    other: Timed | None
    peak: Timed
    machine: dict[str, Any]
    note: str = ""

    @property
    def ratio(self) -> float | None:
        return None if self.other is None else self.ours.images_per_s / self.other.images_per_s

    def rows(self) -> list[dict[str, Any]]:
        """One row per timed thing, for a table."""
        rows = []
        for t in (self.ours, self.other, self.peak):
            if t is None:
                continue
            row = {"model": t.model, "library": t.library, "setup": t.setup,
                   "ms/call": round(1e3 * t.median_s, 2),
                   "images/s": None if t is self.peak else round(t.images_per_s, 1)}
            if self.other is not None:
                # as text, so the table shows the headline's three decimals (1.270, not 1.27)
                row[f"vs {self.other.library}"] = f"{self.ratio:.3f}" if t is self.ours else None
            row["G MACs/s"] = round(t.gmacs_per_s, 1)
            row["% of peak"] = round(100 * t.gmacs_per_s / self.peak.gmacs_per_s, 1)
            rows.append(row)
        return rows

    def headline(self) -> list[str]:
        c, h, w = self.input_size
        m = self.machine
        lines = [f"{self.model}, {self.mode}, batch {self.batch_size} at {c}x{h}x{w}, {self.threads} "
                 f"thread(s); median of {self.iters} interleaved calls each after {self.warmup} warm-up",
                 f"{m['cpu']} ({m['isa']}, {m['logical_cpus']} logical CPUs), torch {m['torch']}"
                 + (", freed memory kept for reuse (--reuse-memory)" if m.get("reuse_freed_memory") else "")]
        if self.other is not None:
            lines.append(f"cnnzoo / {self.other.library}: {self.ratio:.3f}x images/s")
        if self.note:
            lines.append(self.note)
        return lines

    def to_dict(self) -> dict[str, Any]:
        def timed(t: Timed | None) -> dict[str, Any] | None:
            if t is None:
                return None
            return {"model": t.model, "library": t.library, "setup": t.setup, "images_per_call": t.images,
                    "macs_per_call": t.macs, "median_ms": 1e3 * t.median_s, "images_per_s": t.images_per_s,
                    "gmacs_per_s": t.gmacs_per_s, "times_ms": [1e3 * s for s in t.times_s]}

        return {"model": self.model, "mode": self.mode, "batch_size": self.batch_size,
                "input_size": list(self.input_size), "threads": self.threads, "iters": self.iters,
                "warmup": self.warmup, "ratio": self.ratio,
                "peak_fraction": self.ours.gmacs_per_s / self.peak.gmacs_per_s,
                "cnnzoo": timed(self.ours), "other": timed(self.other), "peak": timed(self.peak),
                "machine": self.machine, "note": self.note}


# --------------------------------------------------------------------------------------------
# Measuring.


def time_interleaved(steps: list[Callable[[], None]], iters: int, warmup: int) -> list[list[float]]:
    """Seconds per call of each of ``steps``, called in turn (A, B, ..., A, B, ...): ``warmup``
    untimed rounds, then ``iters`` timed ones, so that a change in the machine's load during the
    run falls on every step alike."""
    times: list[list[float]] = [[] for _ in steps]
    for i in range(warmup + iters):
        for step, out in zip(steps, times, strict=True):
            t0 = time.perf_counter()
            step()
            if i >= warmup:
                out.append(time.perf_counter() - t0)
    return times


def _check_int(name: str, value: Any, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")


def _macs(name: str, opts: dict[str, Any], input_size: tuple[int, int, int], fast: bool) -> int:
    """Multiply-adds per image of the model as it runs (the fast path may do fewer)."""
    import cnnzoo

    from .analysis import profile
    from .optimize import for_inference

    with torch.device("meta"):  # shapes only
        model = cnnzoo.create_model(name, **opts)
    if fast:
        model = for_inference(model, channels_last=False)
    return profile(model, input_size).macs


def _logits(out) -> torch.Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out


def _step(model: nn.Module, x: torch.Tensor, mode: str, amp: bool, num_classes: int) -> Callable[[], None]:
    """One call to time: a forward pass, or a training step of ``model`` on ``x``."""
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp)
    if mode == "infer":
        def infer() -> None:
            with autocast:
                model(x)

        return infer
    y = torch.randint(0, num_classes, (x.shape[0],), generator=torch.Generator().manual_seed(0))
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)

    def train() -> None:
        with autocast:
            loss = F.cross_entropy(_logits(model(x)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return train


def _setup(*, fast: bool, channels_last: bool, bf16: bool, compile: bool) -> str:
    if fast:
        return "fast: BN folded, channels-last" + (", bf16 weights" if bf16 else ", fp32") + (
            ", compiled" if compile else "")
    return (("compiled" if compile else "eager") + (", channels-last" if channels_last else ", NCHW")
            + (", bf16 autocast" if bf16 else ", fp32"))


def bench(model: str, *, against: str = "auto", mode: str = "infer", batch_size: int = 16,
          input_size: tuple[int, int, int] | None = None, threads: int | None = None,
          channels_last: bool = False, fast: bool = False, amp: str | None = None, compile: bool = False,
          iters: int = 10, warmup: int = 3, model_opts: dict[str, Any] | None = None) -> BenchResult:
    """Time cnnzoo's ``model`` against its counterpart and the conv peak (see the module docstring).

    ``threads`` sets ``torch.set_num_threads`` for the run (restored afterwards; ``None`` keeps
    torch's setting, which is reported). ``input_size`` (C, H, W) defaults to the model's own.
    ``amp``: ``None``/``"none"`` or ``"bf16"``. Bad arguments raise ``ValueError``.
    """
    import cnnzoo

    from .analysis.profile import _check_input_size
    from .interop import load_external
    from .optimize import for_inference

    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not allowed; choose one of {list(MODES)}")
    amp = amp or "none"
    if amp not in AMPS:
        raise ValueError(f"amp={amp!r} is not allowed; choose one of {list(AMPS)}")
    if fast and mode != "infer":
        raise ValueError("the fast path (--fast) is for inference only; use --mode infer")
    _check_int("batch_size", batch_size, 1)
    _check_int("iters", iters, 1)
    _check_int("warmup", warmup, 1 if compile else 0)  # compilation happens in the first call
    if threads is not None:
        _check_int("threads", threads, 1)
    opts = dict(model_opts or {})
    if input_size is None:
        input_size = cnnzoo.get_model_meta(model).input_size
    size = _check_input_size(input_size)
    found = counterpart_of(model, against)
    note = ""
    if found is None and against not in ("none",):
        libs = "torchvision or timm" if against == "auto" else against
        note = f"{libs} has no counterpart of {model}: cnnzoo timed alone"
    bf16 = amp == "bf16"

    old_threads = torch.get_num_threads()
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        torch.manual_seed(0)
        ours = cnnzoo.create_model(model, **opts)
        ext = None
        if found is not None:
            lib, ext_name, kw = found
            ext = build_counterpart(lib, ext_name, kw, ours.num_classes)
            try:
                load_external(ours, ext.state_dict(), lib)
            except ValueError as e:
                raise ValueError(f"{lib}'s {ext_name} does not fit {model} as given "
                                 f"(use --against none with options that change the model): {e}") from e
        train = mode == "train"
        if train and ours.num_classes < 1:
            raise ValueError("training mode needs a classifier (num_classes >= 1)")
        x = torch.randn((batch_size, *size), generator=torch.Generator().manual_seed(0))
        cl = torch.channels_last

        def prepared(m: nn.Module, layout_cl: bool, compiled: bool) -> tuple[nn.Module, torch.Tensor]:
            m.train(train)
            if layout_cl:
                m = m.to(memory_format=cl)
            return (torch.compile(m) if compiled else m), (x.contiguous(memory_format=cl) if layout_cl else x)

        if fast:
            ours_run = for_inference(ours, channels_last=True, dtype=torch.bfloat16 if bf16 else None,
                                     compile=compile)
            ours_x = x.contiguous(memory_format=cl)
            ours_step = _step(ours_run, ours_x, mode, False, ours.num_classes)
        else:
            ours_run, ours_x = prepared(ours, channels_last, compile)
            ours_step = _step(ours_run, ours_x, mode, bf16, ours.num_classes)
        per_call = batch_size * (3 if train else 1)  # a training step: 3x the forward's multiply-adds
        base_macs = _macs(model, opts, size, fast=False)
        macs = (_macs(model, opts, size, fast=True) if fast else base_macs) * per_call
        steps = [ours_step]
        setup = _setup(fast=fast, channels_last=channels_last, bf16=bf16, compile=compile)
        timed = [Timed(model, "cnnzoo", setup, batch_size, macs)]
        if ext is not None:
            ext_compiled = compile and not fast
            ext_run, ext_x = prepared(ext, channels_last, ext_compiled)
            steps.append(_step(ext_run, ext_x, mode, bf16 and not fast, ours.num_classes))
            timed.append(Timed(found[1], found[0], _setup(fast=False, channels_last=channels_last,
                                                           bf16=bf16 and not fast, compile=ext_compiled),
                               batch_size, base_macs * per_call))
        steps.append(_peak_step(cl if (fast or channels_last) else torch.contiguous_format,
                                bf16_weights=fast and bf16, autocast=bf16 and not fast))
        p = PEAK_CONV
        timed.append(Timed(f"conv {p['kernel']}x{p['kernel']} {p['channels']}->{p['channels']} at "
                           f"{p['size']}x{p['size']}", "torch", "the machine's conv peak, batch "
                           f"{p['batch']}, forward", 0, PEAK_MACS))

        with torch.inference_mode(not train):
            for t, times in zip(timed, time_interleaved(steps, iters, warmup), strict=True):
                t.times_s = times
        used = torch.get_num_threads()
    finally:
        torch.set_num_threads(old_threads)
    return BenchResult(model, mode, batch_size, size, used, iters, warmup, timed[0],
                       timed[1] if ext is not None else None, timed[-1], machine(), note)


def _peak_step(memory_format: torch.memory_format, *, bf16_weights: bool,
               autocast: bool) -> Callable[[], None]:
    """A large 3x3 conv in the given layout and precision (:data:`PEAK_CONV`)."""
    p = PEAK_CONV
    dtype = torch.bfloat16 if bf16_weights else torch.float32
    g = torch.Generator().manual_seed(0)
    conv = nn.Conv2d(p["channels"], p["channels"], p["kernel"], padding=p["kernel"] // 2, bias=False)
    conv = conv.to(dtype=dtype, memory_format=memory_format).eval().requires_grad_(False)
    x = torch.randn(p["batch"], p["channels"], p["size"], p["size"], generator=g).to(
        dtype=dtype, memory_format=memory_format)
    cast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast)

    def step() -> None:
        with cast:
            conv(x)

    return step
