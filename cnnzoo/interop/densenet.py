"""torchvision DenseNet keys -> cnnzoo DenseNet keys.

torchvision: ``features.{conv0,norm0}`` stem, ``features.denseblockB.denselayerL.{norm1,conv1,
norm2,conv2}``, ``features.transitionT.{norm,conv}``, ``features.norm5``, ``classifier``.
cnnzoo: ``stem.{conv,norm}``, ``stages.{B-1}.layers.{L-1}.{conv1,conv2}.{norm,conv}``,
``stages.{T-1}.transition.{norm,conv}``, ``final.norm``, ``head.fc``.

The legacy keys of torchvision's old checkpoint files (``denselayerL.norm.1``, ``conv.2``) are
accepted as well.
"""

from __future__ import annotations

import re

from ..models.densenet import DenseNet
from . import register_mapping, rename_prefix

_PREFIXES = {"features.conv0.": "stem.conv.", "features.norm0.": "stem.norm.",
             "features.norm5.": "final.norm.", "classifier.": "head.fc."}


@register_mapping(DenseNet, "torchvision")
def densenet_key(k: str) -> str:
    if m := re.match(r"^features\.denseblock(\d+)\.denselayer(\d+)\.(norm|conv)\.?([12])\.(.*)$", k):
        block, layer, kind, i, rest = m.groups()
        return f"stages.{int(block) - 1}.layers.{int(layer) - 1}.conv{i}.{kind}.{rest}"
    if m := re.match(r"^features\.transition(\d+)\.(norm|conv)\.(.*)$", k):
        return f"stages.{int(m.group(1)) - 1}.transition.{m.group(2)}.{m.group(3)}"
    # unknown keys pass through and are reported as unused
    return rename_prefix(k, _PREFIXES) or k
