"""Factorization (VGG Sec. 2.3 and 4.1, Inception-v3 Sec. 3.1): stacks of 3x3 convs in place of
5x5 and 7x7 ones: the same window for fewer weights, and at least the same accuracy."""

from __future__ import annotations

from typing import Any

from ._common import CPU, PAPER, QUARTER_INCEPTION, SMOKE, SMOKE_ABOUT, TINY_INCEPTION, cpu_about
from ._plots import bars, save, suptitle
from ._study import Cell, Diff, Results, Scale, Study, Verdict, exact, expect, no_worse

# VGG configuration B (two 3x3 convs per stage) and "shallow B": one 5x5 conv in place of each
# pair (VGG Sec. 4.1), with BN and global pooling as the CIFAR VGGs.
_B = (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")
_VGG_CIFAR = {"norm_layer": "bn", "head": "gap"}


def _shallow(cfg) -> list:
    """One 5x5 conv per pair of 3x3 convs: ``[64, 64, "M"]`` -> ``[{"width": 64, "kernel": 5}, "M"]``."""
    out, i = [], 0
    while i < len(cfg):
        if cfg[i] == "M":
            out.append("M")
            i += 1
        else:
            out.append({"width": cfg[i], "kernel": 5})
            i += 2
    return out


def build_vgg(opts: dict, num_classes: int, in_chans: int):
    """A VGG whose configuration has ``{"width", "kernel"}`` entries (a 5x5 conv), which
    ``create_model``'s ``cfg`` takes as :class:`~cnnzoo.models.vgg.Conv` only."""
    import cnnzoo
    from cnnzoo.models.vgg import Conv

    cfg = [Conv(**e) if isinstance(e, dict) else e for e in opts["cfg"]]
    return cnnzoo.create_model("vgg", **{**opts, "cfg": cfg}, num_classes=num_classes, in_chans=in_chans)


def _grid(vgg_cfg, vgg_width: float, rows: list | None) -> tuple[Cell, ...]:
    vgg = {**_VGG_CIFAR, **({"width": vgg_width} if vgg_width != 1 else {})}
    goog = {"rows": rows} if rows is not None else {}
    return (
        Cell("vgg_3x3", "vgg", {"cfg": list(vgg_cfg), **vgg}, "VGG-style: two 3x3 convs per stage"),
        Cell("vgg_5x5", "vgg", {"cfg": _shallow(vgg_cfg), **vgg},
             "the same with one 5x5 per pair ('shallow')", build=build_vgg),
        Cell("googlenet", "cifar_googlenet", goog, "Inception modules with their 5x5 branch"),
        Cell("googlenet_3x3", "cifar_googlenet", {**goog, "factorize_5x5": True},
             "each 5x5 as two 3x3 (BN-Inception's double 3x3)"),
    )


def analyze(scale: Scale) -> dict[str, Any]:
    """One conv and its factorized stack (64 channels in and out, 32x32), and the paper-sized
    networks at 32x32: weights, multiply-adds and receptive field from ``cnnzoo.analysis``."""
    import torch
    import torch.nn as nn

    import cnnzoo
    from cnnzoo.analysis import factorize, profile

    def measure(model, size=(64, 32, 32)) -> dict[str, int]:
        r = profile(model, size)
        return {"params": r.params, "macs": r.macs, "rf": r.receptive_field}

    convs = {}
    for k in (5, 7):
        big = nn.Sequential(nn.Conv2d(64, 64, k, padding=k // 2, bias=False))
        stack = factorize(big, kernel_sizes=(k,), act_layer="relu")
        convs[str(k)] = {"single": measure(big), "stack": measure(stack), "stack_convs": (k - 1) // 2}
    nets = {}
    with torch.device("meta"):
        models = {
            "VGG B (3x3 pairs)": cnnzoo.create_model("vgg", cfg="B", **_VGG_CIFAR, num_classes=10),
            "VGG shallow B (5x5)": build_vgg({"cfg": _shallow(_B), **_VGG_CIFAR}, 10, 3),
            "cifar_googlenet": cnnzoo.create_model("cifar_googlenet"),
            "cifar_googlenet factorize_5x5": cnnzoo.create_model("cifar_googlenet", factorize_5x5=True),
            "cifar_googlenet factorize_5x5, factorize_width=in": cnnzoo.create_model(
                "cifar_googlenet", factorize_5x5=True, factorize_width="in"),
        }
    for name, model in models.items():
        nets[name] = measure(model, (3, 32, 32))
    rows = []
    for k, c in convs.items():
        n = c["stack_convs"]
        for what, m in ((f"one {k}x{k} conv", c["single"]), (f"{n} stacked 3x3 convs", c["stack"])):
            rows.append([what, f"{m['params']:,}", f"{m['macs'] / 1e6:.1f}", str(m["rf"])])
    net_rows = [[name, f"{m['params']:,}", f"{m['macs'] / 1e6:.1f}", str(m["rf"])]
                for name, m in nets.items()]
    header = ["params", "MMACs", "receptive field"]
    return {"convs": convs, "networks": nets, "tables": [
        {"title": "One conv, 64 channels in and out, on a 32x32 map", "header": ["layer", *header],
         "rows": rows},
        {"title": "The paper-sized CIFAR networks at 32x32 (10 classes)", "header": ["network", *header],
         "rows": net_rows}]}


def judge(results: Results) -> Verdict:
    parts = []
    for k, c in sorted(results.analysis.get("convs", {}).items()):
        single, stack, n = c["single"], c["stack"], c["stack_convs"]
        ratio = stack["params"] / single["params"]
        want = 9 * n / int(k) ** 2  # n stacked 3x3 against one k x k, equal widths
        holds = stack["rf"] == single["rf"] == int(k) and abs(ratio - want) < 1e-9 and (
            stack["macs"] / single["macs"] == ratio)
        parts.append(exact(f"{n} stacked 3x3 convs see the same {k}x{k} window as one {k}x{k} conv with "
                           f"{9 * n}/{int(k) ** 2} of its weights and multiply-adds", holds,
                           f"receptive field {single['rf']} vs {stack['rf']}; weights {single['params']:,} "
                           f"vs {stack['params']:,} ({ratio:.1%}); MACs {single['macs']:,} vs "
                           f"{stack['macs']:,}"))
    parts.append(expect("the VGG-style net with pairs of 3x3 convs has a lower test error than with one 5x5 "
                        "per pair", Diff.of(results, "vgg_3x3", "vgg_5x5"), higher=False))
    parts.append(no_worse("GoogLeNet with each 5x5 factorized into two 3x3 has no higher test error",
                          Diff.of(results, "googlenet_3x3", "googlenet")))
    return Verdict(tuple(parts))


def plot_analysis(results: dict, out):
    """Weights and multiply-adds of each stack relative to the conv it replaces."""
    import matplotlib.pyplot as plt

    convs = results["analysis"]["convs"]
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    groups = [f"{k}x{k} -> {c['stack_convs']} x 3x3" for k, c in sorted(convs.items())]
    series = {
        "weights": [100 * c["stack"]["params"] / c["single"]["params"] for _, c in sorted(convs.items())],
        "multiply-adds": [100 * c["stack"]["macs"] / c["single"]["macs"] for _, c in sorted(convs.items())],
    }
    bars(ax, groups, series, fmt="{:.1f}%")
    ax.axhline(100, color="black", lw=1, ls="--", label="the single large conv (100%)")
    ax.set_ylabel("cost of the 3x3 stack (% of the large conv)")
    ax.set_ylim(0, 115)
    ax.legend(loc="upper right")
    for i, (_, c) in enumerate(sorted(convs.items())):
        ax.text(i, 5, f"receptive field\n{c['single']['rf']} = {c['stack']['rf']}", ha="center", fontsize=9)
    suptitle(fig, results, "Factorization: 3x3 stacks against one large conv (64 channels, 32x32)",
             trained=False)
    return save(fig, out / "factorization_cost.png")


STUDY = Study(
    name="factorization",
    title="Factorization: 5x5 and 7x7 against stacks of 3x3",
    claim=("A stack of 3x3 convs sees the same window as one large conv for fewer weights and "
           "multiply-adds (two 3x3: 18/25 of a 5x5; three: 27/49 of a 7x7), and the deeper stack, with "
           "a non-linearity between its convs, is at least as accurate."),
    source=("Simonyan & Zisserman, Very Deep Convolutional Networks, ICLR 2015, Sec. 2.3 and 4.1; "
            "Szegedy et al., Rethinking the Inception Architecture, CVPR 2016, Sec. 3.1"),
    paper=("Two stacked 3x3 convs see 5x5 and cost 18C^2 weights against 25C^2 (28% less); three see 7x7 "
           "and cost 27C^2 against 49C^2 (45% less)",
           "VGG Sec. 4.1 (ImageNet): 'shallow B', with one 5x5 conv in place of each pair of 3x3 convs, "
           "had a 7% higher top-1 error than B"),
    scales={
        "smoke": Scale(_grid((8, 8, "M", 16, 16, "M"), 1, TINY_INCEPTION), SMOKE,
                       SMOKE_ABOUT + "; a two-stage VGG-style net, a three-module GoogLeNet", data="digits"),
        "cpu": Scale(_grid(_B, 0.5, QUARTER_INCEPTION), dict(CPU, epochs=5),
                     cpu_about(5, "; VGG B at half width, GoogLeNet at a quarter"), seeds=2),
        "paper": Scale(_grid(_B, 1, None), dict(PAPER, recipe="vgg-cifar"),
                       "CIFAR-10, 45,000 / 5,000 split, VGG B and cifar_googlenet at full width, recipe "
                       "vgg-cifar (160 epochs; neither paper trained on CIFAR)", seeds=2),
    },
    judge=judge,
    analyze=analyze,
    plots=(plot_analysis,),
)
