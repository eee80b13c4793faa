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
                TextColumn("loss {task.fields[loss]:.3f}  acc {task.fields[acc]:.1%}  "
                           "{task.fields[ips]:.0f} img/s"),
                TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                transient=True, refresh_per_second=4)
            self._progress.start()
        self._task = self._progress.add_task("train", total=total_batches, completed=done,
                                             epoch=f"{epoch + 1}/{epochs}", loss=float("nan"),
                                             acc=0.0, ips=0.0)

    def update(self, loss: float, acc: float, ips: float) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, advance=1, loss=loss, acc=acc, ips=ips)

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


def plot_curves(history: list[dict[str, Any]], path: Path, title: str = "") -> None:
    """Training and validation loss and top-1 per epoch, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .checkpoint import atomic_write

    ep = [r["epoch"] for r in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    a1.plot(ep, [r["train_loss"] for r in history], "o-", label="train")
    a2.plot(ep, [100 * r["train_top1"] for r in history], "o-", label="train")
    if any(r.get("val_top1") is not None for r in history):
        vals = [r for r in history if r.get("val_top1") is not None]
        a1.plot([r["epoch"] for r in vals], [r["val_loss"] for r in vals], "s-", label="validation")
        a2.plot([r["epoch"] for r in vals], [100 * r["val_top1"] for r in vals], "s-", label="validation")
    a1.set_ylabel("loss (log scale)")
    a1.set_yscale("log")
    a2.set_ylabel("top-1 accuracy (%)")
    for a in (a1, a2):
        a.set_xlabel("epoch")
        a.grid(alpha=0.3)
        a.legend()
    fig.suptitle(title)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
