"""DenseNet (Huang et al., 2017, "Densely Connected Convolutional Networks"): the ImageNet
DenseNet-BC models (121/161/169/201, torchvision layout) and the paper's CIFAR models, with and
without bottleneck (B) and compression (C).

A DenseNet is data: growth rate ``k``, layers per dense block, stem width. Each dense layer sees
the concatenation of all earlier feature maps of its block and adds ``k`` new ones:

* DenseNet-B layer: BN-ReLU-Conv1x1 (to ``bn_size * k``, 4k in the paper) -> BN-ReLU-Conv3x3 (to k);
* plain DenseNet layer (``bottleneck=False``): BN-ReLU-Conv3x3 (to k).

Between blocks a transition BN-ReLU-Conv1x1-AvgPool2x2 keeps ``floor(compression * m)`` of its
``m`` channels (``compression=0.5``: DenseNet-C; 1: none). After the last block: BN-ReLU, then
the head (``head="gap"``: global average pooling + linear, the paper's; ``head="fc"``: VGG's FC
stack). A *stage* is one dense block and the transition after it (none after the last).

Module names: ``stem``, ``stages.i.layers.j.{conv1,conv2}`` (each a
:class:`~cnnzoo.layers.NormActConv`; ``conv1`` is the one applied to the concatenation),
``stages.i.transition``, ``final``, ``head``.

Options beyond the paper:

* ``layer_drop_rate``: dropout on each dense layer's new features (torchvision's ``drop_rate``;
  the paper's dropout after each conv for CIFAR without augmentation). cnnzoo's ``drop_rate``
  is, as in every family, the dropout before the classifier.
* ``memory_efficient``: recompute each layer's concatenation-BN-ReLU-``conv1`` (and, in
  DenseNet-B, the 3x3's BN-ReLU) in the backward pass (``torch.utils.checkpoint``) instead of
  storing it, so memory grows linearly with depth rather than quadratically (Pleiss et al.,
  2017); a layer keeps only its last conv's input and its new features. Outputs and gradients
  equal the default path's; the recomputation does not update BN running statistics a second time.

SE placement: ``attn="se"`` puts a Squeeze-Excite gate on each dense layer's ``k`` new feature
maps, after its last conv, before they are concatenated to the block's features (and before
``layer_drop_rate`` dropout).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from contextlib import contextmanager, nullcontext

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from .._registry import CIFAR_MEAN, CIFAR_STD, register_alias, register_model
from ..layers import ClassifierHead, NormActConv, get_act_layer, get_attn_layer, get_norm_layer
from ._base import ZooModel, init_weights
from ._builder import build, check_choice, check_positive, check_positive_int, check_positive_ints, check_rate


@contextmanager
def _buffers_restored(module: nn.Module):
    """Run a block and put ``module``'s buffers (BN running stats) back as they were.

    Used around the checkpoint's recomputation, so a memory-efficient training step updates
    running statistics exactly once, as the default path does.
    """
    saved = [(b, b.detach().clone()) for b in module.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, v in saved:
                b.copy_(v)


class DenseLayer(nn.Module):
    """One dense layer: ``k`` new feature maps from the concatenation of its inputs.

    ``conv1`` acts on the concatenation (the 1x1 bottleneck in DenseNet-B, else the 3x3);
    ``conv2`` is the 3x3 after a bottleneck (``nn.Identity`` without one).
    """

    def __init__(self, in_chs: int, growth_rate: int, bn_size: int | None, norm_layer, act_layer,
                 attn_layer, layer_drop_rate: float = 0.0, memory_efficient: bool = False):
        super().__init__()
        if bn_size:
            inner = bn_size * growth_rate
            self.conv1 = NormActConv(in_chs, inner, 1, norm_layer=norm_layer, act_layer=act_layer)
            self.conv2 = NormActConv(inner, growth_rate, 3, norm_layer=norm_layer, act_layer=act_layer)
        else:
            self.conv1 = NormActConv(in_chs, growth_rate, 3, norm_layer=norm_layer, act_layer=act_layer)
            self.conv2 = nn.Identity()
        self.attn = attn_layer(growth_rate)
        self.drop = nn.Dropout(layer_drop_rate) if layer_drop_rate > 0 else nn.Identity()
        self.memory_efficient = memory_efficient

    def _recomputed(self, *features: torch.Tensor) -> torch.Tensor:
        """What ``memory_efficient`` recomputes: the concatenation, BN-ReLU-``conv1`` and, after a
        bottleneck, the 3x3's BN-ReLU; all of it but the last conv, whose input is kept."""
        h = self.conv1(torch.cat(features, 1))
        return self.conv2.act(self.conv2.norm(h)) if isinstance(self.conv2, NormActConv) else h

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        if (self.memory_efficient and torch.is_grad_enabled()
                and any(f.requires_grad for f in features)):
            h = checkpoint(self._recomputed, *features, use_reentrant=False,
                           context_fn=lambda: (nullcontext(), _buffers_restored(self)))
            h = self.conv2.conv(h) if isinstance(self.conv2, NormActConv) else h
        else:
            h = self.conv2(self.conv1(torch.cat(features, 1)))
        return self.drop(self.attn(h))


class Transition(nn.Sequential):
    """BN-ReLU-Conv1x1-AvgPool2x2 between two dense blocks (``norm``, ``act``, ``conv``, ``pool``)."""

    def __init__(self, in_chs: int, out_chs: int, norm_layer, act_layer):
        super().__init__(OrderedDict(
            norm=norm_layer(in_chs),
            act=act_layer(),
            conv=nn.Conv2d(in_chs, out_chs, 1, bias=False),
            pool=nn.AvgPool2d(kernel_size=2, stride=2),
        ))


class DenseStage(nn.Module):
    """A dense block (``layers``) and the transition after it (``nn.Identity`` after the last)."""

    def __init__(self, layers: Sequence[DenseLayer], transition: nn.Module):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.transition = transition

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.layers:
            features.append(layer(features))
        out = torch.cat(features, 1)
        # Let the block's new feature maps go before the transition runs, as torchvision's separate
        # block and transition modules do: otherwise they live on beside their concatenation (38.5
        # MB in densenet121's first block at batch 16, 224x224) and raise the peak memory: the one
        # difference found behind an eager channels-last run at 0.94x of torchvision's
        # (docs/performance.md, "DenseNet-121").
        del features, x
        return self.transition(out)


class DenseNet(ZooModel):
    """A DenseNet described by data (see the module docstring).

    Args:
        growth_rate: ``k``, new feature maps per dense layer.
        block_config: dense layers per block, e.g. ``(6, 12, 24, 16)``.
        stem: ``"imagenet"`` (7x7/2 conv, BN-ReLU, 3x3/2 max-pool) or ``"cifar"`` (one 3x3 conv;
            the first dense layer's BN-ReLU follows it).
        stem_width: stem output channels; default ``2 * growth_rate``.
        bottleneck, bn_size: DenseNet-B's 1x1 conv to ``bn_size * k`` channels (4k).
        compression: fraction of channels a transition keeps (0.5: DenseNet-C; 1: none).
        drop_rate: dropout before the classifier.
        layer_drop_rate: dropout on each dense layer's new features (torchvision's ``drop_rate``).
        memory_efficient: checkpoint each layer's concatenation-BN-ReLU-conv1, and in DenseNet-B
            the 3x3's BN-ReLU (same results, less memory, more compute).
        attn, se_ratio: ``"se"`` for a Squeeze-Excite gate on each dense layer's new features.
        head, fc_hidden, fc_pool: see :class:`~cnnzoo.layers.ClassifierHead`.
    """

    def __init__(self, growth_rate: int = 32, block_config: Sequence[int] = (6, 12, 24, 16),
                 stem: str = "imagenet", stem_width: int | None = None, bottleneck: bool = True,
                 bn_size: int = 4, compression: float = 0.5, num_classes: int = 1000, in_chans: int = 3,
                 drop_rate: float = 0.0, layer_drop_rate: float = 0.0, memory_efficient: bool = False,
                 attn: str | None = None, se_ratio: float = 1 / 16, norm_layer="bn", act_layer="relu",
                 head: str = "gap", fc_hidden: int = 4096, fc_pool: int = 7):
        super().__init__()
        check_choice("stem", stem, ("imagenet", "cifar"))
        for name, v in (("growth_rate", growth_rate), ("bn_size", bn_size), ("in_chans", in_chans)):
            check_positive_int(name, v)
        if stem_width is None:
            stem_width = 2 * growth_rate
        check_positive_int("stem_width", stem_width)
        block_config = check_positive_ints("block_config", block_config)
        check_positive("compression", compression)
        if compression > 1:
            raise ValueError(f"compression must be in (0, 1], got {compression!r}")
        check_rate("layer_drop_rate", layer_drop_rate)

        norm = get_norm_layer(norm_layer)
        act = get_act_layer(act_layer)
        attn_layer = get_attn_layer(attn, rd_ratio=se_ratio)
        self.num_classes = num_classes
        self.growth_rate = growth_rate

        if stem == "imagenet":
            self.stem = nn.Sequential(OrderedDict(
                conv=nn.Conv2d(in_chans, stem_width, 7, stride=2, padding=3, bias=False),
                norm=norm(stem_width),
                act=act(),
                pool=nn.MaxPool2d(3, stride=2, padding=1),
            ))
        else:
            self.stem = nn.Sequential(OrderedDict(
                conv=nn.Conv2d(in_chans, stem_width, 3, padding=1, bias=False)))

        # The stage builder owns the channel bookkeeping.
        stages, c = [], stem_width
        for i, n in enumerate(block_config):
            layers = []
            for _ in range(n):
                layers.append(DenseLayer(c, growth_rate, bn_size if bottleneck else None, norm, act,
                                         attn_layer, layer_drop_rate, memory_efficient))
                c += growth_rate
            if i < len(block_config) - 1:
                out = int(c * compression)  # floor(theta * m), the paper's rule
                transition, c = Transition(c, out, norm, act), out
            else:
                transition = nn.Identity()
            stages.append(DenseStage(layers, transition))
        self.stages = nn.Sequential(*stages)
        self.num_features = c
        self.final = nn.Sequential(OrderedDict(norm=norm(c), act=act()))
        self.head = ClassifierHead(c, num_classes, head=head, drop_rate=drop_rate, fc_hidden=fc_hidden,
                                   fc_pool=fc_pool, act_layer=act)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.final(self.stages(self.stem(x)))


# --------------------------------------------------------------------------------------------
# Generic builders and the registered names.

IMAGENET_CONFIGS = {  # depth -> (growth rate, layers per block); stem width 2k (64, or 96 for 161)
    121: (32, (6, 12, 24, 16)), 161: (48, (6, 12, 36, 24)), 169: (32, (6, 12, 32, 32)),
    201: (32, (6, 12, 48, 32)),
}
_STRUCTURE = ("block_config", "stem", "bottleneck")  # computed by the depth builders


def build_imagenet_densenet(depth: int = 121, **kwargs) -> DenseNet:
    """ImageNet DenseNet-BC of a standard depth (121, 161, 169, 201), torchvision layout."""
    if depth not in IMAGENET_CONFIGS:
        raise ValueError(f"ImageNet DenseNet depth must be one of {sorted(IMAGENET_CONFIGS)}, got {depth!r}")
    k, blocks = IMAGENET_CONFIGS[depth]
    kwargs.setdefault("growth_rate", k)
    return DenseNet(block_config=blocks, stem="imagenet", bottleneck=True, **kwargs)


def build_cifar_densenet(depth: int = 40, growth_rate: int = 12, bc: bool = False, **kwargs) -> DenseNet:
    """CIFAR DenseNet of the paper (Sec. 3): three equal dense blocks after a 3x3 conv.

    ``bc=False``: plain layers (BN-ReLU-Conv3x3), no compression, 16-channel first conv, depth
    ``3n + 4``. ``bc=True`` (DenseNet-BC): bottleneck layers, compression 0.5, first conv ``2k``
    channels, depth ``6n + 4``. The depth counts the first conv, the two transition convs and the
    classifier.
    """
    per_layer = 6 if bc else 3
    if not isinstance(depth, int) or depth < per_layer + 4 or (depth - 4) % per_layer:
        rule = "6n+4 (22, 40, 100, 190, 250, ...)" if bc else "3n+4 (13, 40, 100, ...)"
        raise ValueError(f"CIFAR DenseNet{'-BC' if bc else ''} depth must be {rule}, got {depth!r}")
    check_positive_int("growth_rate", growth_rate)
    n = (depth - 4) // per_layer
    kwargs.setdefault("num_classes", 10)
    kwargs.setdefault("compression", 0.5 if bc else 1.0)
    kwargs.setdefault("stem_width", 2 * growth_rate if bc else 16)
    return DenseNet(growth_rate=growth_rate, block_config=(n, n, n), stem="cifar", bottleneck=bc,
                    **kwargs)


_DN = "Huang et al., Densely Connected Convolutional Networks, CVPR 2017"
_CIFAR = dict(input_size=(3, 32, 32), num_classes=10, mean=CIFAR_MEAN, std=CIFAR_STD)


@register_model(family="densenet", paper=_DN)
def densenet(**kw):
    """Generic DenseNet, every option open (defaults: DenseNet-121):
    ``create_model("densenet", growth_rate=24, block_config=(6, 12, 32, 32), memory_efficient=True)``."""
    return build(DenseNet, kw)


@register_model(family="densenet", paper=_DN, **_CIFAR)
def cifar_densenet(**kw):
    """Generic CIFAR DenseNet by depth:
    ``create_model("cifar_densenet", depth=100, growth_rate=12, bc=True)``."""
    return build(build_cifar_densenet, kw, extra=[DenseNet], exclude=_STRUCTURE)


# Named models fix their structure (depth, blocks, bottleneck, stem); other options stay open.
def _imagenet(kw, **defaults):
    return build(build_imagenet_densenet, kw, extra=[DenseNet], exclude=_STRUCTURE + ("depth",),
                 **defaults)


def _cifar(kw, **defaults):
    return build(build_cifar_densenet, kw, extra=[DenseNet], exclude=_STRUCTURE + ("depth", "bc"),
                 **defaults)


_TV_COUNTS = {121: 7_978_856, 161: 28_681_000, 169: 14_149_480, 201: 20_013_928}


def _register_imagenet(depth: int, count: int) -> None:
    k, blocks = IMAGENET_CONFIGS[depth]

    def fn(**kw):
        return _imagenet(kw, depth=depth)

    fn.__doc__ = (f"DenseNet-{depth} (DenseNet-BC, k={k}, blocks {blocks}, compression 0.5; "
                  "torchvision layout).")
    register_model(fn, name=f"densenet{depth}", family="densenet", paper=_DN, params=count)


for _d, _c in _TV_COUNTS.items():
    _register_imagenet(_d, _c)

# The paper's Table 2 counts (CIFAR-10, so 10 classes), rounded to 0.1M. The faithful models
# (convs without bias, floor(0.5 m) transitions) give 1,019,722 / 6,979,642 / 27,249,082 and
# 769,162 / 15,324,406 / 25,624,430: all round to the published figures. (100 classes add
# 2,574 to 207,000 parameters.)
_CIFAR_MODELS = {
    # name: (depth, k, bc, published count)
    "densenet40_12": (40, 12, False, 1_000_000),
    "densenet100_12": (100, 12, False, 7_000_000),
    "densenet100_24": (100, 24, False, 27_200_000),
    "densenet_bc_100_12": (100, 12, True, 800_000),
    "densenet_bc_250_24": (250, 24, True, 15_300_000),
    "densenet_bc_190_40": (190, 40, True, 25_600_000),
}


def _register_cifar(name: str, depth: int, k: int, bc: bool, count: int) -> None:
    def fn(**kw):
        return _cifar(kw, depth=depth, growth_rate=k, bc=bc)

    kind = "DenseNet-BC (bottleneck, compression 0.5)" if bc else "DenseNet (no bottleneck, no compression)"
    fn.__doc__ = (f"CIFAR {kind}, L={depth}, k={k}: 3 blocks of {(depth - 4) // (6 if bc else 3)} "
                  f"layers (paper Table 2: {count / 1e6:.1f}M parameters).")
    register_model(fn, name=name, family="densenet", paper=_DN, params=count, params_tol=50_000, **_CIFAR)


for _n, (_d, _k, _bc, _c) in _CIFAR_MODELS.items():
    _register_cifar(_n, _d, _k, _bc, _c)

register_alias("se_densenet121", "densenet121", attn="se")
register_alias("se_densenet_bc_100_12", "densenet_bc_100_12", attn="se")
