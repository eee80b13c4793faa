"""What a run shows and writes: progress bar, epoch lines, CSV, TensorBoard, curves PNG.

Only rank 0 reports. On a terminal a rich progress bar per epoch shows loss, accuracy,
images/s and ETA; in a pipe (or a log file) only one summary line per epoch is printed.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Any

EPOCH_FIELDS = ("epoch", "step", "lr", "train_loss", "train_top1", "val_loss", "val_top1", "val_top5",
                "images_per_s", "seconds")


class Reporter:
    """Progress, logs and curves of one run (a silent no-op on ranks other than 0)."""

    def __init__(self, out: Path | None, enabled: bool = True, progress: bool | None = None,
                 tensorboard: bool = True, purge_step: int | None = None):
        self.enabled = enabled and out is not None
        self.out = out
        self.progress_enabled = self.enabled and (sys.stderr.isatty() if progress is None else progress)
        self._progress = None
        self._task = None
        self._tb = None
        if self.enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(out / "tb"), purge_step=purge_step)
            except ImportError:  # tensorboard is a dependency, but keep training if it is broken
                self._tb = None

    # -- live progress -----------------------------------------------------------------------
    def start_epoch(self, epoch: int, epochs: int, total_batches: int, done: int = 0) -> None:
        if not self.progress_enabled:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        if self._progress is None:
            self._progress = Progress(
                TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[stats]}"),
                TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                transient=True, refresh_per_second=4)
            self._progress.start()
        self._task = self._progress.add_task("train", total=total_batches, completed=done,
                                             epoch=f"{epoch + 1}/{epochs}", stats=_bar_stats())

    def update(self, loss: float, acc: float, ips: float) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, advance=1, stats=_bar_stats(loss, acc, ips))

    def end_epoch(self) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.remove_task(self._task)
            self._task = None

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    # -- logs --------------------------------------------------------------------------------
    def line(self, text: str) -> None:
        if not self.enabled:
            return
        if self._progress is not None:
            self._progress.console.print(text, highlight=False)
        else:
            print(text, flush=True)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if self._tb is not None:
            for k, v in values.items():
                if v is not None:
                    self._tb.add_scalar(k, v, step)

    def epoch_row(self, row: dict[str, Any]) -> None:
        """Append one epoch to ``metrics.csv``, TensorBoard and the terminal."""
        if not self.enabled:
            return
        path = self.out / "metrics.csv"
        new = not path.exists()
        with open(path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=EPOCH_FIELDS)
            if new:
                w.writeheader()
            w.writerow({k: row.get(k) for k in EPOCH_FIELDS})
        self.scalars(row["step"], {f"epoch/{k}": row.get(k) for k in EPOCH_FIELDS[2:]})
        val = ("" if row.get("val_top1") is None else
               f"  val loss {row['val_loss']:.4f}  val top1 {row['val_top1']:.2%}")
        self.line(f"epoch {row['epoch']:>3}  step {row['step']:>6}  lr {row['lr']:.4g}  "
                  f"loss {row['train_loss']:.4f}  top1 {row['train_top1']:.2%}{val}  "
                  f"{row['images_per_s']:.0f} img/s  {row['seconds']:.1f} s")


def _bar_stats(loss: float | None = None, acc: float | None = None, ips: float | None = None) -> str:
    """The progress bar's numbers; ``--`` until the epoch's first step has given any."""
    if loss is None:
        return "loss --  acc --  -- img/s"
    return f"loss {loss:.3f}  acc {acc:.1%}  {ips:.0f} img/s"


def rewrite_csv(path: Path, history: list[dict[str, Any]]) -> None:
    """``metrics.csv`` from the checkpointed history (after a resume drops unsaved rows)."""
    import io

    from .checkpoint import atomic_write_text

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=EPOCH_FIELDS, lineterminator="\n")
    w.writeheader()
    for row in history:
        w.writerow({k: row.get(k) for k in EPOCH_FIELDS})
    atomic_write_text(buf.getvalue(), path)


def _log_ticks(ax) -> None:
    """Plain numbers on a log y axis (``0.3``, not ``3x10^-1``); minor ticks labelled only
    when the axis spans less than about a decade and a half (else only 2 and 5)."""
    import math

    from matplotlib.ticker import FuncFormatter

    lo, hi = ax.get_ylim()
    narrow = lo > 0 and math.log10(hi / lo) < 1.5
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(
        lambda v, _: f"{v:g}" if narrow or f"{v:.0e}"[0] in "25" else ""))
    ax.tick_params(axis="y", which="both", labelsize=8)


def plot_curves(history: list[dict[str, Any]], path: Path, title: str = "",
                steps: list[dict[str, float]] | None = None, note: str = ""):
    """Loss, top-1 accuracy and learning rate of a run, as one PNG; returns the (closed) figure.

    ``history`` holds the epoch rows (:data:`EPOCH_FIELDS`; ``val_*`` may be ``None``).
    ``steps`` optionally holds ``{"step", "loss", "top1", "lr"}`` dicts logged every few
    optimizer steps (the loss and top-1 of that step's training batch). A run of one or two
    epochs with ``steps`` is drawn per optimizer step, so it is a curve and not one or two
    dots; longer runs are drawn per epoch (the learning rate still follows ``steps`` when
    given, placed at fractional epochs). The epoch with the best validation top-1 is marked;
    ``note`` (e.g. why training loss stays above validation loss) is printed under the panels.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    from .checkpoint import atomic_write

    steps = [s for s in (steps or []) if s.get("step") is not None]
    per_step = bool(steps) and len(history) <= 2
    vals = [r for r in history if r.get("val_top1") is not None]
    xkey = "step" if per_step else "epoch"

    def at_epoch(step_values):  # optimizer step -> fractional epoch, through the epoch ends
        ends = [(0, 0)] + [(r["step"], r["epoch"]) for r in history]
        return np.interp(step_values, [s for s, _ in ends], [e for _, e in ends])

    fig, (a_loss, a_acc, a_lr) = plt.subplots(1, 3, figsize=(13, 4.2),
                                              gridspec_kw={"width_ratios": [1, 1, 0.75]})
    blue, orange = "tab:blue", "tab:orange"
    if per_step:
        xs = [s["step"] for s in steps]
        a_loss.plot(xs, [s["loss"] for s in steps], "-", color=blue, lw=1.2, label="train (per batch)")
        a_acc.plot(xs, [100 * s["top1"] for s in steps], "-", color=blue, lw=1.2, label="train (per batch)")
        for r in history[:-1]:  # epoch boundaries
            for a in (a_loss, a_acc, a_lr):
                a.axvline(r["step"], color="lightgrey", ls="--", lw=1, zorder=0)
    else:
        ep = [r["epoch"] for r in history]
        a_loss.plot(ep, [r["train_loss"] for r in history], "o-", color=blue, ms=4, label="train")
        a_acc.plot(ep, [100 * r["train_top1"] for r in history], "o-", color=blue, ms=4, label="train")
    if vals:
        vx = [r[xkey] for r in vals]
        vlabel = "validation (epoch ends)" if per_step else "validation"
        a_loss.plot(vx, [r["val_loss"] for r in vals], "s-", color=orange, ms=5, label=vlabel)
        a_acc.plot(vx, [100 * r["val_top1"] for r in vals], "s-", color=orange, ms=5, label=vlabel)
        best = max(vals, key=lambda r: r["val_top1"])  # the first of equal bests, as the engine keeps
        label = f"best: epoch {best['epoch']}, {best['val_top1']:.2%}"
        for a in (a_loss, a_acc):
            a.axvline(best[xkey], color="grey", ls=":", lw=1, zorder=0)
        a_acc.plot(best[xkey], 100 * best["val_top1"], "*", color="crimson", ms=14, mec="black",
                   mew=0.6, zorder=4, label=label)

    if steps:
        lx = [s["step"] for s in steps] if per_step else at_epoch([s["step"] for s in steps])
        a_lr.plot(lx, [s["lr"] for s in steps], "-", color="tab:green", lw=1.2)
    else:
        a_lr.plot([r[xkey] for r in history], [r["lr"] for r in history], "o-", color="tab:green", ms=4)
    a_lr.set_ylim(bottom=0)
    a_lr.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))

    a_loss.set_yscale("log")
    _log_ticks(a_loss)
    a_loss.set_title("loss (log scale)", fontsize=10)
    a_acc.set_title("top-1 accuracy (%)", fontsize=10)
    a_lr.set_title("learning rate", fontsize=10)
    xlabel = "optimizer step" if per_step else "epoch"
    for a in (a_loss, a_acc, a_lr):
        a.set_xlabel(xlabel)
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
        if not per_step and history and history[-1]["epoch"] - history[0]["epoch"] < 2:
            a.set_xlim(history[0]["epoch"] - 0.5, history[-1]["epoch"] + 0.5)  # whole-epoch ticks
        a.grid(alpha=0.3)
    for a in (a_loss, a_acc):
        if a.get_legend_handles_labels()[0]:
            a.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.05 if note else 0, 1, 1))
    if note:
        fig.text(0.5, 0.012, note, ha="center", va="bottom", fontsize=8, style="italic", color="dimgray",
                 wrap=True)
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
    return fig
