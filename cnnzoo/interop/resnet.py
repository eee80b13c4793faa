"""torchvision / timm ResNet keys -> cnnzoo ResNet keys.

Both libraries name ResNets alike: ``conv1``/``bn1`` stem, ``layerN.i.{convK,bnK}``,
``downsample.{0,1}`` projections, timm's SE as ``se.fc1``/``se.fc2``, ``fc`` classifier.
"""

from __future__ import annotations

import re

from ..models.resnet import ResNet
from . import register_mapping, rename_prefix

_PREFIXES = {"conv1.": "stem.conv.", "bn1.": "stem.norm.", "fc.": "head.fc."}


def _unit(m: re.Match) -> str:
    return f"stages.{int(m.group(1)) - 1}.{m.group(2)}"


def resnet_key(k: str) -> str:
    if m := re.match(r"^layer(\d+)\.(\d+)\.conv(\d)\.(.*)$", k):
        return f"{_unit(m)}.body.conv{m.group(3)}.{m.group(4)}"
    if m := re.match(r"^layer(\d+)\.(\d+)\.bn(\d)\.(.*)$", k):
        return f"{_unit(m)}.body.norm{m.group(3)}.{m.group(4)}"
    if m := re.match(r"^layer(\d+)\.(\d+)\.downsample\.([01])\.(.*)$", k):
        return f"{_unit(m)}.shortcut.{'conv' if m.group(3) == '0' else 'norm'}.{m.group(4)}"
    if m := re.match(r"^layer(\d+)\.(\d+)\.se\.(fc\d)\.(.*)$", k):
        return f"{_unit(m)}.attn.{m.group(3)}.{m.group(4)}"
    # unknown keys pass through and are reported as unused
    return rename_prefix(k, _PREFIXES) or k


register_mapping(ResNet, "torchvision")(resnet_key)
register_mapping(ResNet, "timm")(resnet_key)
