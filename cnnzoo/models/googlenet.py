"""GoogLeNet (Inception v1) from the rows of the paper's Table 1.

Szegedy et al., 2015, "Going Deeper with Convolutions". The nine Inception modules (3a, 3b,
4a-4e, 5a, 5b) are data, :data:`INCEPTION_V1`, one :class:`InceptionRow` per row of Table 1
(#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj); a loop turns them into modules and
puts a max-pool wherever the stage number changes (3 -> 4 -> 5).

Every Inception module concatenates four branches, in the paper's column order::

    branch1x1:   1x1 conv #1x1
    branch3x3:   1x1 conv #3x3 reduce -> 3x3 conv #3x3
    branch5x5:   1x1 conv #5x5 reduce -> 5x5 conv #5x5          (default, as the paper)
                 1x1 conv #5x5 reduce -> 3x3 conv m -> 3x3 conv #5x5   (factorize_5x5=True)
    branch_pool: 3x3/1 max-pool -> 1x1 conv pool proj

and every conv is :class:`~cnnzoo.layers.ConvNormAct` (conv -> norm -> ReLU).

SE placement: ``attn="se"`` puts one Squeeze-Excite gate (reduction ``se_ratio``) on each
Inception module's concatenated output, after the concatenation, before the next module.

Options that change the paper network:

* ``norm``: the paper has no batch norm (2014); the default ``"bn"`` adds BN after every conv
  (convs then drop their bias). ``norm`` and the common ``norm_layer`` override are one option
  under two names: give either (``norm=None``, ``norm="none"`` or ``norm_layer=None``: no norm,
  convs with bias, as the paper); giving both with different values raises ``ValueError``.
* ``factorize_5x5``: two stacked 3x3 convs in the 5x5 branch (Inception-v2/v3); same 5x5
  receptive field. The intermediate width ``m`` is ``factorize_width``: ``"out"`` (default,
  ``m = #5x5``, as BN-Inception's "double 3x3" branch) or ``"in"`` (``m = #5x5 reduce``). With
  equal input and output widths two 3x3 convs have 18/25 of the weights of one 5x5, but in
  GoogLeNet #5x5 reduce (r) is narrower than #5x5 (c): the branch costs ``9m(r + c)`` weights
  against ``25rc``, so ``"out"`` costs 1.08-1.8x the 5x5 (9(r+c)/25r: 3a 16->32 1.08x, 4e/5a
  32->128 1.8x) and ``"in"`` 0.45-0.54x (9(r+c)/25c). Whole-network counts: see ``googlenet``.
* ``aux_logits``: the paper's two auxiliary classifiers after 4a and 4d (5x5/3 average pool,
  1x1 conv 128, FC 1024, dropout 0.7, linear; loss weight 0.3 in the paper, applied by the
  training code). In training mode the model then returns :class:`GoogLeNetOutputs`
  ``(logits, aux1, aux2)``; in eval mode (or without aux heads) the logits only.
* ``layout``: ``"paper"`` or ``"torchvision"`` (see :data:`LAYOUTS` and ``googlenet_tv``).
* ``transform_input``: torchvision's re-normalization of ImageNet-normalized input to the
  [-1, 1] range its ported weights expect.
* ``stage_pool``: the max-pools between stages round up without padding (``"ceil"``, Caffe's,
  the default) or pad by 1 and round down (``"pad"``, PyTorch's usual 3x3/2 pool, as
  kuangliu/pytorch-cifar's GoogLeNet). Same output sizes on even maps, other windows.

Not reproduced: the local response normalization after the first max-pool and after the 3x3
stem conv (LRN was dropped by every later Inception and makes no difference with BN; the
``norm=None`` network is the paper's without LRN).
"""

from __future__ import annotations

from collections import OrderedDict, namedtuple
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .._registry import CIFAR_MEAN, CIFAR_STD, IMAGENET_MEAN, IMAGENET_STD, register_alias, register_model
from ..layers import ClassifierHead, ConvNormAct, get_act_layer, get_attn_layer, get_norm_layer
from ._base import ZooModel, init_weights
from ._builder import build, check_choice, check_positive, check_positive_int, check_rate

# --------------------------------------------------------------------------------------------
# The architecture as data.


@dataclass(frozen=True)
class InceptionRow:
    """One row of GoogLeNet Table 1: a module's name and its six widths."""

    name: str
    n1x1: int
    n3x3_reduce: int
    n3x3: int
    n5x5_reduce: int
    n5x5: int
    pool_proj: int

    @property
    def stage(self) -> str:
        return self.name.rstrip("abcdefghijklmnopqrstuvwxyz")

    @property
    def out_chs(self) -> int:
        return self.n1x1 + self.n3x3 + self.n5x5 + self.pool_proj


# GoogLeNet Table 1, the nine Inception rows.
INCEPTION_V1 = (
    InceptionRow("3a", 64, 96, 128, 16, 32, 32),
    InceptionRow("3b", 128, 128, 192, 32, 96, 64),
    InceptionRow("4a", 192, 96, 208, 16, 48, 64),
    InceptionRow("4b", 160, 112, 224, 24, 64, 64),
    InceptionRow("4c", 128, 128, 256, 24, 64, 64),
    InceptionRow("4d", 112, 144, 288, 32, 64, 64),
    InceptionRow("4e", 256, 160, 320, 32, 128, 128),
    InceptionRow("5a", 256, 160, 320, 32, 128, 128),
    InceptionRow("5b", 384, 192, 384, 48, 128, 128),
)
AUX_AFTER = ("4a", "4d")  # the paper's two auxiliary classifiers


@dataclass(frozen=True)
class Layout:
    """Where a GoogLeNet layout departs from the paper's.

    ``kernel_5x5``: kernel of the 5x5 branch's second conv; ``stage_pools``: kernel of the
    3x3/2-style max-pool before each stage after the first; ``norm_eps``: eps of named norms;
    ``aux_pool``: ``"5x5/3"`` (paper) or ``"adaptive"`` (torchvision: adaptive average to 4x4).
    """

    name: str
    kernel_5x5: int = 5
    stage_pools: tuple[int, ...] = (3, 3)
    norm_eps: float = 1e-5
    aux_pool: str = "5x5/3"


LAYOUTS = {lay.name: lay for lay in (
    Layout("paper"),
    # torchvision's port: a 3x3 conv in the "5x5" branch (pytorch/vision#906, kept for the
    # weights), a 2x2/2 max-pool before stage 5, BN eps 1e-3, adaptive 4x4 aux pooling.
    Layout("torchvision", kernel_5x5=3, stage_pools=(3, 2), norm_eps=1e-3, aux_pool="adaptive"),
)}
STEMS = ("imagenet", "cifar")
STAGE_POOLS = ("ceil", "pad")
FACTORIZE_WIDTHS = ("out", "in")

GoogLeNetOutputs = namedtuple("GoogLeNetOutputs", ["logits", "aux1", "aux2"])
GoogLeNetOutputs.__doc__ = "Training-mode output with auxiliary heads: main logits, aux after 4a, after 4d."

# --------------------------------------------------------------------------------------------
# Modules.

ConvFactory = Callable[[int, int, int], nn.Module]  # (in_chs, out_chs, kernel) -> conv-norm-act


def _chain(in_chs: int, convs: Sequence[tuple[int, int]], conv: ConvFactory) -> list[nn.Module]:
    """ConvNormAct modules for a list of (kernel, width)."""
    mods = []
    for kernel, width in convs:
        mods.append(conv(in_chs, width, kernel))
        in_chs = width
    return mods


def branch5x5_convs(row: InceptionRow, kernel: int = 5, factorize: bool = False,
                    factorize_width: str = "out") -> list[tuple[int, int]]:
    """(kernel, width) of the 5x5 branch: reduce, then one 5x5 (``kernel``) or two 3x3."""
    convs = [(1, row.n5x5_reduce)]
    if factorize:
        mid = row.n5x5 if factorize_width == "out" else row.n5x5_reduce
        return convs + [(3, mid), (3, row.n5x5)]
    return convs + [(kernel, row.n5x5)]


class Inception(nn.Module):
    """Four parallel branches concatenated along channels, then ``attn`` (SE or Identity)."""

    def __init__(self, in_chs: int, row: InceptionRow, conv: ConvFactory,
                 attn_layer: Callable[[int], nn.Module], branch5x5: Sequence[tuple[int, int]]):
        super().__init__()
        self.branch1x1 = conv(in_chs, row.n1x1, 1)
        self.branch3x3 = nn.Sequential(*_chain(in_chs, [(1, row.n3x3_reduce), (3, row.n3x3)], conv))
        self.branch5x5 = nn.Sequential(*_chain(in_chs, branch5x5, conv))
        self.branch_pool = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True),
                                         conv(in_chs, row.pool_proj, 1))
        self.out_chs = row.out_chs
        self.attn = attn_layer(self.out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([self.branch1x1(x), self.branch3x3(x), self.branch5x5(x), self.branch_pool(x)], 1)
        return self.attn(y)


class AuxPool(nn.Module):
    """The paper's 5x5/3 average pool, then adaptive average to 4x4 for the FC's 2048 inputs.

    On the 14x14 maps of a 224x224 input this is exactly the paper's (14 -> 4, and the
    adaptive pool is then the identity). Other input sizes: the kernel is clipped to the map
    and the result pooled to 4x4, so that any input size fits the FC layer.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = (min(5, x.shape[-2]), min(5, x.shape[-1]))
        return F.adaptive_avg_pool2d(F.avg_pool2d(x, k, stride=3), 4)


class InceptionAux(nn.Module):
    """Auxiliary classifier: pool to 4x4 -> 1x1 conv 128 -> FC 1024 -> act -> dropout -> linear."""

    def __init__(self, in_chs: int, num_classes: int, conv: ConvFactory, act_layer, pool: str,
                 drop_rate: float = 0.7):
        super().__init__()
        self.pool = AuxPool() if pool == "5x5/3" else nn.AdaptiveAvgPool2d(4)
        self.conv = conv(in_chs, 128, 1)
        self.flatten = nn.Flatten(1)
        self.fc1 = nn.Linear(128 * 4 * 4, 1024)
        self.act = act_layer()
        self.drop = nn.Dropout(drop_rate)
        self.fc2 = nn.Linear(1024, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.flatten(self.conv(self.pool(x)))
        return self.fc2(self.drop(self.act(self.fc1(x))))


class InputTransform(nn.Module):
    """torchvision's ``transform_input``: ImageNet mean/std normalization -> (x - 0.5) / 0.5."""

    def __init__(self):
        super().__init__()
        # Constants computed in double precision, as torchvision's Python floats.
        scale = [s / 0.5 for s in IMAGENET_STD]
        shift = [(m - 0.5) / 0.5 for m in IMAGENET_MEAN]
        self.register_buffer("scale", torch.tensor(scale).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", torch.tensor(shift).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


class _Unset:
    """Default of ``norm`` and ``norm_layer``: neither given means ``"bn"``."""

    def __repr__(self) -> str:
        return "'bn'"


_UNSET = _Unset()


def resolve_norm(norm, norm_layer):
    """``norm`` and ``norm_layer`` are one option: return the value given (default ``"bn"``)."""
    if norm is _UNSET:
        return "bn" if norm_layer is _UNSET else norm_layer
    if norm_layer is not _UNSET and norm_layer != norm:
        raise ValueError(f"norm={norm!r} and norm_layer={norm_layer!r} disagree; they are one option "
                         f"(norm is an alias of norm_layer), give one of them")
    return norm


# --------------------------------------------------------------------------------------------
# The network.


class GoogLeNet(ZooModel):
    """GoogLeNet described by data: Inception rows, a stem, a layout (see the module docstring).

    Args:
        rows: the Inception modules, :class:`InceptionRow` or 7-tuples (name, #1x1, #3x3 reduce,
            #3x3, #5x5 reduce, #5x5, pool proj); a max-pool precedes each new stage number.
        layout: ``"paper"`` or ``"torchvision"`` (:data:`LAYOUTS`).
        stem: ``"imagenet"`` (7x7/2 conv 64, 3x3/2 max-pool, 1x1 conv 64, 3x3 conv 192, 3x3/2
            max-pool) or ``"cifar"`` (one 3x3 conv 192, no pooling: 32x32 inputs).
        factorize_5x5, factorize_width: two 3x3 convs in the 5x5 branch, and their middle width
            (``"out"`` = #5x5 or ``"in"`` = #5x5 reduce).
        norm, norm_layer: one option under two names (``"bn"`` default; ``None`` or ``"none"``:
            no norm and convs with bias, as the paper).
        aux_logits, aux_drop_rate: auxiliary heads after 4a and 4d (:data:`AUX_AFTER`).
        transform_input: torchvision's input re-normalization (3 input channels only).
        stage_pool: ``"ceil"`` (no padding, rounding up) or ``"pad"`` (padding ``(k - 1) // 2``,
            rounding down) for the max-pools between stages.
        attn, se_ratio: ``"se"`` for a Squeeze-Excite gate on each module's concatenated output.
        head, fc_hidden, fc_pool, drop_rate: see :class:`~cnnzoo.layers.ClassifierHead`
            (``drop_rate`` 0.4 before the linear layer, as the paper).
    """

    def __init__(self, rows: Sequence[InceptionRow | tuple] = INCEPTION_V1, layout: str = "paper",
                 stem: str = "imagenet", factorize_5x5: bool = False, factorize_width: str = "out",
                 aux_logits: bool = False, aux_drop_rate: float = 0.7, transform_input: bool = False,
                 num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.4,
                 attn: str | None = None, se_ratio: float = 1 / 16, norm=_UNSET, norm_layer=_UNSET,
                 act_layer="relu", head: str = "gap", fc_hidden: int = 4096, fc_pool: int = 7,
                 stage_pool: str = "ceil"):
        super().__init__()
        check_choice("layout", layout, LAYOUTS)
        check_choice("stem", stem, STEMS)
        check_choice("factorize_width", factorize_width, FACTORIZE_WIDTHS)
        check_choice("stage_pool", stage_pool, STAGE_POOLS)
        for name, v in (("factorize_5x5", factorize_5x5), ("aux_logits", aux_logits),
                        ("transform_input", transform_input)):
            if not isinstance(v, bool):
                raise ValueError(f"{name} must be True or False, got {v!r}")
        check_positive_int("in_chans", in_chans)
        check_positive("se_ratio", se_ratio)
        check_rate("aux_drop_rate", aux_drop_rate)
        if transform_input and in_chans != 3:
            raise ValueError(f"transform_input needs in_chans=3 (RGB, ImageNet mean/std), got {in_chans}")
        lay = LAYOUTS[layout]
        if factorize_5x5 and lay.kernel_5x5 != 5:
            raise ValueError(f"factorize_5x5 needs a true 5x5 branch; layout {layout!r} has a "
                             f"{lay.kernel_5x5}x{lay.kernel_5x5} conv there (use layout='paper')")
        rows = _check_rows(rows)
        names = [r.name for r in rows]
        if aux_logits and not set(AUX_AFTER) <= set(names):
            raise ValueError(f"aux_logits needs modules {list(AUX_AFTER)} (the heads follow them); "
                             f"rows have {names}")
        n_pools = len({r.stage for r in rows}) - 1
        if n_pools > len(lay.stage_pools):
            raise ValueError(f"layout {layout!r} has {len(lay.stage_pools) + 1} stages, rows have "
                             f"{n_pools + 1} ({sorted({r.stage for r in rows})})")

        norm_value = resolve_norm(norm, norm_layer)
        no_norm = norm_value is None or (isinstance(norm_value, str) and norm_value.lower() == "none")
        eps = {"eps": lay.norm_eps} if isinstance(norm_value, str) and not no_norm else {}
        norm_f = get_norm_layer(norm_value, **eps)
        act = get_act_layer(act_layer)
        attn_layer = get_attn_layer(attn, rd_ratio=se_ratio)

        def conv(cin: int, cout: int, k: int, stride: int = 1) -> nn.Module:
            # Without a norm the conv keeps its bias, as in the paper.
            return ConvNormAct(cin, cout, k, stride=stride, bias=no_norm, norm_layer=norm_f,
                               act_layer=act)

        self.num_classes = num_classes
        self.layout, self.stem_type = layout, stem
        self.input_transform = InputTransform() if transform_input else nn.Identity()

        # Max-pools round up (ceil_mode), as Caffe, in which the paper's network was released:
        # at 224x224 the sizes are Table 1's.
        if stem == "imagenet":
            # 224 -> 112 -> 56 (-> LRN, not reproduced) -> 56 -> 56 (-> LRN) -> 28
            self.stem = nn.Sequential(OrderedDict(
                conv1=conv(in_chans, 64, 7, 2),
                pool1=nn.MaxPool2d(3, stride=2, ceil_mode=True),
                conv2=conv(64, 64, 1),
                conv3=conv(64, 192, 3),
                pool2=nn.MaxPool2d(3, stride=2, ceil_mode=True),
            ))
        else:
            # 32x32 stays 32x32 through the stem; stages 3/4/5 run at 32/16/8.
            self.stem = nn.Sequential(OrderedDict(conv1=conv(in_chans, 192, 3)))

        blocks: OrderedDict[str, nn.Module] = OrderedDict()
        c, stage, pools = 192, rows[0].stage, iter(lay.stage_pools)
        for row in rows:
            if row.stage != stage:
                # 28 -> 14 before stage 4, 14 -> 7 before stage 5 (224x224 input)
                k = next(pools)
                blocks[f"pool{stage}"] = (nn.MaxPool2d(k, stride=2, ceil_mode=True) if stage_pool == "ceil"
                                          else nn.MaxPool2d(k, stride=2, padding=(k - 1) // 2))
                stage = row.stage
            b5 = branch5x5_convs(row, lay.kernel_5x5, factorize_5x5, factorize_width)
            blocks[f"inception{row.name}"] = Inception(c, row, conv, attn_layer, b5)
            c = row.out_chs
        self.blocks = nn.Sequential(blocks)

        self.aux_heads = nn.ModuleDict()
        self.aux_taps: dict[str, str] = {}
        if aux_logits:
            width = {f"inception{r.name}": r.out_chs for r in rows}
            for i, a in enumerate(AUX_AFTER, 1):
                self.aux_taps[f"inception{a}"] = f"aux{i}"
                self.aux_heads[f"aux{i}"] = InceptionAux(width[f"inception{a}"], num_classes, conv, act,
                                                         lay.aux_pool, aux_drop_rate)
        self.aux_logits = aux_logits
        self.num_features = c
        self.head = ClassifierHead(c, num_classes, head=head, drop_rate=drop_rate, fc_hidden=fc_hidden,
                                   fc_pool=fc_pool, act_layer=act)
        init_weights(self)

    def _trunk(self, x: torch.Tensor, aux: list[torch.Tensor] | None = None) -> torch.Tensor:
        x = self.stem(self.input_transform(x))
        for name, block in self.blocks.named_children():
            x = block(x)
            if aux is not None and name in self.aux_taps:
                aux.append(self.aux_heads[self.aux_taps[name]](x))
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._trunk(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor | GoogLeNetOutputs:
        """Logits; in training mode with aux heads, ``GoogLeNetOutputs(logits, aux1, aux2)``."""
        if not (self.training and self.aux_logits):
            return self.forward_head(self.forward_features(x))
        aux: list[torch.Tensor] = []
        logits = self.forward_head(self._trunk(x, aux))
        return GoogLeNetOutputs(logits, *aux)

    def reset_classifier(self, num_classes: int) -> None:
        """New final linear layers (main and auxiliary) for ``num_classes`` classes."""
        super().reset_classifier(num_classes)
        for head in self.aux_heads.values():
            head.fc2 = nn.Linear(1024, num_classes) if num_classes > 0 else nn.Identity()


def _check_rows(rows) -> tuple[InceptionRow, ...]:
    fields = "name, #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj"
    if isinstance(rows, (str, bytes)) or not isinstance(rows, Sequence) or not rows:
        raise ValueError(f"rows must be a non-empty sequence of InceptionRow or ({fields}), got {rows!r}")
    out = []
    for r in rows:
        if not isinstance(r, InceptionRow):
            if not isinstance(r, (tuple, list)) or len(r) != 7:
                raise ValueError(f"each row must be an InceptionRow or a 7-tuple ({fields}), got {r!r}")
            r = InceptionRow(*r)
        widths = (r.n1x1, r.n3x3_reduce, r.n3x3, r.n5x5_reduce, r.n5x5, r.pool_proj)
        if not all(isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in widths):
            raise ValueError(f"row {r.name!r}: widths ({fields[6:]}) must be positive ints, got {widths}")
        if not isinstance(r.name, str) or not r.stage or r.stage == r.name:
            raise ValueError(f"row name must be a stage number and a letter, like '3a', got {r.name!r}")
        out.append(r)
    names = [r.name for r in out]
    if len(set(names)) != len(names):
        raise ValueError(f"row names must be unique, got {names}")
    return tuple(out)


# --------------------------------------------------------------------------------------------
# Registered names.

_FIXED = ("layout", "stem")  # each registered name fixes these
_PAPER = "Szegedy et al., Going Deeper with Convolutions, CVPR 2015"
_CIFAR = dict(input_size=(3, 32, 32), num_classes=10, mean=CIFAR_MEAN, std=CIFAR_STD)


def _googlenet(kw, **defaults) -> GoogLeNet:
    return build(GoogLeNet, kw, exclude=_FIXED, **defaults)


@register_model(family="googlenet", paper=_PAPER)
def googlenet(**kw):
    """GoogLeNet, the paper's layout (Table 1): true 5x5 branches, BN by default, no aux heads.

    ``create_model("googlenet", aux_logits=True)`` adds the paper's two auxiliary classifiers
    (training mode returns ``(logits, aux1, aux2)``); ``norm=None`` is the paper's BN-free net.

    Exact parameter counts at 1000 classes (BN / ``norm=None``)::

        googlenet                                   7,005,832 / 6,998,552
        factorize_5x5=True  (m = #5x5, default)     7,292,264 / 7,284,232   (+286,432)
        factorize_5x5=True, factorize_width="in"   6,697,992 / 6,690,456   (-307,840)
        aux_logits=True                            13,385,816 / 13,378,280  (two heads)

    Against Table 1, whose parameter column sums to 6,797.7K ("about 6.8M"): the conv and FC
    weights alone are 6,990,272, 2.8% more, because Table 1's per-row figures are not the
    products of its own widths (they run from -2.8% (5a) to +10% (4c) of them, and list 2.7K for
    the 7x7 conv's 9,408 weights). On top come the classifier's 1,000 biases and, per conv
    output channel, a bias (7,280, ``norm=None``) or BN's scale and shift (14,560, default).
    ``googlenet_tv`` has 380,928 fewer: 16 r c per module where its 3x3 replaces the r->c 5x5.

    Compute at 224x224 (``cnnzoo.analysis.profile``): 1.583 G multiply-adds (the paper's budget:
    1.5 G; ``googlenet_tv`` 1.498 G; factorized 1.640 G with m = #5x5, 1.515 G with m = #5x5 reduce).
    """
    return _googlenet(kw, layout="paper", stem="imagenet")


@register_model(family="googlenet", paper=_PAPER, params=6_624_904)
def googlenet_tv(**kw):
    """GoogLeNet in torchvision's layout, so that torchvision's weights import exactly.

    Deviations from the paper, all torchvision's: the 5x5 branch has a 3x3 conv (pytorch/vision
    issue 906; kept for its ported weights), the max-pool before stage 5 is 2x2/2 (paper 3x3/2),
    BN after every conv with eps 1e-3, the auxiliary heads pool adaptively to 4x4 (paper 5x5/3,
    equal only in window placement, not size, at 14x14), main dropout 0.2 (paper 0.4).
    ``transform_input=True`` as torchvision's pretrained model. Without aux heads (the registered
    default): 6,624,904 parameters, torchvision's count.
    """
    return _googlenet(kw, layout="torchvision", stem="imagenet", drop_rate=0.2)


@register_model(family="googlenet", paper=_PAPER, **_CIFAR)
def cifar_googlenet(**kw):
    """GoogLeNet for 32x32 inputs: the same nine modules after a one-conv stem.

    Stem: one 3x3 conv 192 (norm, ReLU), no pooling, as the common CIFAR adaptation (e.g.
    kuangliu/pytorch-cifar); stages 3, 4 and 5 run at 32x32, 16x16 and 8x8 (3x3/2 max-pools
    between), then global average pooling. The 5x5 branches stay true 5x5 convs.
    """
    return _googlenet(kw, layout="paper", stem="cifar", num_classes=10)


register_alias("se_googlenet", "googlenet", attn="se")
register_alias("se_cifar_googlenet", "cifar_googlenet", attn="se")
