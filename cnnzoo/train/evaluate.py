"""Evaluation: top-1, top-5, per-class accuracy and the confusion matrix of a model on a split.

:func:`evaluate` runs a model over a loader. :func:`evaluate_checkpoint` rebuilds a finished
run's model from its checkpoint (``RUN_DIR/best.pt`` or any ``.pt`` written by the engine) and
evaluates it on the run's data, so evaluating a run reproduces the test accuracy in its
``results.json``. Under torchrun, the engine evaluates on rank 0 only (the others wait).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class EvalResult:
    loss: float
    top1: float
    top5: float
    per_class: list[float | None]
    confusion: torch.Tensor  # [true, predicted] counts
    n: int

    def to_dict(self, class_names: list[str] | None = None) -> dict[str, Any]:
        names = class_names or [str(i) for i in range(len(self.per_class))]
        return {"top1": self.top1, "top5": self.top5, "loss": self.loss, "n": self.n,
                "per_class": dict(zip(names, self.per_class, strict=True)),
                "confusion": self.confusion.tolist()}


AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}  # config ``amp`` -> autocast dtype


def autocast(device_type: str, amp_dtype: torch.dtype | None):
    """``torch.autocast`` to ``amp_dtype`` on ``device_type``; disabled when it is ``None``."""
    return torch.autocast(device_type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None)


def logits_of(output) -> torch.Tensor:
    """The main logits of a model's output (a tuple's first element: GoogLeNet's aux heads)."""
    return output[0] if isinstance(output, (tuple, list)) else output


# Test-time augmentation: the views of each image whose predicted probabilities are averaged.
# "flip" adds the horizontal mirror, which every cnnzoo training run sees as an augmentation.
TTA_MODES = ("none", "flip")


def check_tta(tta: str) -> None:
    if tta not in TTA_MODES:
        raise ValueError(f"tta={tta!r} is not allowed; choose {' or '.join(TTA_MODES)}")


def eval_logits(model: nn.Module, x: torch.Tensor, amp_dtype: torch.dtype | None = None, tta: str = "none"
            ) -> torch.Tensor:
    """fp32 logits of ``model`` on ``x``; with ``tta="flip"``, the log of the mean of the softmax
    probabilities of ``x`` and its horizontal mirror (log-probabilities are logits too: top-k and
    cross-entropy read them as they read the model's own)."""
    check_tta(tta)
    with autocast(x.device.type, amp_dtype):
        logits = logits_of(model(x)).float()
        if tta == "none":
            return logits
        mirrored = logits_of(model(x.flip(-1))).float()
    views = torch.stack([logits.log_softmax(1), mirrored.log_softmax(1)])
    return torch.logsumexp(views, 0) - math.log(len(views))


@torch.no_grad()
def evaluate(model: nn.Module, loader, num_classes: int, amp_dtype: torch.dtype | None = None,
             tta: str = "none") -> EvalResult:
    """Accuracy of ``model`` (put in eval mode, restored afterwards) over every batch of ``loader``,
    with test-time augmentation ``tta`` (see :func:`eval_logits`)."""
    check_tta(tta)
    was_training = model.training
    model.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    loss_sum, top5_hits, n = 0.0, 0, 0
    k = min(5, num_classes)
    try:
        for x, y in loader:
            logits = eval_logits(model, x, amp_dtype, tta)
            loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
            pred = logits.argmax(1)
            top5_hits += (logits.topk(k, 1).indices == y[:, None]).any(1).sum().item()
            confusion += torch.bincount((y * num_classes + pred).cpu(),
                                        minlength=num_classes ** 2).view(num_classes, num_classes)
            n += y.numel()
    finally:
        model.train(was_training)
    if n == 0:
        raise ValueError("the evaluation split is empty")
    support = confusion.sum(1)
    per_class = [(confusion[i, i] / support[i]).item() if support[i] else None  # None: no image
                 for i in range(num_classes)]
    return EvalResult(loss=loss_sum / n, top1=confusion.diag().sum().item() / n, top5=top5_hits / n,
                      per_class=per_class, confusion=confusion, n=n)


def plot_confusion(confusion: torch.Tensor, class_names: list[str], path: str | Path,
                   title: str = ""):
    """A confusion-matrix PNG (rows: true class, columns: predicted), row-normalized colours
    with a colour bar; returns the (closed) figure.

    The title is wrapped to the figure's width (a long data path breaks across lines), and its
    font shrinks when it would need more than three lines.
    """
    import re

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .checkpoint import atomic_write

    c = confusion.double()
    frac = c / c.sum(1, keepdim=True).clamp_min(1)
    n = len(class_names)
    size = max(4.0, min(0.45 * n + 2, 20.0))
    fig, ax = plt.subplots(figsize=(size + 1.0, size))  # + 1 inch for the colour bar
    im = ax.imshow(frac.numpy(), cmap="Blues", vmin=0, vmax=1)
    bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    bar.set_label("fraction of the true class", fontsize=9)
    bar.ax.tick_params(labelsize=8)
    if n <= 20:
        ax.set_xticks(range(n), class_names, rotation=90)
        ax.set_yticks(range(n), class_names)
        for i in range(n):
            for j in range(n):
                if confusion[i, j]:
                    ax.text(j, i, int(confusion[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if frac[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")

    def wrap(text: str, fontsize: float) -> list[str]:
        # About 0.6 em per character: lines as wide as the figure, broken at spaces or after
        # a "/" of a path (a longer piece is cut where it must be).
        width = max(10, int((size + 0.6) * 72 / (0.6 * fontsize)))
        lines, line = [], ""
        for piece in re.split(r"(?<=/)|(?= )", text):
            if line and len(line) + len(piece) > width:
                lines.append(line.rstrip())
                line = piece.lstrip()
            else:
                line += piece
            while len(line) > width:
                lines.append(line[:width])
                line = line[width:]
        return lines + [line.rstrip()] if line.strip() else lines

    fontsize = 10.0 if len(wrap(title, 10.0)) <= 3 else 8.0
    fig.suptitle("\n".join(wrap(title, fontsize)), fontsize=fontsize)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
    return fig


def name_list(names: list[str]) -> str:
    """Class names for a one-line message: all of up to ten, else the first five and the count."""
    return ", ".join(names) if len(names) <= 10 else f"{', '.join(names[:5])}, ... ({len(names)} names)"


def resolve_checkpoint(path: str | Path) -> Path:
    """A run folder means its ``best.pt``; a file is used as is."""
    p = Path(path)
    if p.is_dir():
        if (p / "best.pt").is_file():
            return p / "best.pt"
        if (p / "last.pt").is_file():
            return p / "last.pt"
        raise ValueError(f"{p} holds no best.pt or last.pt: is it a cnnzoo training run folder?")
    if not p.exists():
        raise ValueError(f"{p} does not exist: give a run folder or a checkpoint file")
    return p


def _evaluate_weights_file(path: Path, data: str | None, split: str, data_dir: str | None, device: str,
                           batch_size: int, cache_dir: str | None, fast: bool, tta: str
                           ) -> tuple[EvalResult, dict[str, Any], list[str]]:
    """A :func:`cnnzoo.save_weights` file knows its model, not its data: ``data`` is required; the
    images are prepared as cnnzoo's training prepares them (the data's own mean/std, native size)."""
    import cnnzoo
    from cnnzoo.data import load_data

    if data is None:
        raise ValueError(f"{path} holds a model's weights but not the data it was trained on: give the data "
                         "to evaluate on (--data, or data=)")
    bundle = load_data(data, data_dir=data_dir or "./data", download=False, cache_dir=cache_dir)
    if bundle.sizes.get(split, 0) == 0:
        raise ValueError(f"the {split} split of {data} is empty")
    model = cnnzoo.create_model(str(path))
    if getattr(model, "num_classes", bundle.num_classes) != bundle.num_classes:
        raise ValueError(f"{path} has a classifier for {model.num_classes} classes, but {data} has "
                         f"{bundle.num_classes}")
    cfg = {"model": model.meta.name, "model_opts": dict(getattr(model, "model_opts", {})), "data": data}
    return _evaluate_model(model, bundle, split, device, batch_size, None, False, fast, tta), cfg, list(
        bundle.class_names)


def _evaluate_model(model: nn.Module, bundle, split: str, device: str, batch_size: int,
                    amp: torch.dtype | None, channels_last: bool, fast: bool, tta: str) -> EvalResult:
    """``model`` on ``split`` of ``bundle``, as trained (``amp``, ``channels_last``) or through the
    inference fast path (``fast``: weights already in the AMP dtype, so no autocast)."""
    from .distributed import resolve_device

    dev = resolve_device(device)
    model = model.to(dev)
    if fast:
        from cnnzoo.optimize import for_inference

        model, amp, channels_last = for_inference(model, dtype=amp), None, True
    elif channels_last:
        model.to(memory_format=torch.channels_last)
    loader = bundle.loader(split, batch_size, train=False, device=dev, channels_last=channels_last)
    return evaluate(model, loader, bundle.num_classes, amp, tta)


def evaluate_checkpoint(path: str | Path, data: str | None = None, split: str = "test",
                        data_dir: str | None = None, device: str = "auto", batch_size: int = 256,
                        cache_dir: str | None = None, allow_other_classes: bool = False, fast: bool = False,
                        tta: str = "none") -> tuple[EvalResult, dict[str, Any], list[str]]:
    """Evaluate a run folder or checkpoint on ``split`` of its data (or of ``data``), or a
    :func:`cnnzoo.save_weights` file on ``split`` of ``data`` (required then).

    Returns the result, the run's config and the class names. The split (train/val/test) is
    reproduced from the run's own data settings (validation size, seed, image size, subset).
    ``data`` whose class names differ from the run's raises ``ValueError``; with
    ``allow_other_classes`` it is evaluated, with a warning (the result carries ``data``'s names).
    ``fast`` evaluates through :func:`cnnzoo.optimize.for_inference` (BN folded, channels-last;
    bf16 weights when the run trained with ``amp="bf16"``). ``tta="flip"`` averages each image's
    predicted probabilities with its mirror's (see :func:`eval_logits`).
    """
    from cnnzoo.data import load_data
    from cnnzoo.weights import sniff_format

    from .checkpoint import load_checkpoint, model_from_checkpoint

    if split not in ("test", "val", "train"):
        raise ValueError(f"split={split!r} is not allowed; choose test, val or train")
    check_tta(tta)
    ckpt_path = resolve_checkpoint(path)
    if ckpt_path.is_file() and sniff_format(ckpt_path) == "safetensors":
        return _evaluate_weights_file(ckpt_path, data, split, data_dir, device, batch_size, cache_dir, fast,
                                      tta)
    ckpt = load_checkpoint(ckpt_path)
    cfg = ckpt["config"]
    bundle = load_data(data or cfg["data"], data_dir=data_dir or cfg["data_dir"], download=False,
                       val_size=cfg["val_size"], seed=cfg["seed"], image_size=cfg["image_size"],
                       subset=cfg["subset"], cache_dir=cache_dir or cfg["cache_dir"])
    if bundle.num_classes != ckpt["num_classes"] or tuple(bundle.input_size) != tuple(ckpt["input_size"]):
        raise ValueError(f"{ckpt_path} was trained for {ckpt['num_classes']} classes at input "
                         f"{tuple(ckpt['input_size'])}, but {data or cfg['data']} has {bundle.num_classes} "
                         f"classes at {tuple(bundle.input_size)}")
    saved, names = list(ckpt.get("class_names") or []), list(bundle.class_names)
    if saved and saved != names:
        what = (f"{ckpt_path} was trained on class names {name_list(saved)}, but {data or cfg['data']} has "
                f"{name_list(names)}")
        if not allow_other_classes:
            raise ValueError(f"{what}; evaluate anyway with --allow-other-classes (the rows then carry the "
                             "new names)")
        warnings.warn(f"{what}: the rows carry the new names", stacklevel=2)
    if bundle.sizes.get(split, 0) == 0:
        raise ValueError(f"the {split} split of {data or cfg['data']} is empty")
    model = model_from_checkpoint(ckpt, str(ckpt_path))
    result = _evaluate_model(model, bundle, split, device, batch_size, AMP_DTYPES.get(cfg.get("amp", "none")),
                             bool(cfg.get("channels_last")), fast, tta)
    return result, cfg, list(bundle.class_names)
