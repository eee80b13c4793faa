"""Pictures and progress of a run: curves.png, the confusion matrix, the cost map's legend, the bar.

Structure assertions (panels, axis labels, what each line holds, where text lies), never pixels.
"""

from __future__ import annotations

import math

import pytest
import torch

from cnnzoo.train.evaluate import plot_confusion
from cnnzoo.train.report import Reporter, plot_curves

PNG = b"\x89PNG"


def history(epochs: int, steps_per_epoch: int = 10, val: bool = True, best: int | None = None):
    """Epoch rows shaped like the engine's; validation top-1 peaks at epoch ``best`` (default: last)."""
    best = best or epochs
    return [{"epoch": e, "step": e * steps_per_epoch, "lr": 0.1 * (1 - e / epochs),
             "train_loss": 2.3 / e, "train_top1": 0.1 * e,
             "val_loss": 2.0 / e if val else None,
             "val_top1": (0.9 - 0.1 * abs(e - best)) if val else None, "val_top5": None,
             "images_per_s": 300.0, "seconds": 4.0 * e} for e in range(1, epochs + 1)]


def steps(n: int, every: int = 1):
    return [{"step": s, "loss": 2.3 - 0.01 * s, "top1": 0.1 + 0.005 * s, "lr": 0.2 * (1 - s / n)}
            for s in range(every, n + 1, every)]


def labels(ax) -> list[str]:
    return ax.get_legend_handles_labels()[1]


def renderer(fig):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    r = FigureCanvasAgg(fig).get_renderer()
    fig.draw(r)
    return r


def test_one_epoch_with_steps_is_drawn_per_optimizer_step(tmp_path):
    s = steps(10)
    fig = plot_curves(history(1), tmp_path / "c.png", "resnet20 on digits", steps=s)
    assert (tmp_path / "c.png").read_bytes()[:4] == PNG
    loss, acc, lr = fig.axes
    assert [a.get_xlabel() for a in fig.axes] == ["optimizer step"] * 3
    assert loss.get_yscale() == "log"
    train = loss.get_lines()[0]
    assert list(train.get_xdata()) == [r["step"] for r in s]   # a curve, not one dot
    assert list(lr.get_lines()[0].get_ydata()) == [r["lr"] for r in s]
    assert any(lbl.startswith("best: epoch 1") for lbl in labels(acc))


def test_long_run_is_drawn_per_epoch_with_the_lr_at_fractional_epochs(tmp_path):
    fig = plot_curves(history(4), tmp_path / "c.png", steps=steps(40, every=5))
    loss, acc, lr = fig.axes
    assert [a.get_xlabel() for a in fig.axes] == ["epoch"] * 3
    assert list(loss.get_lines()[0].get_xdata()) == [1, 2, 3, 4]
    x = list(lr.get_lines()[0].get_xdata())
    assert x[0] == pytest.approx(0.5) and x[-1] == pytest.approx(4.0)  # step 5 of 10 per epoch


def test_best_epoch_is_the_highest_validation_top1(tmp_path):
    fig = plot_curves(history(5, best=2), tmp_path / "c.png")
    best = [lbl for lbl in labels(fig.axes[1]) if lbl.startswith("best")]
    assert best == ["best: epoch 2, 90.00%"]


def test_history_without_validation_has_no_validation_line_or_best_marker(tmp_path):
    fig = plot_curves(history(1, val=False), tmp_path / "c.png", steps=steps(10))
    assert (tmp_path / "c.png").read_bytes()[:4] == PNG
    for ax in fig.axes[:2]:
        assert labels(ax) == ["train (per batch)"]


def test_the_note_is_drawn_when_given(tmp_path):
    note = "label smoothing 0.1 and mixup keep training loss above validation loss"
    with_note = plot_curves(history(2), tmp_path / "a.png", "t", steps=steps(20), note=note)
    r = renderer(with_note)
    texts = [t for t in with_note.texts if t.get_text() == note]
    assert len(texts) == 1 and with_note.bbox.contains(*texts[0].get_window_extent(r).min)
    without = plot_curves(history(2), tmp_path / "b.png", "t", steps=steps(20))
    assert [t.get_text() for t in without.texts if t.get_text()] == ["t"]  # the title only


def test_old_three_argument_call_draws_whole_epochs(tmp_path):
    fig = plot_curves(history(2), tmp_path / "c.png", "resnet20 on digits")  # as the engine calls it
    assert (tmp_path / "c.png").read_bytes()[:4] == PNG
    for ax in fig.axes:
        assert ax.get_xlabel() == "epoch"
        lo, hi = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
        assert ticks == [1, 2]


def test_progress_bar_shows_dashes_until_the_first_step(tmp_path):
    rep = Reporter(tmp_path, progress=True, tensorboard=False)
    try:
        rep.start_epoch(0, 2, 10)
        task = rep._progress.tasks[0]

        def shown() -> str:
            return " ".join(str(c.render(task)) for c in rep._progress.columns
                            if type(c).__name__ == "TextColumn")

        assert "nan" not in shown() and "loss --" in shown()
        rep.update(2.31, 0.125, 250.0)
        assert "loss 2.310  acc 12.5%  250 img/s" in shown()
    finally:
        rep.close()


@pytest.mark.parametrize("names, title", [
    (["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
     "resnet20 on imagefolder:/long/path/cifar10 (test): top-1 91.23%"),
    (["cat", "dog"],
     "resnet20 on imagefolder:/home/someone/datasets/kaggle/cats-vs-dogs/small-version (test): top-1 91.23%"),
])
def test_confusion_has_a_colour_bar_and_a_title_inside_the_figure(tmp_path, names, title):
    n = len(names)
    confusion = torch.eye(n, dtype=torch.int64) * 30 + torch.ones(n, n, dtype=torch.int64)
    fig = plot_confusion(confusion, names, tmp_path / "m.png", title)
    assert (tmp_path / "m.png").read_bytes()[:4] == PNG
    assert len(fig.axes) == 2 and fig.axes[0].images[0].colorbar is not None
    r = renderer(fig)
    box = fig._suptitle.get_window_extent(r)
    assert fig._suptitle.get_text().replace("\n", "") == title   # wrapped, nothing dropped
    assert fig.bbox.x0 <= box.x0 and box.x1 <= fig.bbox.x1 and box.y1 <= fig.bbox.y1


def test_cost_map_size_legend_markers_do_not_overlap(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    import cnnzoo
    from cnnzoo.analysis import plot as cost_plot
    from cnnzoo.analysis.profile import profile

    figures = []
    close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig=None: (figures.append(fig), close(fig)))
    results = []
    for name in ("resnet20", "resnet56", "resnet110"):
        with torch.device("meta"):
            results.append(profile(cnnzoo.create_model(name), (3, 32, 32), name=name))
    cost_plot.plot_cost(results, tmp_path / "cost.png", ["resnet"] * 3)
    fig = figures[0]
    r = renderer(fig)
    legend = fig.axes[0].get_legend()  # the receptive-field one (the family legend is an artist)
    assert legend.get_title().get_text() == "receptive field"
    circles = []
    for h in legend.legend_handles:
        (x, y), = h.get_offset_transform().transform(h.get_offsets())
        circles.append((x, y, math.sqrt(h.get_sizes()[0]) / 2 * fig.dpi / 72))
    for (x1, y1, r1), (x2, y2, r2) in zip(circles, circles[1:], strict=False):
        assert math.dist((x1, y1), (x2, y2)) > r1 + r2
    frame = legend.get_frame().get_window_extent(r)
    title = legend.get_title().get_window_extent(r)
    for (x, y, rad), text in zip(circles, legend.get_texts(), strict=True):
        assert x + rad < text.get_window_extent(r).x0
        assert frame.y0 < y - rad and y + rad < title.y0
