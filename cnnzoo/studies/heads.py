"""Classifier heads (GoogLeNet Sec. 5): VGG's fully connected head against global average pooling."""

from __future__ import annotations

from typing import Any

from ._common import CPU, PAPER, SMOKE, SMOKE_ABOUT, TINY_VGG, cpu_about
from ._plots import bars, save, suptitle
from ._study import Cell, Diff, Results, Scale, Study, Verdict, exact, expect


def _grid(model: str, fc_hidden: int, **opts) -> tuple[Cell, ...]:
    # On a 32x32 input VGG's five pools leave a 1x1 map: the FC head pools it to 1x1 (VGG's 7x7
    # would repeat the one value 49 times) and keeps two hidden FC layers with dropout 0.5.
    return (Cell("fc", model, {**opts, "head": "fc", "fc_pool": 1, "fc_hidden": fc_hidden},
                 f"VGG's head: two FC layers of {fc_hidden} with dropout 0.5, then the classifier"),
            Cell("gap", model, {**opts, "head": "gap"}, "global average pooling, then the classifier"))


def analyze(scale: Scale) -> dict[str, Any]:
    """The head's share of VGG-16's parameters and multiply-adds at 224x224 and 32x32
    (1,000 classes, the paper's network), for its FC head and a GAP head."""
    import torch

    import cnnzoo
    from cnnzoo.analysis import profile

    shares, rows = {}, []
    for head in ("fc", "gap"):
        with torch.device("meta"):
            model = cnnzoo.create_model("vgg16", head=head)
        for size in (224, 32):
            r = profile(model, (3, size, size))
            head_params = sum(p.numel() for p in model.head.parameters())
            head_macs = sum(row.macs for row in r.layers if row.name.split(".")[0] == "head")
            shares[f"{head}@{size}"] = {"params": r.params, "macs": r.macs, "head_params": head_params,
                                        "head_macs": head_macs}
            rows.append([f"vgg16 head={head}", f"{size}x{size}", f"{r.params:,}", f"{head_params:,}",
                         f"{head_params / r.params:.1%}", f"{r.macs / 1e6:,.1f}", f"{head_macs / 1e6:,.1f}",
                         f"{head_macs / r.macs:.1%}"])
    return {"vgg16": shares, "tables": [{
        "title": "VGG-16 (1,000 classes): the classifier head's share",
        "header": ["model", "input", "params", "head params", "head share", "MMACs", "head MMACs",
                   "head share"], "rows": rows}]}


def judge(results: Results) -> Verdict:
    s = results.analysis.get("vgg16", {})
    parts = []
    if s:
        shares = {k: v["head_params"] / v["params"] for k, v in s.items()}
        fc, gap = s["fc@224"], s["gap@224"]
        parts.append(exact("VGG-16's FC head holds most of its parameters (at any input size)",
                           shares["fc@224"] > 0.5 and shares["fc@32"] > 0.5,
                           f"FC head {fc['head_params']:,} of {fc['params']:,} ({shares['fc@224']:.1%}); "
                           f"with global average pooling the head has {gap['head_params']:,} and the "
                           f"network {gap['params']:,}"))
    parts.append(expect("global average pooling gives a lower test error than the FC head",
                        Diff.of(results, "gap", "fc"), higher=False))
    return Verdict(tuple(parts))


def plot_analysis(results: dict, out):
    """The head's share of VGG-16's parameters and multiply-adds, FC against GAP, at 224 and 32."""
    import matplotlib.pyplot as plt

    s = results["analysis"]["vgg16"]
    groups = ["params\n224x224", "params\n32x32", "multiply-adds\n224x224", "multiply-adds\n32x32"]
    series = {}
    for head, label in (("fc", "FC head (VGG)"), ("gap", "global average pooling")):
        series[label] = [100 * s[f"{head}@{n}"][f"head_{k}"] / s[f"{head}@{n}"][k]
                         for k in ("params", "macs") for n in (224, 32)]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    bars(ax, groups, series, fmt="{:.1f}%")
    ax.set_ylabel("the head's share of the network (%)")
    ax.set_ylim(0, 105)
    ax.legend(loc="upper right")
    suptitle(fig, results, "Heads: VGG-16's classifier head, share of parameters and multiply-adds",
             trained=False)
    return save(fig, out / "heads_share.png")


STUDY = Study(
    name="heads",
    title="Heads: VGG's FC head against global average pooling",
    claim=("VGG's fully connected head holds most of the network's parameters; replacing it by global "
           "average pooling (GoogLeNet) removes them and does not cost accuracy (GoogLeNet reports a "
           "small gain)."),
    source="Szegedy et al., Going Deeper with Convolutions, CVPR 2015, Sec. 5",
    paper=("VGG-16 has 138,357,544 parameters (1,000 classes; VGG Table 2 rounds it to 138M)",
           "GoogLeNet Sec. 5: moving from fully connected layers to average pooling improved top-1 accuracy "
           "by about 0.6% (ImageNet); dropout remained essential"),
    scales={
        "smoke": Scale(_grid("vgg", 16, **TINY_VGG), SMOKE, SMOKE_ABOUT + "; a two-stage VGG-style net",
                       data="digits"),
        "cpu": Scale(_grid("cifar_vgg16", 512, width=0.5), dict(CPU, epochs=6),
                     cpu_about(6, "; cifar_vgg16 at half width"), seeds=2),
        "paper": Scale(_grid("cifar_vgg16", 512), dict(PAPER, recipe="vgg-cifar"),
                       "CIFAR-10, 45,000 / 5,000 split, cifar_vgg16, recipe vgg-cifar (160 epochs)", seeds=2),
    },
    judge=judge,
    analyze=analyze,
    plots=(plot_analysis,),
)
