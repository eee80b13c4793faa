"""torchvision VGG keys -> cnnzoo VGG keys.

cnnzoo's ``features`` keeps torchvision's flat layout (``features.N`` for the N-th conv, norm,
activation or pool), so those keys are unchanged whatever the configuration; only the classifier
is renamed: ``classifier.0`` / ``classifier.3`` / ``classifier.6`` (the two 4096-wide FCs and the
final linear) are ``head.pre_logits.fc1`` / ``head.pre_logits.fc2`` / ``head.fc``.
"""

from __future__ import annotations

import re

from ..models.vgg import VGG
from . import register_mapping

_CLASSIFIER = {"0": "head.pre_logits.fc1", "3": "head.pre_logits.fc2", "6": "head.fc"}


@register_mapping(VGG, "torchvision")
def vgg_key(k: str) -> str:
    if m := re.match(r"^classifier\.(\d+)\.(.*)$", k):
        if m.group(1) in _CLASSIFIER:
            return f"{_CLASSIFIER[m.group(1)]}.{m.group(2)}"
    return k  # features.* pass through; unknown keys are reported as unused
