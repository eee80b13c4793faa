"""Residual units (Identity Mappings, Fig. 4 and Tables 1-2): where BN and ReLU sit, and what the
shortcut does, on one CIFAR ResNet."""

from __future__ import annotations

from ._common import CPU, PAPER, SMOKE, SMOKE_ABOUT, TINY_RESNET, cpu_about
from ._study import Cell, Diff, Results, Scale, Study, Verdict, expect

# unit= option -> (Fig. 4 panel, the paper's name)
ORDERINGS = {
    "post": ("4(a)", "original"),
    "bn_after_add": ("4(b)", "BN after addition"),
    "relu_before_add": ("4(c)", "ReLU before addition"),
    "relu_preact": ("4(d)", "ReLU-only pre-activation"),
    "preact": ("4(e)", "full pre-activation"),
}


def _grid(model: str, **opts) -> tuple[Cell, ...]:
    cells = [Cell(unit, model, {**opts, "unit": unit}, f"Fig. {fig} {name}")
             for unit, (fig, name) in ORDERINGS.items()]
    cells.append(Cell("scale0.5", model, {**opts, "shortcut_scale": 0.5, "residual_scale": 0.5},
                      "Table 1(b) constant scaling: 0.5 on the shortcut and on the residual branch"))
    cells.append(Cell("conv_shortcut", model, {**opts, "shortcut": "C"},
                      "Table 1(e) 1x1-conv shortcut on every unit (option C)"))
    return tuple(cells)


def judge(results: Results) -> Verdict:
    def worse(name: str, why: str):
        return expect(f"{why} has a higher test error than the original unit",
                      Diff.of(results, name, "post"), higher=True)

    return Verdict((
        expect("full pre-activation (4e) has a lower test error than the original unit (4a)",
               Diff.of(results, "preact", "post"), higher=False),
        worse("bn_after_add", "BN after addition (4b)"),
        worse("relu_before_add", "ReLU before addition (4c)"),
        worse("scale0.5", "constant scaling 0.5 (Table 1b)"),
        worse("conv_shortcut", "a 1x1-conv shortcut (Table 1e)"),
    ))


STUDY = Study(
    name="units",
    title="Residual units: orderings and shortcuts",
    claim=("Keeping the shortcut a clean identity matters: full pre-activation (BN and ReLU before each "
           "conv) trains best; BN after the addition or ReLU before it, a constant scaling of the "
           "shortcut or a 1x1-conv shortcut all raise the error."),
    source="He et al., Identity Mappings in Deep Residual Networks, ECCV 2016, Fig. 4, Tables 1 and 2",
    paper=("Identity Mappings Table 2 (ResNet-110, CIFAR-10 test error): original / BN after addition / "
           "ReLU before addition / ReLU-only pre-activation / full pre-activation: 6.61 / 8.17 / 7.84 / "
           "6.71 / 6.37%",
           "Identity Mappings Table 1 (ResNet-110): constant scaling 0.5 on both paths 12.35%, 1x1-conv "
           "shortcut 12.22%, dropout 0.5 on the shortcut fails to converge well (above 20%)"),
    scales={
        "smoke": Scale(_grid("cifar_resnet", depth=14, **TINY_RESNET), SMOKE, SMOKE_ABOUT + "; depth 14",
                       data="digits"),
        "cpu": Scale(_grid("resnet20"), dict(CPU, epochs=6), cpu_about(6, "; ResNet-20 instead of 110"),
                     seeds=2),
        "paper": Scale(_grid("resnet110"), dict(PAPER, recipe="resnet-cifar"),
                       "CIFAR-10, 45,000 / 5,000 split, ResNet-110, recipe resnet-cifar (64k iterations)",
                       seeds=2),
    },
    judge=judge,
    notes=("Table 1's dropout on the shortcut is not expressible in cnnzoo (there is no shortcut-dropout "
           "option), so it is not part of the grid.",),
)
