"""torchvision GoogLeNet keys -> cnnzoo GoogLeNet keys (the ``googlenet_tv`` layout).

torchvision: ``conv1..3`` stem, ``inceptionXY.branch{1..4}`` (branch 2 and 3: ``0`` reduce,
``1`` conv; branch 4: ``0`` the max-pool, ``1`` the projection), every conv a ``{conv, bn}``
pair, ``aux{1,2}.{conv, fc1, fc2}``, ``fc`` classifier.
"""

from __future__ import annotations

import re

from ..models.googlenet import GoogLeNet
from . import register_mapping, rename_prefix

_BRANCHES = {"branch1": "branch1x1", "branch2": "branch3x3", "branch3": "branch5x5", "branch4": "branch_pool"}


@register_mapping(GoogLeNet, "torchvision")
def googlenet_key(k: str) -> str:
    k = re.sub(r"\.bn\.", ".norm.", k)
    if m := re.match(r"^(conv\d)\.(.*)$", k):
        return f"stem.{m.group(1)}.{m.group(2)}"
    if m := re.match(r"^(inception\d[a-z])\.(branch\d)\.(.*)$", k):
        return f"blocks.{m.group(1)}.{_BRANCHES.get(m.group(2), m.group(2))}.{m.group(3)}"
    if m := re.match(r"^(aux\d)\.(.*)$", k):
        return f"aux_heads.{m.group(1)}.{m.group(2)}"
    # unknown keys pass through and are reported as unused
    return rename_prefix(k, {"fc.": "head.fc."}) or k
