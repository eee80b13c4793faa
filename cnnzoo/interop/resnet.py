"""ResNet layouts: torchvision, timm (current and legacy SENet) and the public CIFAR ResNets.

* torchvision / timm: ``conv1``/``bn1`` stem, ``layerN.i.{convK,bnK}``, ``downsample.{0,1}``
  projections, timm's SE as ``se.fc1``/``se.fc2``, ``fc`` classifier. timm's ``seresnet*`` round
  the SE width to a multiple of 8 (``se_divisor=8``, read from the shapes).
* timm ``legacy_seresnet*``, the SENet authors' release as ported by Cadene: ``layer0.{conv1,bn1}``
  stem, ``se_module.fc1/fc2``, ``last_linear``; Caffe's ceil-mode stem pool (``stem_pool="ceil"``),
  the bottleneck stride on the first 1x1 (``stride_on="1x1"``), and in the 18/34-layer basic
  units a ReLU before SE (``unit="relu_before_and_after_add"``).
* akamaster/pytorch_resnet_cifar10: torchvision names with a ``linear`` classifier (some copies
  prefix ``compressible_``); option-A shortcuts pad the new channels on both sides
  (``shortcut_pad="both"``).
* bearpaw/pytorch-classification ``preresnet``: ``layerN.i.bn1`` is the unit's pre-activation,
  ``bn`` the final norm; its projections (``downsample.0``) take the raw input
  (``projection_input="raw"``) and its bottleneck strides on the 3x3.
* moskomule/senet.pytorch CIFAR SE-ResNets: torchvision names, SE as bias-free linear layers
  ``se.fc.0``/``se.fc.2`` (``se_bias=False``), B shortcuts.
* szagoruyko/wide-residual-networks (functional PyTorch code): ``conv0``,
  ``groupG.blockI.{bn0,conv0,bn1,conv1,convdim}``, ``bn``, ``fc``; conv keys without ``.weight``.
"""

from __future__ import annotations

import re

from ..layers.squeeze_excite import SqueezeExcite, se_width
from ..models.resnet import ResNet
from . import Layout, register_layout, register_shape_options, rename_prefix

_PREFIXES = {"conv1.": "stem.conv.", "bn1.": "stem.norm.", "fc.": "head.fc."}


def _unit(m: re.Match) -> str:
    return f"stages.{int(m.group(1)) - 1}.{m.group(2)}"


def resnet_key(k: str) -> str:
    if m := re.match(r"^layer(\d+)\.(\d+)\.conv(\d)\.(.*)$", k):
        return f"{_unit(m)}.body.conv{m.group(3)}.{m.group(4)}"
    if m := re.match(r"^layer(\d+)\.(\d+)\.bn(\d)\.(.*)$", k):
        return f"{_unit(m)}.body.norm{m.group(3)}.{m.group(4)}"
    if m := re.match(r"^layer(\d+)\.(\d+)\.(?:downsample|shortcut)\.([01])\.(.*)$", k):
        return f"{_unit(m)}.shortcut.{'conv' if m.group(3) == '0' else 'norm'}.{m.group(4)}"
    if m := re.match(r"^layer(\d+)\.(\d+)\.se\.(fc\d)\.(.*)$", k):
        return f"{_unit(m)}.attn.{m.group(3)}.{m.group(4)}"
    # unknown keys pass through and are reported as unused
    return rename_prefix(k, _PREFIXES) or k


def legacy_senet_key(k: str) -> str:
    k = rename_prefix(k, {"layer0.conv1.": "conv1.", "layer0.bn1.": "bn1.", "last_linear.": "fc."}) or k
    return resnet_key(k.replace(".se_module.", ".se."))


def akamaster_key(k: str) -> str:
    k = k.replace("compressible_", "")
    return resnet_key(rename_prefix(k, {"linear.": "fc."}) or k)


def bearpaw_key(k: str) -> str:
    if m := re.match(r"^layer(\d+)\.(\d+)\.bn1\.(.*)$", k):
        return f"{_unit(m)}.pre.norm.{m.group(3)}"
    if m := re.match(r"^layer(\d+)\.(\d+)\.bn(\d)\.(.*)$", k):  # bn2 follows conv1, bn3 conv2
        return f"{_unit(m)}.body.norm{int(m.group(3)) - 1}.{m.group(4)}"
    if m := re.match(r"^layer(\d+)\.(\d+)\.downsample\.0\.(.*)$", k):
        return f"{_unit(m)}.shortcut.conv.{m.group(3)}"
    if k.startswith("bn1."):  # a post-activation net's stem norm: not this layout
        return k
    return rename_prefix(k, {"conv1.": "stem.conv.", "bn.": "final.norm.", "fc.": "head.fc."}) or \
        resnet_key(k)


def moskomule_key(k: str) -> str:
    if m := re.match(r"^layer(\d+)\.(\d+)\.se\.fc\.([02])\.(.*)$", k):
        return f"{_unit(m)}.attn.fc{1 if m.group(3) == '0' else 2}.{m.group(4)}"
    return resnet_key(k)


def szagoruyko_key(k: str) -> str:
    if k == "conv0":
        return "stem.conv.weight"
    if m := re.match(r"^group(\d+)\.block(\d+)\.(.*)$", k):
        unit, rest = f"stages.{m.group(1)}.{m.group(2)}", m.group(3)
        names = {"conv0": "body.conv1.weight", "conv1": "body.conv2.weight",
                 "convdim": "shortcut.conv.weight"}
        if rest in names:
            return f"{unit}.{names[rest]}"
        if n := re.match(r"^bn([01])\.(.*)$", rest):
            return f"{unit}.{'pre.norm' if n.group(1) == '0' else 'body.norm1'}.{n.group(2)}"
    return rename_prefix(k, {"bn.": "final.norm.", "fc.": "head.fc."}) or k


def _legacy_options(state) -> dict:
    opts = {"stem_pool": "ceil", "stride_on": "1x1"}
    if not any(k.endswith("body.conv3.weight") for k in state):  # SE-ResNet-18/34: ReLU before SE
        opts["unit"] = "relu_before_and_after_add"
    return opts


register_layout(ResNet, Layout("torchvision", resnet_key))
register_layout(ResNet, Layout("timm", resnet_key))
register_layout(ResNet, Layout("timm", legacy_senet_key, options=_legacy_options, variant="legacy SENet"))
register_layout(ResNet, Layout("akamaster", akamaster_key, options={"shortcut_pad": "both"}))
register_layout(ResNet, Layout("bearpaw", bearpaw_key,
                               options={"projection_input": "raw", "stride_on": "3x3"}))
register_layout(ResNet, Layout("moskomule", moskomule_key))
register_layout(ResNet, Layout("szagoruyko", szagoruyko_key))


def _units(keys) -> set[str]:
    return {m.group(1) for k in keys if (m := re.match(r"^(stages\.\d+\.\d+)\.body\.conv1\.weight$", k))}


@register_shape_options(ResNet)
def resnet_shape_options(model: ResNet, state) -> dict:
    """SE width rounding and biases, and the shortcut kind, as far as they differ from ``model``."""
    opts: dict = {}
    modules = dict(model.named_modules())
    for name, m in modules.items():
        w = state.get(f"{name}.fc1.weight")
        if not isinstance(m, SqueezeExcite) or w is None:
            continue
        if f"{name}.fc1.bias" not in state and m.fc1.bias is not None:
            opts["se_bias"] = False
        if w.shape[0] != m.fc1.out_channels and w.shape[0] == se_width(w.shape[1], m.rd_ratio, 8):
            opts["se_divisor"] = 8
    units = _units(model.state_dict())
    theirs = {u for u in units if f"{u}.shortcut.conv.weight" in state}
    ours = {u for u in units if hasattr(modules[f"{u}.shortcut"], "conv")}
    if theirs != ours:
        opts["shortcut"] = "C" if theirs == units else "B" if theirs else "A"
    return opts
