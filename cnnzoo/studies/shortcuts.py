"""Shortcut options (ResNet paper, Table 3): zero-padding (A), projections where the shape changes
(B), projections everywhere (C), and no shortcut at all, on one CIFAR ResNet."""

from __future__ import annotations

from ._common import CPU, PAPER, SMOKE, SMOKE_ABOUT, TINY_RESNET, cpu_about
from ._study import NOT_VISIBLE, Cell, Diff, Part, Results, Scale, Study, Verdict, exact, expect

OPTIONS = {
    "A": "A: identity, zero-padded where the width grows (no parameters)",
    "B": "B: 1x1 projection where the shape changes, identity elsewhere",
    "C": "C: 1x1 projection on every unit",
    "none": "no shortcut: the plain net",
}


def _grid(model: str, **opts) -> tuple[Cell, ...]:
    return tuple(Cell(k if k == "none" else f"option_{k}", model, {**opts, "shortcut": k}, note)
                 for k, note in OPTIONS.items())


def analyze(scale: Scale) -> dict:
    """Parameters and multiply-adds of the paper's ImageNet ResNet-34 with each shortcut."""
    import torch

    import cnnzoo
    from cnnzoo.analysis import profile

    rows, counts = [], {}
    for k in OPTIONS:
        with torch.device("meta"):
            model = cnnzoo.create_model("resnet34", shortcut=k)
        r = profile(model, (3, 224, 224))
        counts[k] = {"params": r.params, "macs": r.macs}
        rows.append([f"resnet34 shortcut={k}", f"{r.params:,}", f"{r.macs / 1e9:.3f}"])
    return {"resnet34": counts,
            "tables": [{"title": "ImageNet ResNet-34 (the network of the paper's Table 3) at 224x224",
                        "header": ["model", "params", "GMACs"], "rows": rows}]}


def judge(results: Results) -> Verdict:
    p = {k: results.first("none" if k == "none" else f"option_{k}", "params") for k in OPTIONS}
    ref = results.analysis.get("resnet34", {})
    r34 = {k: v["params"] for k, v in ref.items()}
    claim = "option A adds no parameters to the plain net; B adds a few, C the most"
    numbers = "params none / A / B / C: " + " / ".join(f"{p[k]:,}" if p[k] is not None else "n/a"
                                                       for k in ("none", "A", "B", "C"))
    if r34:
        numbers += "; ResNet-34: " + " / ".join(f"{r34[k]:,}" for k in ("none", "A", "B", "C"))
    if None in p.values():
        params = Part(claim, NOT_VISIBLE, numbers + " (a configuration has no finished run)")
    else:
        params = exact(claim, p["A"] == p["none"] < p["B"] < p["C"]
                       and (not r34 or r34["A"] == r34["none"] < r34["B"] < r34["C"]), numbers)
    return Verdict((
        params,
        expect("option A has a lower test error than no shortcut", Diff.of(results, "option_A", "none"),
               higher=False),
        expect("option B has a lower test error than A (slightly, in the paper)",
               Diff.of(results, "option_B", "option_A"), higher=False),
        expect("option C has a lower test error than B (marginally, in the paper)",
               Diff.of(results, "option_C", "option_B"), higher=False),
    ))


STUDY = Study(
    name="shortcuts",
    title="Shortcuts: A against B against C, and none",
    claim=("Residual learning, not projection, is what fixes degradation: identity shortcuts with zero "
           "padding (A) add no parameters and beat the plain net; projections (B, then C everywhere) add "
           "parameters and help only a little."),
    source="He et al., Deep Residual Learning for Image Recognition, CVPR 2016, Table 3",
    paper=("ResNet paper Table 3 (ImageNet ResNet-34, top-1 error, 10-crop): A / B / C: 25.03 / 24.52 / "
           "24.19%; the paper concludes projection shortcuts are not essential for addressing degradation",),
    scales={
        "smoke": Scale(_grid("cifar_resnet", depth=14, **TINY_RESNET), SMOKE, SMOKE_ABOUT + "; depth 14",
                       data="digits"),
        "cpu": Scale(_grid("resnet32"), dict(CPU, epochs=6), cpu_about(6, "; ResNet-32"), seeds=2),
        "paper": Scale(_grid("resnet56"), dict(PAPER, recipe="resnet-cifar"),
                       "CIFAR-10, 45,000 / 5,000 split, ResNet-56, recipe resnet-cifar (64k iterations); "
                       "the paper's own Table 3 is ImageNet ResNet-34", seeds=2),
    },
    judge=judge,
    analyze=analyze,
)
