"""Squeeze-and-Excitation (SENet, Table 2 and its "attach anywhere" claim): SE off and on for four
families: a small cost in parameters and multiply-adds, a lower error on each."""

from __future__ import annotations

from typing import Any

from ._common import (
    CPU,
    PAPER,
    QUARTER_INCEPTION,
    SMOKE,
    SMOKE_ABOUT,
    TINY_INCEPTION,
    TINY_RESNET,
    TINY_VGG,
    cpu_about,
)
from ._plots import bars, save, suptitle
from ._study import Cell, Diff, Results, Scale, Study, Verdict, exact, expect

FAMILIES = ("resnet", "vgg", "googlenet", "densenet")
MAX_MAC_OVERHEAD = 0.01  # "a slight increase in computational burden": below 1% of the multiply-adds


def _grid(nets: dict[str, tuple[str, dict]], recipes: dict[str, str] | None = None) -> tuple[Cell, ...]:
    cells = []
    for family in FAMILIES:
        model, opts = nets[family]
        train = {"recipe": recipes[family]} if recipes else {}
        cells.append(Cell(family, model, opts, f"{family} without SE", train))
        cells.append(Cell(f"se_{family}", model, {**opts, "attn": "se"}, f"{family} with SE (reduction 16)",
                          train))
    return tuple(cells)


# The networks of the analysis: the paper's own (ResNet-50 with the stride on the first 1x1, as
# SENet's Table 2) and the full-size CIFAR members of each family.
ANALYZED = {
    "resnet50 (stride on the 1x1)": ("resnet50", {"stride_on": "1x1"}, (3, 224, 224)),
    "resnet110": ("resnet110", {}, (3, 32, 32)),
    "cifar_vgg16": ("cifar_vgg16", {}, (3, 32, 32)),
    "cifar_googlenet": ("cifar_googlenet", {}, (3, 32, 32)),
    "densenet_bc_100_12": ("densenet_bc_100_12", {}, (3, 32, 32)),
}


def analyze(scale: Scale) -> dict[str, Any]:
    """Parameters and multiply-adds with and without SE for the paper's networks."""
    import torch

    import cnnzoo
    from cnnzoo.analysis import profile

    costs, rows = {}, []
    for name, (model, opts, size) in ANALYZED.items():
        c = {}
        for key, extra in (("off", {}), ("on", {"attn": "se"})):
            with torch.device("meta"):
                r = profile(cnnzoo.create_model(model, **opts, **extra), size)
            c[key] = {"params": r.params, "macs": r.macs}
        costs[name] = c
        rows.append([name, "x".join(map(str, size[1:])), f"{c['off']['params']:,}", f"{c['on']['params']:,}",
                     f"{c['on']['params'] / c['off']['params'] - 1:+.2%}", f"{c['off']['macs'] / 1e6:,.1f}",
                     f"{c['on']['macs'] / 1e6:,.1f}", f"{c['on']['macs'] / c['off']['macs'] - 1:+.3%}"])
    return {"overhead": costs, "tables": [{
        "title": "What SE costs (reduction 16)",
        "header": ["network", "input", "params", "params with SE", "change", "MMACs", "MMACs with SE",
                   "change"], "rows": rows}]}


def judge(results: Results) -> Verdict:
    parts = []
    costs = results.analysis.get("overhead", {})
    if costs:
        over = {n: c["on"]["macs"] / c["off"]["macs"] - 1 for n, c in costs.items()}
        parts.append(exact(f"SE adds under {MAX_MAC_OVERHEAD:.0%} multiply-adds to every network",
                           all(0 <= v < MAX_MAC_OVERHEAD for v in over.values()),
                           "; ".join(f"{n} {v:+.3%}" for n, v in over.items())))
    for family in FAMILIES:
        parts.append(expect(f"SE lowers the test error of the {family}",
                            Diff.of(results, f"se_{family}", family), higher=False))
    return Verdict(tuple(parts))


def plot_analysis(results: dict, out):
    """SE's overhead in parameters and multiply-adds for each analysed network."""
    import matplotlib.pyplot as plt

    costs = results["analysis"]["overhead"]
    names = list(costs)
    series = {"parameters": [100 * (c["on"]["params"] / c["off"]["params"] - 1) for c in costs.values()],
              "multiply-adds": [100 * (c["on"]["macs"] / c["off"]["macs"] - 1) for c in costs.values()]}
    fig, ax = plt.subplots(figsize=(9, 4.5))
    bars(ax, [n.replace(" (", "\n(") for n in names], series, fmt="{:.2f}%")
    ax.set_ylabel("increase with SE (%)")
    ax.legend(loc="upper right")
    suptitle(fig, results, "SE: what the gates cost (reduction 16)", trained=False)
    return save(fig, out / "se_cost.png")


_SMOKE_NETS = {"resnet": ("cifar_resnet", {"depth": 8, **TINY_RESNET}),
               "vgg": ("vgg", {**TINY_VGG, "head": "gap"}),
               "googlenet": ("cifar_googlenet", {"rows": TINY_INCEPTION}),
               "densenet": ("cifar_densenet", {"depth": 10, "growth_rate": 4, "bc": True})}
_CPU_NETS = {"resnet": ("resnet20", {}),
             "vgg": ("cifar_vgg16", {"width": 0.25}),
             "googlenet": ("cifar_googlenet", {"rows": QUARTER_INCEPTION}),
             "densenet": ("cifar_densenet", {"depth": 40, "growth_rate": 12, "bc": True})}
_PAPER_NETS = {"resnet": ("resnet110", {}), "vgg": ("cifar_vgg16", {}), "googlenet": ("cifar_googlenet", {}),
               "densenet": ("densenet_bc_100_12", {})}
_PAPER_RECIPES = {"resnet": "resnet-cifar", "vgg": "vgg-cifar", "googlenet": "vgg-cifar",
                  "densenet": "densenet-cifar"}

STUDY = Study(
    name="se",
    title="SE: off and on, in four families",
    claim=("A Squeeze-and-Excitation gate can be attached to any architecture: it adds a few parameters "
           "and almost no multiply-adds, and lowers the error of each network it is added to."),
    source="Hu et al., Squeeze-and-Excitation Networks, CVPR 2018, Table 2 and Sec. 6",
    paper=("SENet Table 2 (ImageNet, stride on the 1x1): ResNet-50 3.86 GMACs, SE-ResNet-50 3.87 GMACs; "
           "parameters 25,557,032 -> 28,088,024 (SENet: 28.1M)",
           "SENet, CIFAR-10 test error: ResNet-110 6.37% -> SE-ResNet-110 5.21%"),
    scales={
        "smoke": Scale(_grid(_SMOKE_NETS), SMOKE, SMOKE_ABOUT + "; tiny members of each family",
                       data="digits"),
        "cpu": Scale(_grid(_CPU_NETS), dict(CPU, epochs=4),
                     cpu_about(4, "; ResNet-20, cifar_vgg16 at a quarter width, GoogLeNet at a quarter "
                                  "width, DenseNet-BC-40 (k=12)"), seeds=2),
        "paper": Scale(_grid(_PAPER_NETS, _PAPER_RECIPES), PAPER,
                       "CIFAR-10, 45,000 / 5,000 split, each family's recipe (GoogLeNet: vgg-cifar)",
                       seeds=2),
    },
    judge=judge,
    analyze=analyze,
    plots=(plot_analysis,),
    notes=("Multiply-adds count convolutions and linear layers (cnnzoo.analysis's convention); the "
           "gate's channel-wise multiplication is one operation per element and counts among the other "
           "operations.",),
)
