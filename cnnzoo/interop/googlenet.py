"""GoogLeNet layouts: torchvision (``googlenet_tv``) and kuangliu/pytorch-cifar (``cifar_googlenet``).

torchvision: ``conv1..3`` stem, ``inceptionXY.branch{1..4}`` (branch 2 and 3: ``0`` reduce,
``1`` conv; branch 4: ``0`` the max-pool, ``1`` the projection), every conv a ``{conv, bn}``
pair, ``aux{1,2}.{conv, fc1, fc2}``, ``fc`` classifier. Auxiliary-head tensors are dropped when
the model has no auxiliary heads, as torchvision's own loader does.

kuangliu/pytorch-cifar: ``pre_layers.{0,1}`` (3x3 conv 192, BN), modules ``a3, b3, a4 ... b5``,
each with branches ``b1`` (``0`` conv, ``1`` BN), ``b2`` (``0,1`` and ``3,4``), ``b3`` (``0,1``,
``3,4``, ``6,7``: the 5x5 as two 3x3 of #5x5 channels, ``factorize_5x5=True``) and ``b4``
(``0`` the max-pool, ``1,2``), ``linear``. Its convs have biases before BN: each bias is folded into
the BN's running mean (exact: BN subtracts it again). Its pools between stages pad by 1
(``stage_pool="pad"``).
"""

from __future__ import annotations

import re

from ..models.googlenet import GoogLeNet
from . import Layout, register_layout, register_shape_options, rename_prefix

_BRANCHES = {"branch1": "branch1x1", "branch2": "branch3x3", "branch3": "branch5x5", "branch4": "branch_pool"}


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


def _drop_aux_if_absent(state, own):
    if any(k.startswith("aux_heads.") for k in own):
        return state
    return {k: v for k, v in state.items() if not k.startswith("aux_heads.")}


# kuangliu's Sequential index -> (cnnzoo branch, conv index in the branch, conv or norm)
_KL_BRANCH = {"b1": "branch1x1", "b2": "branch3x3", "b3": "branch5x5", "b4": "branch_pool"}


def kuangliu_key(k: str) -> str:
    if m := re.match(r"^pre_layers\.([01])\.(.*)$", k):
        return f"stem.conv1.{'conv' if m.group(1) == '0' else 'norm'}.{m.group(2)}"
    if m := re.match(r"^([a-e])([345])\.(b[1-4])\.(\d+)\.(.*)$", k):
        letter, stage, branch, idx, rest = m.groups()
        i = int(idx) - (1 if branch == "b4" else 0)  # b4 starts with its max-pool
        kind = "conv" if i % 3 == 0 else "norm"
        prefix = f"blocks.inception{stage}{letter}.{_KL_BRANCH[branch]}"
        if branch == "b1":
            return f"{prefix}.{kind}.{rest}"
        return f"{prefix}.{i // 3 + (1 if branch == 'b4' else 0)}.{kind}.{rest}"
    return rename_prefix(k, {"linear.": "head.fc."}) or k


def fold_conv_bias(state, own):
    """A conv bias followed by BN, where the model's conv has none: folded into the BN's running
    mean (``BN(Wx + b)`` with mean ``m`` is ``BN(Wx)`` with mean ``m - b``)."""
    out = dict(state)
    for k in list(state):
        if not k.endswith(".conv.bias") or k in own:
            continue
        mean = k[: -len(".conv.bias")] + ".norm.running_mean"
        if mean in out and out[mean].shape == state[k].shape:
            out[mean] = out[mean] - out.pop(k)
    return out


register_layout(GoogLeNet, Layout("torchvision", googlenet_key, transform=_drop_aux_if_absent))
register_layout(GoogLeNet, Layout("kuangliu", kuangliu_key, transform=fold_conv_bias,
                                  options={"stage_pool": "pad"}))


@register_shape_options(GoogLeNet)
def googlenet_shape_options(model: GoogLeNet, state) -> dict:
    """Factorized 5x5 branches (and their middle width), where they differ from ``model``'s."""
    name = next(iter(model.blocks._modules))
    if not name.startswith("inception"):
        return {}
    ours = f"blocks.{name}.branch5x5.2.conv.weight" in model.state_dict()
    mid = state.get(f"blocks.{name}.branch5x5.1.conv.weight")
    if f"blocks.{name}.branch5x5.2.conv.weight" not in state or ours or mid is None:
        return {}
    reduce = model.blocks.get_submodule(name).branch5x5[0].conv.out_channels
    return {"factorize_5x5": True, "factorize_width": "in" if mid.shape[0] == reduce else "out"}
