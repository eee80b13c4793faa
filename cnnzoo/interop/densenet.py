"""DenseNet layouts: torchvision, timm and bamos/densenet.pytorch.

torchvision and timm: ``features.{conv0,norm0}`` stem, ``features.denseblockB.denselayerL.{norm1,
conv1,norm2,conv2}``, ``features.transitionT.{norm,conv}``, ``features.norm5``, ``classifier``
(torchvision's old checkpoint files spell ``denselayerL.norm.1``, ``conv.2``: accepted too).
bamos/densenet.pytorch: ``conv1`` stem, ``denseB.L.{bn1,conv1,bn2,conv2}``, ``transT.{bn1,conv1}``,
``bn1`` final norm, ``fc``; its stem has ``2k`` channels for DenseNet-BC and plain DenseNet alike
(24 for k=12, where the paper's plain DenseNet has 16): ``stem_width`` is read from the shapes.
cnnzoo: ``stem.{conv,norm}``, ``stages.{B-1}.layers.{L-1}.{conv1,conv2}.{norm,conv}``,
``stages.{T-1}.transition.{norm,conv}``, ``final.norm``, ``head.fc``.
"""

from __future__ import annotations

import re

from ..models.densenet import DenseNet
from . import Layout, register_layout, register_shape_options, rename_prefix

_PREFIXES = {"features.conv0.": "stem.conv.", "features.norm0.": "stem.norm.",
             "features.norm5.": "final.norm.", "classifier.": "head.fc."}


def densenet_key(k: str) -> str:
    if m := re.match(r"^features\.denseblock(\d+)\.denselayer(\d+)\.(norm|conv)\.?([12])\.(.*)$", k):
        block, layer, kind, i, rest = m.groups()
        return f"stages.{int(block) - 1}.layers.{int(layer) - 1}.conv{i}.{kind}.{rest}"
    if m := re.match(r"^features\.transition(\d+)\.(norm|conv)\.(.*)$", k):
        return f"stages.{int(m.group(1)) - 1}.transition.{m.group(2)}.{m.group(3)}"
    # unknown keys pass through and are reported as unused
    return rename_prefix(k, _PREFIXES) or k


def bamos_key(k: str) -> str:
    if m := re.match(r"^dense(\d+)\.(\d+)\.(bn|conv)([12])\.(.*)$", k):
        block, layer, kind, i, rest = m.groups()
        return f"stages.{int(block) - 1}.layers.{layer}.conv{i}.{'norm' if kind == 'bn' else 'conv'}.{rest}"
    if m := re.match(r"^trans(\d+)\.(bn|conv)1\.(.*)$", k):
        kind = "norm" if m.group(2) == "bn" else "conv"
        return f"stages.{int(m.group(1)) - 1}.transition.{kind}.{m.group(3)}"
    return rename_prefix(k, {"conv1.": "stem.conv.", "bn1.": "final.norm.", "fc.": "head.fc."}) or k


register_layout(DenseNet, Layout("torchvision", densenet_key))
register_layout(DenseNet, Layout("timm", densenet_key))
register_layout(DenseNet, Layout("bamos", bamos_key))


@register_shape_options(DenseNet)
def densenet_shape_options(model: DenseNet, state) -> dict:
    """Stem width and transition compression, where they differ from ``model``'s."""
    opts: dict = {}
    w = state.get("stem.conv.weight")
    if w is not None and w.ndim == 4 and w.shape[0] != model.stem.conv.out_channels:
        opts["stem_width"] = int(w.shape[0])
    t = state.get("stages.0.transition.conv.weight")
    conv = getattr(model.stages[0].transition, "conv", None)
    if t is not None and t.ndim == 4 and conv is not None:
        theirs = _compression(int(t.shape[1]), int(t.shape[0]))
        if theirs != _compression(conv.in_channels, conv.out_channels):
            opts["compression"] = theirs
    return opts


def _compression(inp: int, out: int) -> float:
    """The paper's theta for a transition from ``inp`` to ``out = floor(theta * inp)`` channels."""
    return next((c for c in (0.5, 1.0) if int(inp * c) == out), out / inp)
