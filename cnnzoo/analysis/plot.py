"""The cost map: parameters against multiply-adds, one labelled point per model."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from .profile import ProfileResult


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

    if not results:
        raise ValueError("nothing to plot: no models")
    path = check_plot_path(path)
    families = list(families) if families is not None else [""] * len(results)
    sizes = {r.input_size for r in results}
    rf_max = max((r.receptive_field or 1) for r in results)

    def area(rf: int | None) -> float:
        return 40 + 560 * math.sqrt((rf or 1) / rf_max)

    fig, ax = plt.subplots(figsize=(8.5, 6.2), dpi=130)
    palette = plt.get_cmap("tab10")
    fam_order = list(dict.fromkeys(families))
    for fi, fam in enumerate(fam_order):
        pts = [r for r, f in zip(results, families, strict=True) if f == fam]
        ax.scatter([r.params / 1e6 for r in pts], [r.macs / 1e9 for r in pts],
                   s=[area(r.receptive_field) for r in pts], color=palette(fi % 10), alpha=0.55,
                   edgecolors="black", linewidths=0.6, label=fam or None, zorder=3)
    for r in results:
        label = r.name or "?"
        if len(sizes) > 1:
            label += f" ({r.input_size[1]}px)"
        ax.annotate(label, (r.params / 1e6, r.macs / 1e9), xytext=(7, 5), textcoords="offset points",
                    fontsize=8, zorder=4)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("parameters (millions, log scale)")
    ax.set_ylabel("multiply-adds per image (G MACs, log scale)")
    if title is None:
        title = "Cost of the models"
        if len(sizes) == 1:
            c, h, w = next(iter(sizes))
            title += f" at {c}x{h}x{w}"
    ax.set_title(title + "\n(marker area: receptive field of the last feature map)", fontsize=10)
    ax.grid(True, which="both", alpha=0.25, zorder=0)
    # Leave room for labels right of the rightmost and above the topmost points.
    x0, x1 = ax.get_xlim()
    y0, y1 = ax.get_ylim()
    ax.set_xlim(x0 / 1.2, x1 * 2.0)
    ax.set_ylim(y0 / 1.2, y1 * 1.5)
    handles = []
    for rf in sorted({max(1, round(rf_max / 4)), max(1, round(rf_max / 2)), rf_max}):
        handles.append(ax.scatter([], [], s=area(rf), color="grey", alpha=0.4, edgecolors="black",
                                  linewidths=0.6, label=f"rf {rf} px"))
    first = ax.legend(loc="upper left", fontsize=8, title="family", title_fontsize=8) \
        if any(fam_order) else None
    if first is not None:
        ax.add_artist(first)
    ax.legend(handles=handles, loc="lower right", fontsize=8, title="receptive field",
              title_fontsize=8, labelspacing=1.3, borderpad=0.9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
