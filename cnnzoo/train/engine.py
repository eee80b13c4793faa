"""The training loop: one process or many, resumable bit for bit.

:func:`train` takes a resolved :class:`~cnnzoo.train.config.TrainConfig` and writes a run folder:
``config.yaml``, ``metrics.csv``, ``tb/`` (TensorBoard), ``last.pt`` and ``best.pt``
(see :mod:`~cnnzoo.train.checkpoint`), ``curves.png`` and ``results.json``.

Exact resumption rests on three things: the data loader's determinism contract (the samples
and augmentations of batch ``b`` of epoch ``e`` depend only on ``(seed, e, b)``), the RNG
states saved in every checkpoint (dropout, stochastic depth), and mixup/cutmix drawing from a
generator seeded by ``(seed, step)``. A run killed at any point and resumed with
``--resume DIR`` continues from the last checkpoint (every ``checkpoint_every`` optimizer steps
and at each epoch end) and ends with the same weights, bit for bit on CPU.

Test hook: if the environment variable ``CNNZOO_KILL_AT_STEP=j`` is set, the process sends
itself SIGKILL just before optimizer step ``j`` (the resume test uses it to die mid-epoch).
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
import os
import platform
import re
import signal
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from . import distributed as D
from .checkpoint import (
    FORMAT,
    CheckpointError,
    atomic_save,
    atomic_write_json,
    atomic_write_text,
    check_compatible,
    get_rng_state,
    is_bookkeeping,
    load_checkpoint,
    load_init_weights,
    load_model_state,
    lock_run_folder,
    remove_stale_temporaries,
    set_rng_state,
)
from .config import TrainConfig, lr_factor, validate
from .evaluate import AMP_DTYPES, EvalResult, autocast, evaluate, logits_of, name_list
from .report import Reporter, plot_curves, rewrite_csv

EVAL_BATCH = 256


class TrainingDiverged(ValueError):
    """The loss became NaN or infinite; the run stopped and kept its last good checkpoint."""


# --------------------------------------------------------------------------------------------
# Loss: main output plus auxiliary heads, optionally on mixed samples.


def compute_loss(output, target: torch.Tensor, criterion: Callable, aux_weight: float = 0.3,
                 mix: tuple[torch.Tensor, float] | None = None) -> torch.Tensor:
    """Loss of a model output; a tuple ``(logits, aux1, ...)`` adds ``aux_weight`` x each aux loss.

    ``mix = (target_b, lam)`` gives the mixup/cutmix loss ``lam * L(y) + (1 - lam) * L(y_b)``.
    """
    outs = tuple(output) if isinstance(output, (tuple, list)) else (output,)

    def one(logits: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if mix is None:
            return criterion(logits, target)
        target_b, lam = mix
        return lam * criterion(logits, target) + (1 - lam) * criterion(logits, target_b)

    loss = one(outs[0])
    for aux in outs[1:]:
        loss = loss + aux_weight * one(aux)
    return loss


def mix_batch(x: torch.Tensor, y: torch.Tensor, mixup: float, cutmix: float, gen: torch.Generator
              ) -> tuple[torch.Tensor, tuple[torch.Tensor, float] | None]:
    """Mixup (alpha ``mixup``) or CutMix (alpha ``cutmix``); one of the two, at random, if both.

    All randomness comes from ``gen`` (seeded per step), so resumed runs mix identically.
    """
    if mixup <= 0 and cutmix <= 0:
        return x, None
    use_cutmix = cutmix > 0 and (mixup <= 0 or torch.rand((), generator=gen).item() < 0.5)
    alpha = cutmix if use_cutmix else mixup
    lam = _beta(alpha, gen)
    perm = torch.randperm(x.shape[0], generator=gen).to(x.device)
    if use_cutmix:
        h, w = x.shape[-2:]
        rh, rw = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
        cy = int(torch.randint(h, (), generator=gen))
        cx = int(torch.randint(w, (), generator=gen))
        y0, y1 = max(cy - rh // 2, 0), min(cy + rh // 2, h)
        x0, x1 = max(cx - rw // 2, 0), min(cx + rw // 2, w)
        x = x.clone()
        x[..., y0:y1, x0:x1] = x[perm][..., y0:y1, x0:x1]
        lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)  # the pasted area decides the label weight
    else:
        x = lam * x + (1 - lam) * x[perm]
    return x, (y[perm], float(lam))


def _beta(alpha: float, gen: torch.Generator) -> float:
    # Beta(a, a) from two Gamma draws made with our own generator (torch.distributions would
    # draw from the global RNG): Gamma(a) via Marsaglia-Tsang on standard normals/uniforms.
    def gamma(a: float) -> float:
        boost = 1.0
        if a < 1:
            boost = torch.rand((), generator=gen).item() ** (1 / a)
            a += 1
        d = a - 1 / 3
        c = 1 / math.sqrt(9 * d)
        while True:
            z = torch.randn((), generator=gen).item()
            v = (1 + c * z) ** 3
            if v <= 0:
                continue
            u = torch.rand((), generator=gen).item()
            if math.log(max(u, 1e-300)) < 0.5 * z * z + d - d * v + d * math.log(v):
                return d * v * boost

    g1, g2 = gamma(alpha), gamma(alpha)
    return g1 / (g1 + g2)


# --------------------------------------------------------------------------------------------
# EMA of weights.


class ModelEma:
    """Exponential moving average of a model's parameters and buffers (the copy is evaluated)."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for e, m in zip(self.module.state_dict().values(), model.state_dict().values(), strict=True):
            if e.dtype.is_floating_point:
                e.lerp_(m, 1 - self.decay)
            else:
                e.copy_(m)


# --------------------------------------------------------------------------------------------
# Helpers.


@torch.no_grad()
def recompute_bn_stats(model: nn.Module, batches) -> int:
    """Set every BatchNorm's running statistics to their plain average over ``batches`` of inputs
    ("precise BN"), in training mode, leaving everything else as it was. Returns the batch count.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
           and m.track_running_stats]
    if not bns:
        return 0
    momenta = [bn.momentum for bn in bns]
    was_training = model.training
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average
    n = 0
    try:
        model.train()
        for x in batches:
            model(x)
            n += 1
    finally:
        for bn, m in zip(bns, momenta, strict=True):
            bn.momentum = m
        model.train(was_training)
    return n


def network_depth(model: nn.Module) -> int:
    """Conv and linear layers of ``model``: the "depth" that papers count (ResNet-110 has 110)."""
    return sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())


def data_label(spec: str) -> str:
    """A short name for a data spec: ``imagefolder:/x/cifar10-jpeg75.zip`` -> ``cifar10-jpeg75``."""
    if spec.startswith("imagefolder:"):
        p = Path(spec[len("imagefolder:"):].rstrip("/\\"))
        spec = p.stem if p.suffix.lower() == ".zip" else p.name
    return re.sub(r"[^A-Za-z0-9_.]+", "-", spec).strip("-.")[:40] or "data"


def default_out(cfg: TrainConfig) -> str:
    """``runs/MODEL-DATA-TIME`` (UTC), with ``-2``, ``-3``... when that folder already exists."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"{cfg.model}-{data_label(cfg.data)}-{stamp}"
    out, n = base, 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return str(out)


def cpu_native_bf16() -> bool | None:
    """Whether this CPU has bf16 instructions (AVX512_BF16 or AMX on x86); ``None``: unknown."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})
    except OSError:
        pass
    return None


def versions() -> dict[str, str]:
    import numpy
    import torchvision

    import cnnzoo

    return {"cnnzoo": cnnzoo.__version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "numpy": numpy.__version__, "python": platform.python_version()}


def hardware(device: torch.device, world_size: int) -> dict[str, Any]:
    hw = {"device": str(device), "world_size": world_size, "threads": torch.get_num_threads(),
          "platform": platform.platform(), "cpu": platform.processor() or platform.machine()}
    if device.type == "cuda":
        hw["gpu"] = torch.cuda.get_device_name(device)
    return hw


def _loss_note(cfg: TrainConfig) -> str:
    """Why the training loss may sit above the validation loss, for curves.png."""
    why = [w for w, on in ((f"label smoothing {cfg.label_smoothing:g}", cfg.label_smoothing > 0),
                           ("mixup", cfg.mixup > 0), ("CutMix", cfg.cutmix > 0)) if on]
    if not why:
        return ""
    return f"training loss includes {' and '.join(why)}, so it sits above the validation loss"


def _measure(model: nn.Module, input_size) -> tuple[int, int]:
    """Parameters and multiply-adds of ``model`` at ``input_size`` (profiled on a CPU copy)."""
    from cnnzoo.analysis import profile

    r = profile(copy.deepcopy(model).cpu().float().eval(), input_size=tuple(input_size))
    return r.params, r.macs


def _load_bundle(cfg: TrainConfig, dist: D.DistInfo):
    from cnnzoo.data import load_data

    def load():
        return load_data(cfg.data, data_dir=cfg.data_dir, download=cfg.download, val_size=cfg.val_size,
                         seed=cfg.seed, image_size=cfg.image_size, subset=cfg.subset,
                         cache_dir=cfg.cache_dir)

    # Rank 0 builds the on-disk cache first; the others then read it. A data error on rank 0 is
    # raised on every rank (instead of leaving the others waiting for it).
    bundle, error = None, None
    if dist.is_main:
        try:
            bundle = load()
        except ValueError as e:
            error = e
    message = D.broadcast_object(None if error is None else str(error))
    if error is not None:
        raise error
    if message is not None:
        raise ValueError(message)
    return bundle if bundle is not None else load()


def _on_main(dist: D.DistInfo, fn: Callable[[], Any]) -> Any:
    """``fn()`` on rank 0 only (``None`` on the others); a ``ValueError`` or ``OSError`` it raises is
    raised on every rank, instead of leaving the others waiting for rank 0."""
    result, error = None, None
    if dist.is_main:
        try:
            result = fn()
        except (ValueError, OSError) as e:
            error = e
    what = None if error is None else (
        ("os", error.errno, error.strerror, error.filename) if isinstance(error, OSError) and error.strerror
        else ("value", str(error)))
    what = D.broadcast_object(what)
    if error is not None:
        raise error
    if what is not None:
        raise OSError(*what[1:]) if what[0] == "os" else ValueError(what[1])
    return result


def check_new_run_folder(out: Path) -> None:
    """A new run writes to a folder that does not exist yet or is empty: a folder with a run (or
    anything else) in it is never overwritten. Raises ``ValueError``, changing nothing."""
    if not out.exists():
        return
    if not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    if (out / "last.pt").exists():
        raise ValueError(f"{out} already holds a run; continue it with --resume {out} "
                         "or choose another --out")
    kept = sorted(p.name for p in out.iterdir() if not is_bookkeeping(p.name))
    if kept:
        raise ValueError(f"{out} is not empty ({', '.join(kept[:3])}{', ...' if len(kept) > 3 else ''}) and "
                         "holds no run to resume: a run folder belongs to one run; choose a new --out")


def _claim_run_folder(out: Path, resume: bool):
    """Lock ``out`` for this run (creating it for a new one) and clear interrupted writes; return
    the lock's file. A new run checks again, under the lock, that nobody wrote there meanwhile."""
    if resume and not (out / "last.pt").is_file():
        raise CheckpointError(f"no checkpoint at {out / 'last.pt'}")
    out.mkdir(parents=True, exist_ok=True)
    lock = lock_run_folder(out)
    try:
        if not resume:
            check_new_run_folder(out)
        remove_stale_temporaries(out)
    except BaseException:
        lock.close()
        raise
    return lock


def _check_input_fits(cfg: TrainConfig, bundle) -> None:
    """Refuse images too small for the network (e.g. GoogLeNet at 8x8) before anything is written,
    with the message ``cnnzoo summary`` gives: a shapes-only twin of the model runs on one input."""
    import cnnzoo
    from cnnzoo.analysis import profile

    with torch.device("meta"):  # shapes only: no memory, no initialisation, no random numbers drawn
        twin = cnnzoo.create_model(cfg.model, num_classes=bundle.num_classes, in_chans=bundle.input_size[0],
                                   **cfg.model_opts)
    try:
        profile(twin, input_size=tuple(bundle.input_size))
    except ValueError as e:
        raise ValueError(f"{e}; {cfg.model} needs larger images than {data_label(cfg.data)}'s: "
                         "choose a larger --image-size") from None


def data_changes(ckpt: dict[str, Any], bundle) -> list[str]:
    """How ``bundle`` differs from the data a checkpoint was made on: images per split (checkpoints
    from before the split sizes were recorded skip that), class names, image size."""
    changes = []
    for split, n in (ckpt.get("data_sizes") or {}).items():
        if bundle.sizes.get(split, 0) != n:
            changes.append(f"{split} images {n:,} -> {bundle.sizes.get(split, 0):,}")
    old, new = list(ckpt.get("class_names") or []), list(bundle.class_names)
    if old and old != new:
        changes.append(f"class names {name_list(old)} -> {name_list(new)}")
    if tuple(ckpt["input_size"]) != tuple(bundle.input_size):
        changes.append(f"image size {'x'.join(map(str, ckpt['input_size']))} -> "
                       f"{'x'.join(map(str, bundle.input_size))}")
    return changes


def _by_interrupt(e: BaseException) -> bool:
    """Ctrl-C, or an error raised while one was handled (``torch.save`` cut short turns into one)."""
    while e is not None:
        if isinstance(e, KeyboardInterrupt):
            return True
        e = e.__cause__ or e.__context__
    return False


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except OSError:
        return None


class _StopFlag:
    """SIGINT (Ctrl-C) sets a flag checked between steps; a second Ctrl-C interrupts at once."""

    def __init__(self):
        self.stop = False
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        self.stop = True
        signal.signal(signal.SIGINT, self._old or signal.default_int_handler)

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


# --------------------------------------------------------------------------------------------
# The trainer.


class Trainer:
    """One training run. Use :func:`train` unless you need to inject a model or a data bundle.

    ``bundle`` follows the :func:`cnnzoo.data.load_data` interface; ``model`` replaces the
    registry model built from ``cfg.model`` (the config still names it, for checkpoints).
    """

    def __init__(self, cfg: TrainConfig, *, bundle=None, model: nn.Module | None = None,
                 resume: str | os.PathLike | None = None, allow_data_change: bool = False):
        self._lock = None  # the run folder's lock (rank 0), from before the first write to the run's end
        try:
            self._setup(cfg, bundle, model, resume, allow_data_change)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Release the run folder (done by :meth:`run`; the OS does it if the process dies)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _setup(self, cfg: TrainConfig, bundle, model: nn.Module | None, resume, allow_data_change: bool
               ) -> None:
        validate(cfg)
        self.cfg = cfg
        self.notes: list[str] = []  # said once at the start of the run
        if cfg.threads is not None:
            torch.set_num_threads(cfg.threads)
        self.dist = D.setup(cfg.device)
        self.device = self.dist.device
        if cfg.amp == "fp16" and self.device.type != "cuda":
            raise ValueError("--amp fp16 needs a CUDA GPU (it uses a gradient scaler); on CPU use --amp bf16")
        if cfg.amp == "bf16" and self.device.type == "cpu" and cpu_native_bf16() is False:
            self.notes.append("warning: this CPU has no bf16 instructions (AVX512_BF16 or AMX), so --amp "
                              "bf16 is emulated and runs many times slower than fp32; use --amp none here")
        if cfg.sync_bn and not self.dist.distributed:
            raise ValueError("--sync-bn only makes sense with several processes (torchrun)")
        if cfg.sync_bn and self.device.type != "cuda":
            raise ValueError("--sync-bn needs CUDA (torch's SyncBatchNorm has no CPU/gloo kernel); "
                             "on CPU use a batch-independent norm, e.g. --opt norm_layer=gn")
        self.amp_dtype = AMP_DTYPES.get(cfg.amp)

        self.out = Path(resume) if resume else Path(D.broadcast_object(cfg.out or default_out(cfg)))
        # A run folder belongs to one run: a resumed one is locked at once (another process in it
        # stops this one here); a new one is checked now and created and locked once the data and
        # the model are known to work, so a mistake leaves nothing behind.
        if resume:
            self._lock = _on_main(self.dist, lambda: _claim_run_folder(self.out, resume=True))
        else:
            _on_main(self.dist, lambda: check_new_run_folder(self.out))
        self.allow_data_change = allow_data_change

        self.bundle = bundle if bundle is not None else _load_bundle(cfg, self.dist)
        b = self.bundle
        if getattr(b, "info", {}).get("size_note"):
            self.notes.append(f"note: {b.info['size_note']}")
        if not resume:
            self.cfg = cfg = self._fit_batch_to_data(cfg)
        if model is None:
            _check_input_fits(cfg, b)
        torch.manual_seed(cfg.seed)  # global RNG: weight init, dropout, stochastic depth
        if model is None:
            import cnnzoo

            model = cnnzoo.create_model(cfg.model, num_classes=b.num_classes, in_chans=b.input_size[0],
                                        **cfg.model_opts)
        if cfg.init_from and not resume:
            self.notes += load_init_weights(model, cfg.init_from)
        self.raw = model.to(self.device)
        self.depth = network_depth(self.raw)
        if cfg.channels_last == "auto":
            self.cfg = cfg = dataclasses.replace(cfg, channels_last=self._choose_layout(cfg))
        if cfg.sync_bn:
            self.raw = nn.SyncBatchNorm.convert_sync_batchnorm(self.raw)
        if cfg.channels_last:
            self.raw = self.raw.to(memory_format=torch.channels_last)

        self.steps_per_epoch = len(b.loader("train", cfg.batch_size, train=True, device="cpu", seed=cfg.seed,
                                            rank=self.dist.rank, world_size=self.dist.world_size))
        if self.steps_per_epoch == 0:
            raise ValueError(f"the training split has {b.sizes['train']} images, fewer than one batch of "
                             f"{cfg.batch_size} x {self.dist.world_size} process(es); lower --batch-size")
        self.total = cfg.iters if cfg.iters is not None else cfg.epochs * self.steps_per_epoch
        self.epochs = math.ceil(self.total / self.steps_per_epoch)

        self.optimizer = self._make_optimizer()
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, self.total, cfg, self.depth))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.amp == "fp16")
        self.ema = ModelEma(self.raw, cfg.ema_decay) if cfg.ema_decay > 0 else None
        self.criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)

        # position and bookkeeping (all saved in last.pt)
        self.step = 0
        self.epoch = 0
        self.batch = 0
        self.history: list[dict[str, Any]] = []
        self.best_val: float | None = None
        self.best_val_loss: float | None = None  # breaks ties of best_val
        self.acc = [0.0, 0.0, 0.0]  # this epoch so far: loss sum, correct, seen
        self.epoch_train_seconds = 0.0
        self.epoch_untimed = 0  # images of this epoch not in its throughput (torch.compile's first step)
        self.seconds = 0.0
        # every log_every steps: step, that step's batch loss and top-1, lr (curves.png)
        self.step_log: list[dict[str, float]] = []
        self.log_every = max(1, self.total // 200)
        self._compiled_step_done = not cfg.compile
        self.saved_step: int | None = None  # the step last.pt holds (None: no last.pt yet)

        if resume:
            self._restore(self.out / "last.pt")

        self.model: nn.Module = self.raw
        if self.dist.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.model = DDP(self.raw, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if cfg.compile:
            self.model = torch.compile(self.model)
        if not resume:
            self._lock = _on_main(self.dist, lambda: _claim_run_folder(self.out, resume=False))

    # -- setup -------------------------------------------------------------------------------
    def _fit_batch_to_data(self, cfg: TrainConfig) -> TrainConfig:
        """``min_steps_per_epoch``: a smaller batch on a small dataset, so a short run still learns.

        On scikit-learn's 1,293 training digits, batch 128 gives 10 steps per epoch: 3 epochs were
        30 steps and ended near chance (15.6% test top-1). Halving the batch until an epoch has
        ``min_steps_per_epoch`` steps, with lr scaled by sqrt(new / old), restores learning.
        """
        n, per_step = self.bundle.sizes["train"], self.dist.world_size
        bs = cfg.batch_size
        while bs > 8 and n // (bs * per_step) < cfg.min_steps_per_epoch:
            bs //= 2
        if bs == cfg.batch_size:
            return cfg
        lr = cfg.lr * math.sqrt(bs / cfg.batch_size)
        self.notes.append(
            f"batch {bs} and lr {lr:.4g} instead of {cfg.batch_size} and {cfg.lr:g}: {n:,} training images "
            f"give fewer than {cfg.min_steps_per_epoch} steps per epoch at batch {cfg.batch_size} (the "
            "recipe's min_steps_per_epoch; --batch-size is used as given)")
        return dataclasses.replace(cfg, batch_size=bs, lr=lr)

    def _choose_layout(self, cfg: TrainConfig) -> bool:
        """``--channels-last auto``: the faster memory format for this run (see :mod:`.layout`),
        measured on rank 0 and used by every rank."""
        from cnnzoo.data.cache import default_cache_dir

        from .layout import choose_channels_last, layout_key

        def choose():
            key = layout_key(model=cfg.model, model_opts=cfg.model_opts, input_size=self.bundle.input_size,
                             batch_size=cfg.batch_size, amp=cfg.amp, device=self.device,
                             world_size=self.dist.world_size)
            criterion = nn.CrossEntropyLoss()
            return choose_channels_last(
                self.raw, key=key, cache_dir=cfg.cache_dir or default_cache_dir(),
                num_classes=self.bundle.num_classes, amp_dtype=self.amp_dtype, device=self.device,
                loss_fn=lambda out, y: compute_loss(out, y, criterion, cfg.aux_weight))

        chosen, line = D.broadcast_object(_on_main(self.dist, choose))
        self.notes.append(line)
        return chosen

    def _make_optimizer(self) -> torch.optim.Optimizer:
        c = self.cfg
        params = [p for p in self.raw.parameters() if p.requires_grad]
        if c.optimizer == "adamw":
            return torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay)
        return torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, nesterov=c.nesterov,
                               weight_decay=c.weight_decay)

    def _header(self, kind: str) -> dict[str, Any]:
        """What every checkpoint carries to be loaded and checked on its own."""
        return {"format": FORMAT, "kind": kind, "config": self.cfg.to_dict(),
                "num_classes": self.bundle.num_classes, "input_size": list(self.bundle.input_size),
                "class_names": list(self.bundle.class_names), "mean": list(self.bundle.mean),
                "std": list(self.bundle.std), "data_sizes": dict(self.bundle.sizes),
                "streaming": bool(getattr(self.bundle, "info", {}).get("streaming"))}

    def _state(self) -> dict[str, Any]:
        return {
            **self._header("last"),
            "model": self.raw.state_dict(), "ema": self.ema.module.state_dict() if self.ema else None,
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(), "step": self.step, "epoch": self.epoch,
            "batch": self.batch, "rng": get_rng_state(), "history": self.history,
            "best_val": self.best_val, "best_val_loss": self.best_val_loss, "acc": list(self.acc),
            "epoch_train_seconds": self.epoch_train_seconds, "seconds": self.seconds,
            "epoch_untimed": self.epoch_untimed, "step_log": self.step_log,
        }

    def _restore(self, path: Path) -> None:
        ckpt = load_checkpoint(path, map_location=self.device)
        check_compatible(ckpt["config"], self.cfg.model, self.cfg.model_opts, str(path))
        changes = data_changes(ckpt, self.bundle)
        if changes and not self.allow_data_change:
            raise ValueError(f"the data changed since {path} was saved: {'; '.join(changes)}; resume anyway "
                             "with --allow-data-change")
        if changes:
            self.notes.append(f"warning: the data changed since {path} was saved: {'; '.join(changes)}; "
                              "continuing on the new data (--allow-data-change)")
        old = ckpt["config"]
        old_total = old["iters"] if old.get("iters") is not None else old["epochs"] * self.steps_per_epoch
        load_model_state(self.raw, ckpt["model"], str(path))
        if self.ema is not None:
            load_model_state(self.ema.module, ckpt["ema"], f"{path} (EMA)")
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.step, self.epoch, self.batch = ckpt["step"], ckpt["epoch"], ckpt["batch"]
        self.saved_step = self.step
        self.history, self.best_val = list(ckpt["history"]), ckpt["best_val"]
        self.best_val_loss = ckpt.get("best_val_loss")
        self.acc = list(ckpt["acc"])
        self.epoch_train_seconds, self.seconds = ckpt["epoch_train_seconds"], ckpt["seconds"]
        self.epoch_untimed = ckpt.get("epoch_untimed", 0)
        self.step_log = list(ckpt.get("step_log", []))
        set_rng_state(ckpt["rng"])
        if old_total != self.total:
            self._extend(old, old_total)

    def _extend(self, old: dict[str, Any], old_total: int) -> None:
        """Continue a run for longer than it was planned (``--resume DIR --epochs N``)."""
        unit, n_old, n_new = (("epochs", old["epochs"], self.cfg.epochs) if self.cfg.epochs is not None
                              else ("iters", old["iters"], self.cfg.iters))
        if self.total <= old_total:
            raise ValueError(f"{self.out} is planned for {n_old if n_old is not None else old_total} "
                             f"{unit if n_old is not None else 'steps'}; to extend it give more than that")
        # The schedule is a function of the run's length: recompute it for the new length, so the
        # remaining steps follow the longer run's schedule from this step on.
        was = self.optimizer.param_groups[0]["lr"]
        for group, base in zip(self.optimizer.param_groups, self.scheduler.base_lrs, strict=True):
            group["lr"] = base * lr_factor(self.step, self.total, self.cfg, self.depth)
        now = self.optimizer.param_groups[0]["lr"]
        self.notes.append(f"extending the run from {old_total:,} to {self.total:,} steps: the learning-rate "
                          f"schedule ({self.cfg.schedule}) is recomputed for the new length, so at step "
                          f"{self.step:,} it continues at lr {now:.4g} (the shorter plan had {was:.4g}); the "
                          "result is not the same as a run planned this long from the start")


    def _save_last(self) -> None:
        if self.dist.is_main:
            atomic_save(self._state(), self.out / "last.pt")
        self.saved_step = self.step

    def _save_on_stop(self) -> None:
        """The save that Ctrl-C asked for. A second Ctrl-C during it ends the run at once, with one
        line saying what ``last.pt`` holds (the save is atomic: the old file, or the new one)."""
        path = self.out / "last.pt"
        before = _inode(path) if self.dist.is_main else None
        try:
            self._save_last()
        except (KeyboardInterrupt, Exception) as e:
            if not _by_interrupt(e):
                raise
            written = self.dist.is_main and _inode(path) != before
            if written:
                held = f"{path} was written all the same (step {self.step:,})"
            elif self.saved_step is not None:
                held = f"{path} was not written: it still holds step {self.saved_step:,}"
            else:
                held = f"{path} was not written: this run has no checkpoint (start again in another --out)"
            if written or self.saved_step is not None:
                held += f"; continue with: cnnzoo train --resume {self.out}"
            raise KeyboardInterrupt(f"interrupted again while saving: {held}") from None

    def _eval_module(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.raw

    def _save_best(self, val_top1: float | None) -> None:
        if self.dist.is_main:
            atomic_save({**self._header("best"), "model": self._eval_module().state_dict(),
                         "epoch": self.epoch, "step": self.step, "val_top1": val_top1},
                        self.out / "best.pt")

    def _precise_bn(self) -> None:
        """BatchNorm statistics of the evaluated model, recomputed on ``precise_bn`` training batches.

        Running averages lag behind weights that move fast (short runs, high learning rates);
        a plain average over batches of the final weights does not. Randomness (augmentation,
        dropout) is drawn from forked generators, so training continues as without it.
        """
        c = self.cfg
        loader = self.bundle.loader("train", c.batch_size, train=True, device=self.device, seed=c.seed,
                                    epoch=self.epoch, channels_last=c.channels_last)
        batches = (x for x, _ in itertools.islice(loader, c.precise_bn))
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            with autocast(self.device.type, self.amp_dtype):
                recompute_bn_stats(self._eval_module(), batches)

    def _evaluate(self, split: str) -> EvalResult | None:
        if self.bundle.sizes.get(split, 0) == 0:
            return None
        loader = self.bundle.loader(split, EVAL_BATCH, train=False, device=self.device,
                                    channels_last=self.cfg.channels_last)
        return evaluate(self._eval_module(), loader, self.bundle.num_classes, self.amp_dtype)

    # -- the loop ----------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Train to the end (or to Ctrl-C: saved, then ``KeyboardInterrupt``); release the folder."""
        try:
            return self._run()
        finally:
            self.close()

    def _run(self) -> dict[str, Any]:
        cfg, is_main = self.cfg, self.dist.is_main
        rep = Reporter(self.out if is_main else None, enabled=is_main, purge_step=self.step or None)
        if is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            import yaml

            atomic_write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), self.out / "config.yaml")
            rewrite_csv(self.out / "metrics.csv", self.history)
            if self.step == 0:
                rep.line(self._header_line())
            else:
                rep.line(f"resuming {self.out} at step {self.step:,} of {self.total:,} "
                         f"(epoch {self.epoch + 1}, batch {self.batch})")
            for note in self.notes:
                rep.line(note)
        kill_at = int(os.environ.get("CNNZOO_KILL_AT_STEP", "-1"))
        try:
            with _StopFlag() as stop:
                while self.step < self.total:
                    self._train_epoch(rep, stop, kill_at)
                    if stop.stop:
                        self._save_on_stop()
                        rep.line(f"interrupted: saved {self.out / 'last.pt'} at step {self.step}; "
                                 f"continue with: cnnzoo train --resume {self.out}")
                        raise KeyboardInterrupt
            results = self._finish(rep)
        finally:
            rep.close()
        D.barrier()
        return results

    def _header_line(self) -> str:
        from cnnzoo.models._base import count_params

        cfg, b, ws = self.cfg, self.bundle, self.dist.world_size
        split = " / ".join(f"{b.sizes.get(k, 0):,} {k}" for k in ("train", "val", "test"))
        procs = f"{ws} processes" if ws > 1 else "1 process"
        return (f"training {cfg.model} ({count_params(self.raw) / 1e6:.2f}M parameters) on {cfg.data}: "
                f"{split} images of {'x'.join(map(str, b.input_size))}; {self.total:,} steps "
                f"({self.epochs} epochs of {self.steps_per_epoch}, batch {cfg.batch_size}), "
                f"recipe {cfg.recipe}; "
                f"{self.device}, {procs}, {torch.get_num_threads()} threads; writing {self.out}")

    def _train_epoch(self, rep: Reporter, stop: _StopFlag, kill_at: int) -> None:
        cfg, dist = self.cfg, self.dist
        loader = self.bundle.loader("train", cfg.batch_size, train=True, device=self.device, seed=cfg.seed,
                                    epoch=self.epoch, start_batch=self.batch, rank=dist.rank,
                                    world_size=dist.world_size, channels_last=cfg.channels_last)
        self.model.train()
        bar_total = min(self.steps_per_epoch, self.batch + self.total - self.step)
        rep.start_epoch(self.epoch, self.epochs, bar_total, self.batch)
        t0 = time.perf_counter()
        for b, (x, y) in enumerate(loader, start=self.batch):
            if self.step >= self.total:
                break
            if self.step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + self.step)
            xm, mix = mix_batch(x, y, cfg.mixup, cfg.cutmix, gen)
            with autocast(self.device.type, self.amp_dtype):
                out = self.model(xm)
            loss = compute_loss(out, y, self.criterion, cfg.aux_weight, mix)
            logits = logits_of(out)
            # One all-reduce per step: loss, correct, seen, and whether any rank was interrupted.
            stats = D.all_reduce_sum(torch.stack([
                loss.detach().float() * y.numel(), (logits.argmax(1) == y).sum().float(),
                torch.tensor(float(y.numel()), device=y.device),
                torch.tensor(float(stop.stop), device=y.device),
            ])).cpu()
            if not math.isfinite(stats[0].item()):
                last = self.out / "last.pt"
                kept = (f": the last good checkpoint is {last} (step {self.saved_step:,}); try"
                        if self.saved_step is not None else
                        ", and no checkpoint exists yet (the loss diverged before the first one): start "
                        f"again in another --out ({self.out} keeps this run's log) with")
                raise TrainingDiverged(
                    f"the loss became {stats[0].item()} at step {self.step + 1} (epoch {self.epoch + 1}); "
                    f"stopped without saving it{kept} a lower --lr or --clip-grad")
            self.scaler.scale(loss).backward()
            if cfg.clip_grad > 0:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.raw.parameters(), cfg.clip_grad)
            lr = self.optimizer.param_groups[0]["lr"]
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            self.scheduler.step()
            if self.ema is not None:
                self.ema.update(self.raw)
            self.step, self.batch = self.step + 1, b + 1
            for i in range(3):
                self.acc[i] += stats[i].item()
            if self.step % self.log_every == 0 or self.step == self.total:
                self.step_log.append({"step": self.step, "loss": stats[0].item() / stats[2].item(),
                                      "top1": stats[1].item() / stats[2].item(), "lr": lr})
            if not self._compiled_step_done:
                # torch.compile compiles during the first step: that time is not training throughput.
                now = time.perf_counter()
                self.seconds += now - t0
                self.epoch_untimed += int(stats[2].item())
                rep.line(f"torch.compile: the first step took {now - t0:.1f} s (compilation), "
                         "left out of images/s")
                t0, self._compiled_step_done = now, True
            elapsed = time.perf_counter() - t0
            rep.update(self.acc[0] / self.acc[2], self.acc[1] / self.acc[2],
                       self._images_per_s(self.epoch_train_seconds + elapsed))
            if self.step % 50 == 0:
                rep.scalars(self.step, {"train/loss": stats[0].item() / stats[2].item(),
                                        "train/lr": self.optimizer.param_groups[0]["lr"]})
            if stats[3].item() > 0:
                stop.stop = True
                break
            if (cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0
                    and self.batch < self.steps_per_epoch):
                t0 = self._tick(t0)
                self._save_last()
        self._tick(t0)
        rep.end_epoch()
        if not stop.stop:
            self._end_epoch(rep)

    def _images_per_s(self, seconds: float) -> float:
        return (self.acc[2] - self.epoch_untimed) / max(seconds, 1e-9)

    def _tick(self, t0: float) -> float:
        """Add the training time since ``t0`` to the epoch's and the run's; return now."""
        now = time.perf_counter()
        self.epoch_train_seconds += now - t0
        self.seconds += now - t0
        return now

    def _end_epoch(self, rep: Reporter) -> None:
        t0 = time.perf_counter()
        if self.cfg.precise_bn and self.dist.is_main:
            self._precise_bn()
        val = self._evaluate("val") if self.dist.is_main else None
        D.barrier()
        self.seconds += time.perf_counter() - t0
        row = {"epoch": self.epoch + 1, "step": self.step, "lr": self.optimizer.param_groups[0]["lr"],
               "train_loss": self.acc[0] / self.acc[2], "train_top1": self.acc[1] / self.acc[2],
               "val_loss": val.loss if val else None, "val_top1": val.top1 if val else None,
               "val_top5": val.top5 if val else None,
               "images_per_s": self._images_per_s(self.epoch_train_seconds), "seconds": self.seconds}
        self.history.append(row)
        rep.epoch_row(row)
        # Best: highest validation top-1; on a tie (frequent on small validation sets, where top-1
        # moves in coarse steps), the lower validation loss.
        improved = val is not None and (self.best_val is None or val.top1 > self.best_val or (
            val.top1 == self.best_val and self.best_val_loss is not None and val.loss < self.best_val_loss))
        if improved:
            self.best_val, self.best_val_loss = val.top1, val.loss
        self.epoch, self.batch = self.epoch + 1, 0
        self.acc, self.epoch_train_seconds, self.epoch_untimed = [0.0, 0.0, 0.0], 0.0, 0
        if improved or (self.bundle.sizes.get("val", 0) == 0 and self.step >= self.total):
            self._save_best(self.best_val)
        self._save_last()

    def _finish(self, rep: Reporter) -> dict[str, Any]:
        if not self.dist.is_main:
            return {}
        cfg = self.cfg
        best = load_checkpoint(self.out / "best.pt", map_location=self.device)
        model = copy.deepcopy(self._eval_module())
        model.load_state_dict(best["model"])
        loader = self.bundle.loader("test", EVAL_BATCH, train=False, device=self.device,
                                    channels_last=cfg.channels_last)
        test = (evaluate(model, loader, self.bundle.num_classes, self.amp_dtype)
                if self.bundle.sizes.get("test", 0) else None)
        params, macs = _measure(model, self.bundle.input_size)
        ips = [r["images_per_s"] for r in self.history]
        results = {
            "model": cfg.model, "model_opts": cfg.model_opts, "data": cfg.data,
            "val_top1": self.best_val, "best_epoch": best["epoch"],
            "test_top1": test.top1 if test else None, "test_top5": test.top5 if test else None,
            "test_loss": test.loss if test else None,
            "test_per_class": (dict(zip(self.bundle.class_names, test.per_class, strict=True))
                               if test else None),
            "params": params, "macs": macs, "epochs": len(self.history), "iters": self.step,
            "seconds": round(self.seconds, 3), "images_per_s": sum(ips) / len(ips) if ips else None,
            "seed": cfg.seed, "data_sizes": dict(self.bundle.sizes), "config": cfg.to_dict(),
            "versions": versions(), "hardware": hardware(self.device, self.dist.world_size),
        }
        atomic_write_json(results, self.out / "results.json")
        plot_curves(self.history, self.out / "curves.png", f"{cfg.model} on {data_label(cfg.data)}",
                    steps=self.step_log, note=_loss_note(cfg))
        if test:
            rep.line(f"done in {self.seconds:.1f} s: best val top1 "
                     f"{'n/a' if self.best_val is None else f'{self.best_val:.2%}'} (epoch {best['epoch']}), "
                     f"test top1 {test.top1:.2%}, top5 {test.top5:.2%}; "
                     f"results in {self.out / 'results.json'}")
        return results


def train(cfg: TrainConfig | None = None, *, bundle=None, model: nn.Module | None = None,
          resume: str | os.PathLike | None = None, epochs: int | None = None,
          iters: int | None = None, allow_data_change: bool = False) -> dict[str, Any]:
    """Run (or, with ``resume=DIR``, continue) a training run; return ``results.json``'s content.

    When resuming, the run's saved config is used; a ``cfg`` naming another model or other
    model options raises ``ValueError`` naming the difference. ``epochs`` or ``iters`` with
    ``resume`` make the run longer than planned (a finished run continues): the learning-rate
    schedule is recomputed for the new length from the current step on.
    """
    if (epochs is not None or iters is not None) and resume is None:
        raise ValueError("epochs= and iters= here extend a resumed run; for a new run set them in the config")
    if resume is not None:
        path = Path(resume) / "last.pt"
        saved = TrainConfig.from_dict(load_checkpoint(path)["config"])
        if cfg is not None and cfg.model is not None:
            check_compatible(saved.to_dict(), cfg.model, cfg.model_opts, str(path))
        if epochs is not None and iters is not None:
            raise ValueError("give either epochs or iters, not both")
        if epochs is not None or iters is not None:
            unit, n = ("epochs", epochs) if epochs is not None else ("iters", iters)
            if getattr(saved, unit) is not None and n <= getattr(saved, unit):
                raise ValueError(f"{resume} is planned for {getattr(saved, unit)} {unit}; to extend it give "
                                 "more than that")
            saved.epochs, saved.iters = epochs, iters
            validate(saved)
        cfg = saved
    if cfg is None:
        raise ValueError("train() needs a config or resume=DIR")
    try:
        return Trainer(cfg, bundle=bundle, model=model, resume=resume,
                       allow_data_change=allow_data_change).run()
    finally:
        D.teardown()
