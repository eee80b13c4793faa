"""The cost map: parameters against multiply-adds, one labelled point per model."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from .profile import ProfileResult


def _place_labels(fig, ax, results, sizes, areas) -> None:
    """Label every point beside its marker, trying positions around it until the label
    overlaps no marker and no earlier label."""
    from matplotlib.transforms import Bbox

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    px_per_pt = fig.dpi / 72
    centers = [ax.transData.transform((r.params / 1e6, r.macs / 1e9)) for r in results]
    radii = [math.sqrt(a) / 2 for a in areas]  # marker radius in points
    obstacles = [Bbox.from_bounds(cx - rad * px_per_pt, cy - rad * px_per_pt, 2 * rad * px_per_pt,
                                  2 * rad * px_per_pt) for (cx, cy), rad in zip(centers, radii, strict=True)]
    directions = [(1, 1, "left", "bottom"), (1, -1, "left", "top"), (-1, 1, "right", "bottom"),
                  (-1, -1, "right", "top"), (0, 1.3, "center", "bottom"), (0, -1.3, "center", "top"),
                  (1.3, 0, "left", "center"), (-1.3, 0, "right", "center")]
    order = sorted(range(len(results)), key=lambda i: (-results[i].macs, results[i].params))
    placed = []
    for i in order:
        r = results[i]
        label = (r.name or "?") + (f" ({r.input_size[1]}px)" if len(sizes) > 1 else "")
        xy = (r.params / 1e6, r.macs / 1e9)
        others = [b for j, b in enumerate(obstacles) if j != i] + placed
        best = None
        for reach in (0.75, 1.3):
            for ux, uy, ha, va in directions:
                d = radii[i] * reach + 2
                text = ax.annotate(label, xy, xytext=(ux * d, uy * d), textcoords="offset points",
                                   fontsize=8, ha=ha, va=va, zorder=4)
                box = text.get_window_extent(renderer)
                inside = ax.get_window_extent(renderer).contains(box.x0, box.y0) and \
                    ax.get_window_extent(renderer).contains(box.x1, box.y1)
                if inside and not any(box.overlaps(b) for b in others):
                    best = (text, box)
                    break
                text.remove()
            if best:
                break
        if best is None:  # crowded everywhere: the first position, overlapping
            ux, uy, ha, va = directions[0]
            d = radii[i] * 0.75 + 2
            text = ax.annotate(label, xy, xytext=(ux * d, uy * d), textcoords="offset points",
                               fontsize=8, ha=ha, va=va, zorder=4)
            best = (text, text.get_window_extent(renderer))
        placed.append(best[1])


def check_plot_path(path: str | Path) -> Path:
    """``path`` as a Path if it names a .png, .svg or .pdf file, else ValueError."""
    path = Path(path)
    if path.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise ValueError(f"plot file must end in .png, .svg or .pdf, got {path.name!r}")
    return path


def plot_cost(results: Sequence[ProfileResult], path: str | Path, families: Sequence[str] | None = None,
              title: str | None = None) -> Path:
    """Scatter of parameters (x) against multiply-adds (y), both on log scales, saved to ``path``.

    Marker area grows with the receptive field of the last feature map; colour is the family
    (``families[i]`` for ``results[i]``); every point is labelled with its model name (and its
    input size when the models were measured at different sizes).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    if not results:
        raise ValueError("nothing to plot: no models")
    path = check_plot_path(path)
    families = list(families) if families is not None else [""] * len(results)
    sizes = {r.input_size for r in results}
    rf_max = max((r.receptive_field or 1) for r in results)

    def area(rf: int | None) -> float:
        return 40 + 560 * math.sqrt((rf or 1) / rf_max)

    fig, ax = plt.subplots(figsize=(9, 6.5), dpi=130)
    palette = plt.get_cmap("tab10")
    fam_order = list(dict.fromkeys(families))
    fam_handles = []
    for fi, fam in enumerate(fam_order):
        pts = [r for r, f in zip(results, families, strict=True) if f == fam]
        ax.scatter([r.params / 1e6 for r in pts], [r.macs / 1e9 for r in pts],
                   s=[area(r.receptive_field) for r in pts], color=palette(fi % 10), alpha=0.55,
                   edgecolors="black", linewidths=0.6, zorder=3)
        fam_handles.append(ax.scatter([], [], s=60, color=palette(fi % 10), alpha=0.7,
                                      edgecolors="black", linewidths=0.6, label=fam))
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))
    ax.tick_params(which="minor", labelsize=7)
    ax.set_xlabel("parameters (millions, log scale)")
    ax.set_ylabel("multiply-adds per image (G MACs, log scale)")
    if title is None:
        title = "Cost of the models"
        if len(sizes) == 1:
            c, h, w = next(iter(sizes))
            title += f" at {c}x{h}x{w}"
    ax.set_title(title + "\n(marker area: receptive field of the last feature map)", fontsize=10)
    ax.grid(True, which="major", alpha=0.3, zorder=0)
    ax.grid(True, which="minor", alpha=0.1, zorder=0)
    # Room for labels beside the extreme points.
    x0, x1 = ax.get_xlim()
    y0, y1 = ax.get_ylim()
    ax.set_xlim(x0 / 1.3, x1 * 2.2)
    ax.set_ylim(y0 / 1.4, y1 * 1.6)
    _place_labels(fig, ax, results, sizes, [area(r.receptive_field) for r in results])
    rf_handles = [ax.scatter([], [], s=area(rf), color="grey", alpha=0.4, edgecolors="black",
                             linewidths=0.6, label=f"{rf} px")
                  for rf in sorted({max(1, round(rf_max / 4)), max(1, round(rf_max / 2)), rf_max})]
    if any(fam_order):
        ax.add_artist(ax.legend(handles=fam_handles, loc="upper left", fontsize=8, title="family",
                                title_fontsize=8))
    # A legend row is 0.7 font sizes tall (the default handle height) and its marker is centred
    # on it: space the rows (and the title above them, the frame below) by what the largest
    # marker sticks out, and make the marker slot as wide as it, so no marker overlaps another
    # marker, a label, the title or the frame.
    fs = 8
    diam = math.sqrt(area(rf_max))  # points
    spare = diam - 0.7 * fs
    ax.legend(handles=rf_handles, loc="lower right", fontsize=fs, title="receptive field", title_fontsize=fs,
              handlelength=diam / fs, handleheight=0.7, labelspacing=(spare + 3) / fs,
              borderpad=(spare / 2 + 3) / fs, scatteryoffsets=[0.5])
    fig.tight_layout()
    from cnnzoo.train.checkpoint import atomic_write  # plain errors for a bad path, run-file permissions

    atomic_write(path, lambda f: fig.savefig(f, format=path.suffix.lstrip(".").lower() or "png"))
    plt.close(fig)
    return path
