"""Degradation (ResNet paper, Fig. 1 and 6): a deeper plain net trains worse; a deeper ResNet does not."""

from __future__ import annotations

from ._common import CPU, PAPER, SMOKE, SMOKE_ABOUT, TINY_RESNET, cpu_about
from ._plots import degradation_curves
from ._study import Cell, Diff, Results, Scale, Study, Verdict, expect


def _pair(depth: int, model: str | None = None, **opts) -> tuple[Cell, Cell]:
    """The plain net and the ResNet of one depth (option A: the same parameters)."""
    if model is None:  # a registered CIFAR name
        return Cell(f"plain{depth}", f"plain{depth}"), Cell(f"resnet{depth}", f"resnet{depth}")
    return (Cell(f"plain{depth}", model, {"depth": depth, "shortcut": "none", **opts}),
            Cell(f"resnet{depth}", model, {"depth": depth, "shortcut": "A", **opts}))


def _grid(shallow: int, deep: int, *more: int, model: str | None = None, **opts) -> tuple[Cell, ...]:
    depths = sorted((shallow, deep, *more))
    pairs = [_pair(d, model, **opts) for d in depths]
    return tuple(p for p, _ in pairs) + tuple(r for _, r in pairs)


def judge(results: Results) -> Verdict:
    """The shallowest against the deepest depth of the grid, on the final training error."""
    depths = sorted(int(n[len("plain"):]) for n in results.names() if n.startswith("plain"))
    lo, hi = depths[0], depths[-1]
    return Verdict((
        expect(f"plain-{hi} has a higher training error than plain-{lo} (degradation)",
               Diff.of(results, f"plain{hi}", f"plain{lo}", "train_error"), higher=True),
        expect(f"resnet-{hi} has a lower training error than resnet-{lo} (residual learning fixes it)",
               Diff.of(results, f"resnet{hi}", f"resnet{lo}", "train_error"), higher=False),
    ))


STUDY = Study(
    name="degradation",
    title="Degradation: plain against residual nets",
    claim=("The deeper plain net has a higher training error than the shallower one (degradation: not "
           "overfitting, since it is the training error); with residual (identity) shortcuts the deeper "
           "net has the lower training error."),
    source="He et al., Deep Residual Learning for Image Recognition, CVPR 2016, Fig. 1 and 6",
    paper=("ResNet paper Fig. 6: on CIFAR-10 the deeper plain nets have higher training and test error "
           "(plain-56 above plain-20; plain-110 above 60% error), the deeper ResNets lower",
           "ResNet paper Table 6 (test error): ResNet-20 / 32 / 44 / 56 / 110: 8.75 / 7.51 / 7.17 / 6.97 / "
           "6.43% (6.61% mean over 5 runs for 110)"),
    scales={
        "smoke": Scale(_grid(8, 14, model="cifar_resnet", **TINY_RESNET), SMOKE, SMOKE_ABOUT + "; depths 8 "
                       "and 14", data="digits"),
        "cpu": Scale(_grid(20, 56), dict(CPU, epochs=6), cpu_about(6), seeds=2),
        "paper": Scale(_grid(20, 56, 32, 110), dict(PAPER, recipe="resnet-cifar"),
                       "CIFAR-10, 45,000 / 5,000 split, recipe resnet-cifar (64k iterations)", seeds=2),
    },
    judge=judge,
    plots=(degradation_curves,),
    notes=("Bold curves are the validation error at each epoch end (the test split is evaluated once, "
           "at the end); thin curves the training error of the epoch so far, logged every few steps.",),
)
