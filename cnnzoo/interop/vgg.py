"""VGG layouts: torchvision, timm and kuangliu/pytorch-cifar.

cnnzoo's ``features`` keeps torchvision's flat layout (``features.N`` for the N-th conv, norm,
activation or pool), so those keys are unchanged whatever the configuration, in all three
sources; only the classifier differs:

* torchvision: ``classifier.0`` / ``classifier.3`` / ``classifier.6`` (the two 4096-wide FCs and
  the final linear) are ``head.pre_logits.fc1`` / ``head.pre_logits.fc2`` / ``head.fc``;
* timm: ``pre_logits.fc1`` (the first FC as a 7x7 conv: reshaped to a linear layer's weight),
  ``pre_logits.fc2`` (a 1x1 conv), ``head.fc``;
* kuangliu/pytorch-cifar: one ``classifier`` linear layer after global pooling (``cifar_vgg*``).
"""

from __future__ import annotations

import re

from ..models.vgg import VGG
from . import Layout, register_layout, register_shape_options, rename_prefix

_CLASSIFIER = {"0": "head.pre_logits.fc1", "3": "head.pre_logits.fc2", "6": "head.fc"}


def vgg_key(k: str) -> str:
    if m := re.match(r"^classifier\.(\d+)\.(.*)$", k):
        if m.group(1) in _CLASSIFIER:
            return f"{_CLASSIFIER[m.group(1)]}.{m.group(2)}"
    return k  # features.* pass through; unknown keys are reported as unused


def timm_vgg_key(k: str) -> str:
    return rename_prefix(k, {"pre_logits.": "head.pre_logits."}) or k


def flatten_conv_fc(state, own):
    """timm's first FC, a 7x7 conv over the pooled 7x7 map, as the linear layer it equals."""
    k = "head.pre_logits.fc1.weight"
    if k in state and k in own and state[k].ndim == 4 and state[k].numel() == own[k].numel():
        return {**state, k: state[k].reshape(own[k])}
    return state


register_layout(VGG, Layout("torchvision", vgg_key))
register_layout(VGG, Layout("timm", timm_vgg_key, transform=flatten_conv_fc))
register_layout(VGG, Layout("kuangliu", lambda k: rename_prefix(k, {"classifier.": "head.fc."}) or k))


@register_shape_options(VGG)
def vgg_shape_options(model: VGG, state) -> dict:
    """The FC head's hidden width, where it differs from ``model``'s."""
    w = state.get("head.pre_logits.fc2.weight")
    fc_head = getattr(model.head, "head_type", None) == "fc"
    if w is not None and fc_head and w.shape[0] != model.head.num_features:
        return {"fc_hidden": int(w.shape[0])}
    return {}
