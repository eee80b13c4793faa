"""The studies' PNGs: the error chart every study draws, the degradation curves (ResNet paper
Fig. 6), and the helpers the analysis plots share. Plot functions take the study's results
(``results.json``'s content) and the output folder, and return the PNG's path."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from ._study import mean_std


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def seeds_text(seeds: Sequence[int]) -> str:
    seeds = sorted(seeds)
    if len(seeds) == 1:
        return f"seed {seeds[0]}"
    if seeds == list(range(seeds[0], seeds[-1] + 1)) and len(seeds) > 2:
        return f"seeds {seeds[0]}-{seeds[-1]} ({len(seeds)})"
    return "seeds " + ", ".join(map(str, seeds))


def suptitle(fig, results: dict, text: str, trained: bool = True) -> None:
    """``text`` over a second line naming the data, scale and seeds (or, for an analysis, that
    nothing was trained)."""
    if trained:
        sub = f"{results['data_label']}, {results['scale']} scale, {seeds_text(results['seeds'])}"
    else:
        sub = "measured with cnnzoo.analysis (no training)"
    fig.suptitle(f"{text}\n{sub}", fontsize=11)


def save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def bars(ax, groups: Sequence[str], series: dict[str, Sequence[float]], errors: dict | None = None,
         fmt: str = "{:.1f}") -> None:
    """Grouped bars: one group per ``groups`` entry, one bar per series, each labelled with its value."""
    n = len(series)
    width = 0.8 / n
    for i, (label, values) in enumerate(series.items()):
        xs = [g + (i - (n - 1) / 2) * width for g in range(len(groups))]
        err = (errors or {}).get(label)
        rects = ax.bar(xs, values, width, label=label, yerr=err, capsize=4 if err else 0)
        ax.bar_label(rects, labels=[fmt.format(v) for v in values], fontsize=8, padding=2)
    ax.set_xticks(range(len(groups)), groups)
    ax.grid(axis="y", alpha=0.3)


def _configs(results: dict) -> list[str]:
    return list(dict.fromkeys(c["cell"] for c in results["cells"]))


def _finished(results: dict, name: str) -> list[dict]:
    """The records of configuration ``name`` that have results (not a run whose loss diverged)."""
    return [c for c in results["cells"] if c["cell"] == name and "error" not in c]


def _values(results: dict, name: str, key: str) -> list[float]:
    return [c[key] for c in _finished(results, name) if c.get(key) is not None]


def error_chart(results: dict, out: Path) -> Path:
    """Test error per configuration (mean +- std over seeds) with the final training error."""
    plt = _pyplot()
    names = _configs(results)
    test = [mean_std(_values(results, n, "test_error")) for n in names]
    train = [mean_std(_values(results, n, "train_error")) for n in names]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(names) + 2), 4.8))
    xs = range(len(names))
    has_std = any(s is not None for _, s in test)
    rects = ax.bar(xs, [100 * (m or 0) for m, _ in test], 0.6, color="tab:blue",
                   yerr=[100 * (s or 0) for _, s in test] if has_std else None, capsize=4,
                   label="test error" + (" (mean +- std over seeds)" if has_std else ""))
    ax.bar_label(rects, labels=[f"{100 * m:.1f}" if m is not None else "" for m, _ in test], fontsize=8,
                 padding=2, label_type="center", color="white")
    ax.plot(xs, [100 * (m or 0) for m, _ in train], "D", color="tab:orange", ms=7, ls="none",
            label="final training error (last epoch, augmented batches)")
    many = len(names) > 5
    ax.set_xticks(list(xs), names, rotation=20 if many else 0, ha="right" if many else "center")
    ax.set_ylabel("error (%)")
    ax.set_xlabel("configuration")
    top = max([100 * (m or 0) + 100 * (s or 0) for m, s in test] + [100 * (m or 0) for m, _ in train] + [1])
    ax.set_ylim(0, top * 1.25)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper left", fontsize=9)
    suptitle(fig, results, f"{results['title']}: error per configuration")
    return save(fig, out / "errors.png")


def _mean_curve(cells: list[dict], rows: str, key: str) -> tuple[list[int], list[float]]:
    """``key`` (in %) averaged over seeds at the steps every seed logged."""
    series = [{r["step"]: r[key] for r in c[rows] if r.get(key) is not None} for c in cells]
    if not series:
        return [], []
    steps = sorted(set.intersection(*(set(s) for s in series)))
    return steps, [100 * sum(s[t] for s in series) / len(series) for t in steps]


def _smooth(values: list[float], window: int) -> list[float]:
    """Trailing moving average (the logged training errors are single batches')."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v - (values[i - window] if i >= window else 0.0)
        out.append(total / min(i + 1, window))
    return out


def degradation_curves(results: dict, out: Path) -> Path:
    """ResNet paper Fig. 6: plain nets (left) and ResNets (right); thin lines training error,
    bold lines validation error, one colour per depth."""
    plt = _pyplot()
    names = _configs(results)
    depths = sorted({int(re.search(r"\d+$", n).group()) for n in names})
    # smooth the batch errors over about 1/20 of the run (at least one logged step)
    window = max(1, max((len(c.get("steps", [])) for c in results["cells"]), default=0) // 20)
    colours = dict(zip(depths, plt.get_cmap("viridis")([i / max(len(depths) - 1, 1) * 0.85
                                                         for i in range(len(depths))]), strict=True))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), sharey=True)
    for ax, kind, label in ((axes[0], "plain", "plain networks"), (axes[1], "resnet", "ResNets (option A)")):
        for d in depths:
            cells = _finished(results, f"{kind}{d}")
            if not cells:
                continue
            colour = colours[d]
            x, y = _mean_curve(cells, "steps", "train_error")
            ax.plot(x, _smooth(y, window), color=colour, lw=0.8, alpha=0.9)
            x, y = _mean_curve(cells, "epochs", "val_error")
            ax.plot(x, y, color=colour, lw=2.6, label=f"{kind}-{d}")
        ax.set_title(label)
        ax.set_xlabel("iterations")
        ax.grid(alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        handles += [plt.Line2D([], [], color="gray", lw=0.8), plt.Line2D([], [], color="gray", lw=2.6)]
        labels += [f"training error (thin; mean of {window} logged batches)" if window > 1 else
                   "training error (thin; one batch each)", "validation error (bold; each epoch end)"]
        if len(results["seeds"]) > 1:
            labels[-2:] = [f"{t[:-1]}; mean over seeds)" for t in labels[-2:]]
        ax.legend(handles, labels, loc="best", fontsize=8)
    axes[0].set_ylabel("error (%)")
    suptitle(fig, results, "Degradation (ResNet paper Fig. 6): training and validation error")
    return save(fig, out / "curves.png")
