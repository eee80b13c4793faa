"""VGG (Simonyan & Zisserman, 2015, "Very Deep Convolutional Networks for Large-Scale Image
Recognition"), configurations A-E of the paper's Table 1, with or without batch norm, and the
CIFAR form in common use.

A configuration is data: a sequence of conv widths and ``"M"`` (2x2 max-pool, stride 2). A plain
int is a 3x3 conv (padding 1, with bias, as in the paper); a :class:`Conv` entry states another
kernel, which configuration C needs for its 1x1 convs::

    "C": (64, 64, M, 128, 128, M, 256, 256, Conv(256, 1), M, 512, 512, Conv(512, 1), M, ...)

A *stage* is the run of convs up to and including its max-pool.

Layout: ``features`` is a flat ``nn.Sequential`` laid out exactly as torchvision's: per conv
``Conv2d``, then the norm (only when ``norm_layer`` is set), then the activation; per ``"M"`` one
``MaxPool2d``. This keeps every torchvision key (``features.N.weight``) unchanged, whatever the
configuration. The head is :class:`~cnnzoo.layers.ClassifierHead`: ``head="fc"`` (default) is the
paper's adaptive pool to 7x7 -> [FC 4096 -> ReLU -> dropout 0.5] x 2 -> linear; ``head="gap"``
is global average pooling -> linear.

SE placement: ``attn="se"`` puts one Squeeze-Excite gate at the end of each stage, after the
stage's last conv (and its norm and activation), before the stage's max-pool. It is one extra
entry in ``features`` just before each pool (there is none without ``attn``, so plain models keep
torchvision's indices).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn

from .._registry import CIFAR_MEAN, CIFAR_STD, register_alias, register_model
from ..layers import ClassifierHead, get_act_layer, get_attn_layer, get_norm_layer
from ._base import ZooModel, init_weights
from ._builder import build, check_positive, check_rate

M = "M"


@dataclass(frozen=True)
class Conv:
    """One conv entry of a VGG configuration: output width and (odd) kernel size."""

    width: int
    kernel: int = 3


# The paper's Table 1. Columns A (11 weight layers), B (13), C (16, with 1x1 convs in stages 3-5),
# D (16), E (19); the counts include the three FC layers.
VGG_CFGS: dict[str, tuple[int | str | Conv, ...]] = {
    "A": (64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M),
    "B": (64, 64, M, 128, 128, M, 256, 256, M, 512, 512, M, 512, 512, M),
    "C": (64, 64, M, 128, 128, M, 256, 256, Conv(256, 1), M, 512, 512, Conv(512, 1), M,
          512, 512, Conv(512, 1), M),
    "D": (64, 64, M, 128, 128, M, 256, 256, 256, M, 512, 512, 512, M, 512, 512, 512, M),
    "E": (64, 64, M, 128, 128, M, 256, 256, 256, 256, M, 512, 512, 512, 512, M,
          512, 512, 512, 512, M),
}


def _parse_cfg(cfg: str | Sequence[int | str | Conv], width: float) -> list[str | Conv]:
    """Resolve a configuration name or sequence into ``"M"`` and :class:`Conv` entries."""
    if isinstance(cfg, str):
        if cfg not in VGG_CFGS:
            raise ValueError(f"cfg={cfg!r} is not allowed; choose one of {sorted(VGG_CFGS)} or pass "
                             "a sequence of widths, Conv(width, kernel) and 'M'")
        cfg = VGG_CFGS[cfg]
    out: list[str | Conv] = []
    for v in cfg:
        if v == M:
            out.append(M)
            continue
        conv = Conv(v) if isinstance(v, int) and not isinstance(v, bool) else v
        if (not isinstance(conv, Conv) or not isinstance(conv.width, int) or conv.width <= 0
                or not isinstance(conv.kernel, int) or conv.kernel <= 0 or conv.kernel % 2 == 0):
            raise ValueError(f"VGG cfg entries must be 'M', a positive int or Conv(width, odd kernel), "
                             f"got {v!r}")
        out.append(Conv(max(1, int(round(conv.width * width))), conv.kernel))
    if not any(isinstance(v, Conv) for v in out):
        raise ValueError(f"VGG cfg needs at least one conv, got {tuple(cfg)!r}")
    return out


class VGG(ZooModel):
    """A VGG network described by its configuration (see the module docstring).

    Args:
        cfg: ``"A"``-``"E"`` (the paper's columns) or a sequence of widths, :class:`Conv` and ``"M"``.
        width: multiplier of every conv width (1.0: the paper's).
        norm_layer: ``None`` (the paper) or a norm after every conv (``"bn"``: the ``_bn`` models).
        act_layer: activation after every conv (and inside the FC head).
        attn, se_ratio: ``"se"`` for a Squeeze-Excite gate at the end of each stage, before its pool.
        head: ``"fc"`` (the paper's FC stack) or ``"gap"`` (global average pool + one linear).
        fc_hidden, fc_pool, fc_dropout: the FC head's hidden width (4096), pooled size (7) and
            dropout (0.5).
        drop_rate: dropout before the final linear layer (0: none, as in the paper).
    """

    def __init__(self, cfg: str | Sequence[int | str | Conv] = "D", num_classes: int = 1000,
                 in_chans: int = 3, width: float = 1.0, norm_layer=None, act_layer="relu",
                 attn: str | None = None, se_ratio: float = 1 / 16, head: str = "fc",
                 fc_hidden: int = 4096, fc_pool: int = 7, fc_dropout: float = 0.5,
                 drop_rate: float = 0.0):
        super().__init__()
        check_positive("width", width)
        check_positive("in_chans", in_chans)
        check_rate("fc_dropout", fc_dropout)
        entries = _parse_cfg(cfg, width)
        norm = get_norm_layer(norm_layer) if norm_layer is not None else None
        act = get_act_layer(act_layer)
        attn_layer = get_attn_layer(attn, rd_ratio=se_ratio)
        self.num_classes = num_classes

        # torchvision's flat layout (see the module docstring): conv, [norm], act per conv; the
        # stage's gate (only with attn) and pool per "M".
        layers: list[nn.Module] = []
        c = in_chans
        for v in entries:
            if v == M:
                if attn is not None:
                    layers.append(attn_layer(c))
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                continue
            layers.append(nn.Conv2d(c, v.width, v.kernel, padding=v.kernel // 2, bias=True))
            if norm is not None:
                layers.append(norm(v.width))
            layers.append(act())
            c = v.width
        if attn is not None and entries[-1] != M:  # a final stage without a pool still gets its gate
            layers.append(attn_layer(c))
        self.features = nn.Sequential(*layers)
        self.num_features = c
        self.head = ClassifierHead(c, num_classes, head=head, drop_rate=drop_rate, fc_hidden=fc_hidden,
                                   fc_pool=fc_pool, fc_dropout=fc_dropout, act_layer=act)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


# --------------------------------------------------------------------------------------------
# Registered names.

_VGG = "Simonyan & Zisserman, Very Deep Convolutional Networks for Large-Scale Image Recognition, ICLR 2015"
_CIFAR = dict(input_size=(3, 32, 32), num_classes=10, mean=CIFAR_MEAN, std=CIFAR_STD)
_FIXED = ("cfg",)  # set by the named builders, not overridable through them


def _vgg(kw, **defaults) -> VGG:
    return build(VGG, kw, exclude=_FIXED, **defaults)


@register_model(family="vgg", paper=_VGG)
def vgg(**kw):
    """Generic VGG: ``create_model("vgg", cfg="C", norm_layer="bn")`` or a custom ``cfg`` sequence."""
    return build(VGG, kw)


# name -> (configuration, parameter count without BN, with BN); torchvision meta / recomputed.
_IMAGENET = {
    "vgg11": ("A", 132_863_336, 132_868_840),
    "vgg13": ("B", 133_047_848, 133_053_736),
    "vgg16c": ("C", 133_638_952, 133_647_400),
    "vgg16": ("D", 138_357_544, 138_365_992),
    "vgg19": ("E", 143_667_240, 143_678_248),
}


def _register_imagenet(name: str, cfg: str, count: int, count_bn: int) -> None:
    depth = sum(1 for v in VGG_CFGS[cfg] if v != M) + 3

    def fn(**kw):
        return _vgg(kw, cfg=cfg)

    fn.__doc__ = f"VGG-{depth}, configuration {cfg} of the paper's Table 1, FC head."
    register_model(fn, name=name, family="vgg", paper=_VGG, params=count)

    def fn_bn(**kw):
        return _vgg(kw, cfg=cfg, norm_layer="bn")

    fn_bn.__doc__ = f"VGG-{depth} (configuration {cfg}) with BN after every conv (conv biases kept)."
    register_model(fn_bn, name=f"{name}_bn", family="vgg", paper=_VGG, params=count_bn)


for _n, (_cfg, _c, _cb) in _IMAGENET.items():
    _register_imagenet(_n, _cfg, _c, _cb)

# CIFAR form as in common use (e.g. the widely used pytorch-cifar VGG): the ImageNet
# configuration with BN; a 32x32 input leaves a 1x1 map after the five pools, so the FC stack
# gives way to global pooling and one linear layer (512 -> classes).
_CIFAR_COUNTS = {"A": 9_231_114, "B": 9_416_010, "D": 14_728_266, "E": 20_040_522}


def _register_cifar(depth: int, cfg: str, count: int) -> None:
    def fn(**kw):
        return _vgg(kw, cfg=cfg, norm_layer="bn", head="gap", num_classes=10)

    fn.__doc__ = (f"CIFAR VGG-{depth} (32x32 inputs): configuration {cfg} with BN after every conv, "
                  "global average pooling and one linear layer (``head='gap'``), 10 classes.")
    register_model(fn, name=f"cifar_vgg{depth}", family="vgg", paper=_VGG, params=count, **_CIFAR)


for _d, _cfg in ((11, "A"), (13, "B"), (16, "D"), (19, "E")):
    _register_cifar(_d, _cfg, _CIFAR_COUNTS[_cfg])

register_alias("se_vgg16", "vgg16", attn="se")
register_alias("se_vgg16_bn", "vgg16_bn", attn="se")
register_alias("se_cifar_vgg16", "cifar_vgg16", attn="se")
