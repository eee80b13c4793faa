"""ResNet and its whole lineage from one residual unit.

Covers the original ResNet (He et al., 2016, "Deep Residual Learning for Image Recognition"),
plain twins (no shortcut), every unit ordering of "Identity Mappings in Deep Residual Networks"
(He et al., 2016, Fig. 4 a-e), shortcut options A/B/C, Wide ResNet (Zagoruyko & Komodakis,
2016), SE-ResNet (Hu et al., 2018), residual scaling (Inception-ResNet), shortcut scaling,
block dropout and stochastic depth.

One :class:`ResidualUnit` implements every variant. Its three choices are made at
construction:

* *body*: a list of :class:`ConvSpec` (basic = two 3x3; bottleneck = 1x1, 3x3, 1x1 with
  expansion 4; the stride on the 3x3, torchvision's "v1.5", or on the first 1x1, the paper's);
* *ordering*: an :class:`Ordering` naming the ops before the body (``pre``), after its last conv
  (``tail``) and after the addition (``post_add``), plus the stem's and the final norm/act;
* *shortcut*: identity, zero-pad (A), projection (B where the shape changes, C everywhere) or
  none (plain net), all called as ``shortcut(x, pre(x))``.

The forward pass is the same for every variant::

    h = pre(x)
    y = residual_scale * drop_path(attn(body(h)))
    return post_add(y + shortcut_scale * shortcut(x, h))

SE placement: ``attn="se"`` puts a Squeeze-Excite gate on the residual branch, after its last
conv (and norm), before the addition, as in the SENet paper's SE-ResNet module.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .._registry import CIFAR_MEAN, CIFAR_STD, register_alias, register_model
from ..layers import (
    ClassifierHead,
    drop_path_or_identity,
    get_act_layer,
    get_attn_layer,
    get_norm_layer,
    scale_or_identity,
)
from ._base import ZooModel, init_weights
from ._builder import build, check_choice, check_positive, check_positive_ints, check_rate

# --------------------------------------------------------------------------------------------
# The three pluggable parts: body, ordering, shortcut.


@dataclass(frozen=True)
class ConvSpec:
    """One conv of a residual branch: kernel size, output width, groups, stride."""

    kernel: int
    width: int
    stride: int = 1
    groups: int = 1


def basic_body(width: int, stride: int) -> list[ConvSpec]:
    """Two 3x3 convs; the stride on the first."""
    return [ConvSpec(3, width, stride), ConvSpec(3, width)]


def bottleneck_body(width: int, stride: int, inner_mult: float = 1.0, groups: int = 1,
                    stride_on: str = "3x3", expansion: int = 4) -> list[ConvSpec]:
    """1x1 reduce, 3x3, 1x1 expand to ``expansion * width``."""
    inner = int(width * inner_mult) * groups if groups > 1 else int(width * inner_mult)
    s1, s3 = (stride, 1) if stride_on == "1x1" else (1, stride)
    return [ConvSpec(1, inner, s1), ConvSpec(3, inner, s3, groups), ConvSpec(1, width * expansion)]


@dataclass(frozen=True)
class Ordering:
    """Where BN ("norm") and ReLU ("act") sit around a residual unit.

    Between two convs of the body there is always norm -> act. ``pre`` runs on the unit's input
    (and feeds projection shortcuts), ``tail`` follows the body's last conv, ``post_add`` follows
    the addition. ``stem`` and ``final`` are the ops after the stem conv and before pooling.
    """

    name: str
    pre: tuple[str, ...]
    tail: tuple[str, ...]
    post_add: tuple[str, ...]
    stem: tuple[str, ...]
    final: tuple[str, ...]

    @property
    def zero_init_target(self) -> str:
        """What ``zero_init_last`` zeroes: the tail's norm if any, else the last conv."""
        return "norm" if "norm" in self.tail else "conv"

    @property
    def projection_has_norm(self) -> bool:
        # A full pre-activation unit's projection sees already-normalized input (Identity
        # Mappings, Sec. 4.1), so it is a bare 1x1 conv, as in the authors' code.
        return "norm" not in self.pre


ORDERINGS: dict[str, Ordering] = {o.name: o for o in (
    # Identity Mappings Fig. 4(a): the original unit.
    Ordering("post", pre=(), tail=("norm",), post_add=("act",), stem=("norm", "act"), final=()),
    # Fig. 4(b): BN after addition.
    Ordering("bn_after_add", pre=(), tail=(), post_add=("norm", "act"), stem=("norm", "act"),
             final=()),
    # Fig. 4(c): ReLU before addition.
    Ordering("relu_before_add", pre=(), tail=("norm", "act"), post_add=(), stem=("norm", "act"),
             final=()),
    # Fig. 4(d): ReLU-only pre-activation; a final ReLU before pooling.
    Ordering("relu_preact", pre=("act",), tail=("norm",), post_add=(), stem=("norm",),
             final=("act",)),
    # Fig. 4(e): full pre-activation; the final BN-ReLU before pooling.
    Ordering("preact", pre=("norm", "act"), tail=(), post_add=(), stem=(), final=("norm", "act")),
    # Not in the paper: the original unit whose branch also ends in a ReLU (before SE and the
    # addition), as the SE-ResNet-18/34 basic block of Cadene's SENet port (timm legacy_seresnet18/34).
    Ordering("relu_before_and_after_add", pre=(), tail=("norm", "act"), post_add=("act",),
             stem=("norm", "act"), final=()),
)}

SHORTCUTS = ("A", "B", "C", "none")
BLOCKS = ("basic", "bottleneck")
SHORTCUT_PADS = ("end", "both")  # where option A puts its zero channels
PROJECTION_INPUTS = ("pre", "raw")  # what a projection shortcut sees in a pre-activation unit
STEM_POOLS = ("pad", "ceil")  # the ImageNet stem's 3x3/2 max-pool: padding 1, or Caffe's ceil mode


def _ops(tokens: Sequence[str], channels: int, norm_layer, act_layer, prefix: str = "",
         keep_input: bool = False) -> nn.Module:
    """A Sequential of norm/act modules named ``norm``/``act`` (+ prefix), or Identity if empty.

    ``keep_input``: the input is used again afterwards (a unit's ``pre``, whose input the shortcut
    adds), so a leading activation must not work in place.
    """
    if not tokens:
        return nn.Identity()
    mods = OrderedDict()
    for i, t in enumerate(tokens):
        m = norm_layer(channels) if t == "norm" else act_layer()
        if i == 0 and keep_input and getattr(m, "inplace", False):
            # An in-place ReLU here rewrote x itself, so the shortcut added relu(x) instead of x:
            # Fig. 4(d) (ReLU-only pre-activation) computed exactly the original unit, Fig. 4(a).
            m.inplace = False
        mods[f"{t}{prefix}"] = m
    return nn.Sequential(mods)


class IdentityShortcut(nn.Module):
    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return x


class NoShortcut(nn.Module):
    """Plain network: nothing is added."""

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return torch.zeros((), dtype=x.dtype, device=x.device)


class ZeroPadShortcut(nn.Module):
    """Option A: strided identity, extra channels zero-padded; no parameters.

    ``placement="end"`` appends the zero channels after the input's; ``"both"`` puts half before
    and half after (the extra one after), as akamaster/pytorch_resnet_cifar10.
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int, placement: str = "end"):
        super().__init__()
        if out_chs < in_chs:
            raise ValueError(f"shortcut 'A' cannot reduce channels ({in_chs} -> {out_chs}); use 'B'")
        check_choice("shortcut_pad", placement, SHORTCUT_PADS)
        self.stride = stride
        pad = out_chs - in_chs
        self.pad = (pad // 2, pad - pad // 2) if placement == "both" else (0, pad)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, *self.pad)) if any(self.pad) else x


class ProjectionShortcut(nn.Module):
    """Options B/C: 1x1 conv (+ norm); takes the pre-activated input when the unit has one."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, norm_layer, use_pre: bool):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, 1, stride=stride, bias=False)
        self.norm = norm_layer(out_chs) if norm_layer is not None else nn.Identity()
        self.use_pre = use_pre

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(h if self.use_pre else x))


def make_shortcut(kind: str, in_chs: int, out_chs: int, stride: int, ordering: Ordering,
                  norm_layer, pad: str = "end", projection_input: str = "pre") -> nn.Module:
    """``pad``: option A's channel placement; ``projection_input``: ``"pre"`` (the unit's
    pre-activated input, Identity Mappings) or ``"raw"`` (its input, e.g. bearpaw's preresnet)."""
    same = in_chs == out_chs and stride == 1
    if kind == "none":
        return NoShortcut()
    if kind == "C" or (kind == "B" and not same):
        return ProjectionShortcut(in_chs, out_chs, stride,
                                  norm_layer if ordering.projection_has_norm else None,
                                  use_pre=bool(ordering.pre) and projection_input == "pre")
    if same:
        return IdentityShortcut()
    return ZeroPadShortcut(in_chs, out_chs, stride, pad)


# --------------------------------------------------------------------------------------------
# The unit.


class ResidualUnit(nn.Module):
    """One residual unit, any ordering, any body, any shortcut (see the module docstring)."""

    def __init__(self, in_chs: int, body: Sequence[ConvSpec], ordering: Ordering, shortcut: str,
                 norm_layer: Callable[[int], nn.Module], act_layer: Callable[[], nn.Module],
                 attn_layer: Callable[[int], nn.Module], block_dropout: float = 0.0,
                 drop_path: float = 0.0, residual_scale: float = 1.0, shortcut_scale: float = 1.0,
                 shortcut_pad: str = "end", projection_input: str = "pre"):
        super().__init__()
        out_chs = body[-1].width
        stride = max(c.stride for c in body)
        self.ordering = ordering
        # a trailing activation (relu_before_add) is saved by autograd: the sum must not rewrite it
        self._body_output_saved = bool(ordering.tail) and ordering.tail[-1] == "act"
        self.pre = _ops(ordering.pre, in_chs, norm_layer, act_layer, keep_input=True)
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        c = in_chs
        for i, spec in enumerate(body, 1):
            layers[f"conv{i}"] = nn.Conv2d(c, spec.width, spec.kernel, stride=spec.stride,
                                           padding=spec.kernel // 2, groups=spec.groups, bias=False)
            c = spec.width
            last = i == len(body)
            for t in ordering.tail if last else ("norm", "act"):
                layers[f"{t}{i}"] = norm_layer(c) if t == "norm" else act_layer()
            if not last and block_dropout > 0:
                layers[f"drop{i}"] = nn.Dropout(block_dropout)
        self.body = nn.Sequential(layers)
        self.attn = attn_layer(out_chs)
        self.drop_path = drop_path_or_identity(drop_path)
        self.residual_scale = scale_or_identity(residual_scale)
        self.shortcut = make_shortcut(shortcut, in_chs, out_chs, stride, ordering, norm_layer,
                                      shortcut_pad, projection_input)
        self.shortcut_scale = scale_or_identity(shortcut_scale)
        self.post_add = _ops(ordering.post_add, out_chs, norm_layer, act_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pre(x)
        y = self.residual_scale(self.drop_path(self.attn(self.body(h))))
        s = self.shortcut_scale(self.shortcut(x, h))
        if self._add_in_place(y, s):
            return self.post_add(y.add_(s))  # as torchvision's out += identity: no new tensor
        return self.post_add(y + s)

    def _add_in_place(self, y: torch.Tensor, s: torch.Tensor) -> bool:
        """Whether ``y += s`` computes ``y + s``: ``y`` (a new tensor: the body starts with a
        conv) has the sum's dtype and shape, and autograd either records nothing or has not
        saved ``y``, which only an activation at the end of the body does (a ReLU saves its
        output; a norm, a conv, the SE gate, drop path and scaling save their inputs)."""
        if torch.jit.is_tracing():
            return False  # a trace records one path: keep the plain sum (and no shape test in it)
        if torch.is_grad_enabled() and self._body_output_saved:
            return False
        return y.dtype == torch.result_type(y, s) and y.shape == torch.broadcast_shapes(y.shape, s.shape)

    def zero_init_last(self) -> None:
        """Make the residual branch output zero, so the unit starts as post_add(x)."""
        n = len([k for k in self.body._modules if k.startswith("conv")])
        if self.ordering.zero_init_target == "norm":
            norm = self.body._modules[f"norm{n}"]
            if getattr(norm, "weight", None) is not None:
                nn.init.zeros_(norm.weight)
                nn.init.zeros_(norm.bias)
                return
        nn.init.zeros_(self.body._modules[f"conv{n}"].weight)


# --------------------------------------------------------------------------------------------
# The network.


class ResNet(ZooModel):
    """A residual (or plain) network described by data: units per stage and stage widths.

    Args:
        layers: units per stage, e.g. ``(3, 4, 6, 3)``.
        widths: base width per stage (a bottleneck unit outputs ``4 * width``).
        block: ``"basic"`` or ``"bottleneck"``.
        unit: ordering: ``"post"``, ``"bn_after_add"``, ``"relu_before_add"``, ``"relu_preact"``,
            ``"preact"``.
        shortcut: ``"A"``, ``"B"``, ``"C"`` or ``"none"`` (plain twin).
        stem: ``"imagenet"`` (7x7/2 conv + 3x3/2 max-pool) or ``"cifar"`` (3x3 conv).
        stem_pool: the ImageNet stem's max-pool: ``"pad"`` (padding 1, torchvision) or ``"ceil"``
            (no padding, rounding up: Caffe's, in which SENet was released; timm legacy_seresnet*).
        stride_on: ``"3x3"`` (torchvision) or ``"1x1"`` (paper) for bottleneck downsampling.
        inner_mult: bottleneck inner-width multiplier (2 for ``wide_resnet50_2``).
        groups: groups of the bottleneck's 3x3 conv.
        residual_scale, shortcut_scale: constant multipliers of the two paths.
        block_dropout: dropout between the branch's convs (Wide ResNet).
        drop_path_rate: stochastic depth, linearly increasing over the units to this value.
        shortcut_pad: where option A puts its zero channels: ``"end"`` or ``"both"`` (half
            before, half after: akamaster/pytorch_resnet_cifar10).
        projection_input: what a projection shortcut of a pre-activation unit sees: ``"pre"``
            (the pre-activated input, Identity Mappings) or ``"raw"`` (bearpaw/pytorch-classification).
        attn, se_ratio: ``"se"`` for a Squeeze-Excite gate on each residual branch.
        se_divisor, se_bias: the gate's width rounded to a multiple of ``se_divisor`` (8: timm's
            ``seresnet*``), and whether its two FCs have biases (see :class:`~cnnzoo.layers.SqueezeExcite`).
        zero_init_last: start every unit's residual branch at zero.
        head, fc_hidden, fc_pool, drop_rate: see :class:`~cnnzoo.layers.ClassifierHead`.
    """

    def __init__(self, layers: Sequence[int] = (2, 2, 2, 2), widths: Sequence[int] = (64, 128, 256, 512),
                 block: str = "basic", unit: str = "post", shortcut: str = "B", stem: str = "imagenet",
                 stem_width: int = 64, stride_on: str = "3x3", inner_mult: float = 1.0, groups: int = 1,
                 num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.0,
                 attn: str | None = None, se_ratio: float = 1 / 16, norm_layer="bn", act_layer="relu",
                 head: str = "gap", fc_hidden: int = 4096, fc_pool: int = 7,
                 residual_scale: float = 1.0, shortcut_scale: float = 1.0, block_dropout: float = 0.0,
                 drop_path_rate: float = 0.0, zero_init_last: bool = False, stem_pool: str = "pad",
                 shortcut_pad: str = "end", projection_input: str = "pre", se_divisor: int = 1,
                 se_bias: bool = True):
        super().__init__()
        check_choice("unit", unit, ORDERINGS)
        check_choice("block", block, BLOCKS)
        check_choice("shortcut", shortcut, SHORTCUTS)
        check_choice("stem", stem, ("imagenet", "cifar"))
        check_choice("stride_on", stride_on, ("3x3", "1x1"))
        check_choice("stem_pool", stem_pool, STEM_POOLS)
        check_choice("shortcut_pad", shortcut_pad, SHORTCUT_PADS)
        check_choice("projection_input", projection_input, PROJECTION_INPUTS)
        layers, widths = check_positive_ints("layers", layers), check_positive_ints("widths", widths)
        if len(layers) != len(widths):
            raise ValueError(f"layers {layers} and widths {widths} must be equally long")
        for name, v in (("stem_width", stem_width), ("in_chans", in_chans), ("inner_mult", inner_mult),
                        ("groups", groups), ("se_ratio", se_ratio), ("residual_scale", residual_scale),
                        ("shortcut_scale", shortcut_scale)):
            check_positive(name, v)
        check_rate("block_dropout", block_dropout)
        check_rate("drop_path_rate", drop_path_rate)

        ordering = ORDERINGS[unit]
        norm = get_norm_layer(norm_layer)
        act = get_act_layer(act_layer)
        attn_layer = get_attn_layer(attn, rd_ratio=se_ratio, rd_divisor=se_divisor, bias=se_bias)
        self.num_classes = num_classes
        self.unit_type, self.block_type, self.shortcut_type = unit, block, shortcut

        stem_mods: OrderedDict[str, nn.Module] = OrderedDict()
        if stem == "imagenet":
            stem_mods["conv"] = nn.Conv2d(in_chans, stem_width, 7, stride=2, padding=3, bias=False)
        else:
            stem_mods["conv"] = nn.Conv2d(in_chans, stem_width, 3, stride=1, padding=1, bias=False)
        for t in ordering.stem:
            stem_mods[t] = norm(stem_width) if t == "norm" else act()
        if stem == "imagenet":
            stem_mods["pool"] = (nn.MaxPool2d(3, stride=2, padding=1) if stem_pool == "pad"
                                 else nn.MaxPool2d(3, stride=2, ceil_mode=True))
        self.stem = nn.Sequential(stem_mods)

        # The stage builder owns the schedules: strides, channel bookkeeping, drop-path rates.
        total = sum(layers)
        dpr = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        stages, c, k = [], stem_width, 0
        for si, (n, w) in enumerate(zip(layers, widths, strict=True)):
            units = []
            for ui in range(n):
                stride = 2 if (si > 0 and ui == 0) else 1
                body = (basic_body(w, stride) if block == "basic"
                        else bottleneck_body(w, stride, inner_mult, groups, stride_on))
                units.append(ResidualUnit(c, body, ordering, shortcut, norm, act, attn_layer,
                                          block_dropout, dpr[k], residual_scale, shortcut_scale,
                                          shortcut_pad, projection_input))
                c, k = body[-1].width, k + 1
            stages.append(nn.Sequential(*units))
        self.stages = nn.Sequential(*stages)
        self.num_features = c
        self.final = _ops(ordering.final, c, norm, act)
        self.head = ClassifierHead(c, num_classes, head=head, drop_rate=drop_rate, fc_hidden=fc_hidden,
                                   fc_pool=fc_pool, act_layer=act)
        init_weights(self)
        if zero_init_last:
            for m in self.modules():
                if isinstance(m, ResidualUnit):
                    m.zero_init_last()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.final(self.stages(self.stem(x)))


# --------------------------------------------------------------------------------------------
# Generic builders (any member of the lineage) and the registered names.

IMAGENET_DEPTHS = {
    18: ((2, 2, 2, 2), "basic"), 34: ((3, 4, 6, 3), "basic"), 50: ((3, 4, 6, 3), "bottleneck"),
    101: ((3, 4, 23, 3), "bottleneck"), 152: ((3, 8, 36, 3), "bottleneck"),
    200: ((3, 24, 36, 3), "bottleneck"),
}
_FIXED = ("layers", "stem")  # computed by the depth builders, not overridable through them


def build_imagenet_resnet(depth: int = 50, block: str | None = None, **kwargs) -> ResNet:
    """ImageNet ResNet of a standard depth (18, 34, 50, 101, 152, 200): 4 stages of 64-512."""
    if depth not in IMAGENET_DEPTHS:
        raise ValueError(f"ImageNet ResNet depth must be one of {sorted(IMAGENET_DEPTHS)}, got {depth!r}")
    layers, default_block = IMAGENET_DEPTHS[depth]
    return ResNet(layers=layers, block=block or default_block, stem="imagenet", **kwargs)


def build_cifar_resnet(depth: int = 20, block: str = "basic", width: float = 1, **kwargs) -> ResNet:
    """CIFAR ResNet (3 stages of 16/32/64 x ``width``, 3x3 stem): depth 6n+2 (basic) or 9n+2
    (bottleneck), n units per stage."""
    check_choice("block", block, BLOCKS)
    check_positive("width", width)
    per_unit = 2 if block == "basic" else 3
    if not isinstance(depth, int) or depth < 3 * per_unit + 2 or (depth - 2) % (3 * per_unit):
        rule = "6n+2 (20, 32, 44, 56, 110, ...)" if block == "basic" else "9n+2 (29, 56, 110, 164, ...)"
        raise ValueError(f"CIFAR ResNet depth with {block} units must be {rule}, got {depth!r}")
    n = (depth - 2) // (3 * per_unit)
    widths = tuple(int(round(w * width)) for w in (16, 32, 64))
    kwargs.setdefault("num_classes", 10)
    return ResNet(layers=(n, n, n), widths=kwargs.pop("widths", widths), block=block, stem="cifar",
                  stem_width=kwargs.pop("stem_width", 16), **kwargs)


def build_wrn(depth: int = 28, widen: int = 10, **kwargs) -> ResNet:
    """Wide ResNet WRN-``depth``-``widen`` (Zagoruyko & Komodakis): pre-activation basic units,
    widths 16k/32k/64k, depth 6n+4 (the two projection convs counted, as in the paper)."""
    check_positive("widen", widen)
    if not isinstance(depth, int) or depth < 10 or (depth - 4) % 6:
        raise ValueError(f"WRN depth must be 6n+4 (10, 16, 22, 28, 40, ...), got {depth!r}")
    n = (depth - 4) // 6
    kwargs.setdefault("num_classes", 10)
    kwargs.setdefault("unit", "preact")
    kwargs.setdefault("shortcut", "B")
    return ResNet(layers=(n, n, n), widths=tuple(w * widen for w in (16, 32, 64)), block="basic",
                  stem="cifar", stem_width=16, **kwargs)


def _imagenet(kw, **defaults):
    return build(build_imagenet_resnet, kw, extra=[ResNet], exclude=_FIXED, **defaults)


def _cifar(kw, **defaults):
    return build(build_cifar_resnet, kw, extra=[ResNet], exclude=_FIXED, **defaults)


def _wrn(kw, **defaults):
    return build(build_wrn, kw, extra=[ResNet], exclude=_FIXED + ("widths", "block", "stem_width"),
                 **defaults)


_HE = "He et al., Deep Residual Learning for Image Recognition, CVPR 2016"
_PRE = "He et al., Identity Mappings in Deep Residual Networks, ECCV 2016"
_WRN = "Zagoruyko & Komodakis, Wide Residual Networks, BMVC 2016"
_SE = "Hu et al., Squeeze-and-Excitation Networks, CVPR 2018"
_CIFAR = dict(input_size=(3, 32, 32), num_classes=10, mean=CIFAR_MEAN, std=CIFAR_STD)


# Generic builders, registered so that any member is one create_model call away.
@register_model(family="resnet", paper=_HE)
def resnet(**kw):
    """Generic ImageNet ResNet: ``create_model("resnet", depth=50, unit="preact", shortcut="C")``."""
    return _imagenet(kw)


@register_model(family="resnet", paper=_HE, **_CIFAR)
def cifar_resnet(**kw):
    """Generic CIFAR ResNet: ``create_model("cifar_resnet", depth=164, block="bottleneck")``."""
    return _cifar(kw)


@register_model(family="resnet", paper=_WRN, **_CIFAR)
def wrn(**kw):
    """Generic Wide ResNet: ``create_model("wrn", depth=22, widen=8, block_dropout=0.3)``."""
    return _wrn(kw)


_TV_COUNTS = {18: 11_689_512, 34: 21_797_672, 50: 25_557_032, 101: 44_549_160, 152: 60_192_808}


def _register_imagenet(depth: int, count: int) -> None:
    def fn(**kw):
        return _imagenet(kw, depth=depth)

    fn.__doc__ = f"ResNet-{depth} (post-activation, projection shortcuts B, torchvision layout)."
    register_model(fn, name=f"resnet{depth}", family="resnet", paper=_HE, params=count)

    def pre(**kw):
        return _imagenet(kw, depth=depth, unit="preact")

    pre.__doc__ = f"Pre-activation ResNet-{depth} (Identity Mappings Fig. 4e), projection shortcuts."
    register_model(pre, name=f"preact_resnet{depth}", family="resnet", paper=_PRE)
    register_alias(f"se_resnet{depth}", f"resnet{depth}", attn="se",
                   params=28_088_024 if depth == 50 else None)


for _d, _c in _TV_COUNTS.items():
    _register_imagenet(_d, _c)


def _register_plain_imagenet(depth: int) -> None:
    def fn(**kw):
        return _imagenet(kw, depth=depth, shortcut="none")

    fn.__doc__ = f"Plain-{depth}: ResNet-{depth} without shortcuts (ResNet paper, Fig. 3 middle)."
    register_model(fn, name=f"plain{depth}", family="resnet", paper=_HE)


for _d in (18, 34):
    _register_plain_imagenet(_d)


@register_model(family="resnet", paper=_WRN, params=68_883_240)
def wide_resnet50_2(**kw):
    """Wide ResNet-50-2 (torchvision): bottleneck inner width doubled, outputs unchanged."""
    return _imagenet(kw, depth=50, inner_mult=2.0)


_CIFAR_COUNTS = {20: 269_722, 32: 464_154, 44: 658_586, 56: 853_018, 110: 1_727_962,
                 1202: 19_421_274}


def _register_cifar(depth: int, count: int) -> None:
    def fn(**kw):
        return _cifar(kw, depth=depth, shortcut="A")

    fn.__doc__ = f"CIFAR ResNet-{depth} (ResNet paper Sec. 4.2: 3x{(depth - 2) // 6} basic units, option A)."
    register_model(fn, name=f"resnet{depth}", family="resnet", paper=_HE, params=count, **_CIFAR)
    if depth != 1202:
        def plain(**kw):
            return _cifar(kw, depth=depth, shortcut="none")

        plain.__doc__ = f"CIFAR plain-{depth}: ResNet-{depth} without shortcuts (ResNet paper Fig. 6)."
        register_model(plain, name=f"plain{depth}", family="resnet", paper=_HE, **_CIFAR)


for _d, _c in _CIFAR_COUNTS.items():
    _register_cifar(_d, _c)
for _d in (20, 32, 56, 110):
    register_alias(f"se_resnet{_d}", f"resnet{_d}", attn="se")


@register_model(family="resnet", paper=_PRE, **_CIFAR)
def preact_resnet110(**kw):
    """Pre-activation ResNet-110 (Fig. 4e), basic units, option A as the original ResNet-110."""
    return _cifar(kw, depth=110, unit="preact", shortcut="A")


# Identity Mappings Table 3 gives 1.7M and 10.2M. The faithful networks have 1,703,258 and
# 10,327,706 parameters; their conv/linear weights alone are 1,679,034 and 10,178,490, which is
# what the table's rounding matches (10.3M would be printed if BN's 149,216 affine parameters of
# ResNet-1001 were counted), so the published figures are checked against weights only.
@register_model(family="resnet", paper=_PRE, params=1_700_000, params_tol=50_000,
                params_scope="weights", **_CIFAR)
def preact_resnet164(**kw):
    """Pre-activation ResNet-164: bottleneck units, projection shortcuts (Identity Mappings Table 3).

    The stride is on the first 1x1 conv of a downsampling unit, as in the authors' code
    (KaimingHe/resnet-1k-layers); ``stride_on="3x3"`` moves it to the 3x3 conv.
    1,703,258 parameters (1,679,034 conv/linear weights; the paper's 1.7M)."""
    return _cifar(kw, depth=164, block="bottleneck", unit="preact", shortcut="B", stride_on="1x1")


@register_model(family="resnet", paper=_PRE, params=10_200_000, params_tol=50_000,
                params_scope="weights", **_CIFAR)
def preact_resnet1001(**kw):
    """Pre-activation ResNet-1001: bottleneck units, projection shortcuts (Identity Mappings Table 3).

    The stride is on the first 1x1 conv, as in the authors' code (see ``preact_resnet164``).
    10,327,706 parameters, of which 10,178,490 conv/linear weights: the paper's 10.2M."""
    return _cifar(kw, depth=1001, block="bottleneck", unit="preact", shortcut="B", stride_on="1x1")


_WRN_COUNTS = {(16, 4): 2_748_890, (16, 8): 10_961_370, (28, 10): 36_479_194, (40, 4): 8_949_210}


def _register_wrn(depth: int, widen: int, count: int) -> None:
    def fn(**kw):
        return _wrn(kw, depth=depth, widen=widen)

    widths = "/".join(str(w * widen) for w in (16, 32, 64))
    fn.__doc__ = f"WRN-{depth}-{widen}: pre-activation basic units, widths {widths}."
    register_model(fn, name=f"wrn{depth}_{widen}", family="resnet", paper=_WRN, params=count, **_CIFAR)


for (_d, _k), _c in _WRN_COUNTS.items():
    _register_wrn(_d, _k, _c)
