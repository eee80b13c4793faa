"""Factorization surgery: a k x k convolution becomes a stack of (k - 1) / 2 3x3 convolutions.

VGG (Sec. 2.3) and Inception-v3 (Sec. 3.1) replace large kernels by stacks of 3x3 ones: the
stack sees the same window (two 3x3 see 5x5, three see 7x7) for fewer weights. With ``C``
channels in and out, a 5x5 costs ``25 C^2`` and two 3x3 ``18 C^2`` (28% less); a 7x7 costs
``49 C^2`` and three 3x3 ``27 C^2`` (45% less). Every multiply-add count scales alike, since
the output size is unchanged.

:func:`factorize` applies this to a copy of any model. The stack keeps the conv's input and
output widths (inner convs are ``out_channels`` wide), its groups and bias, and spreads its
padding over the 3x3 convs so that output size and alignment, hence the receptive field, are
unchanged. Between the 3x3 convs it can put a norm and an activation (VGG puts a ReLU,
Inception-v3 BN + ReLU); without them the stack is still linear, a constrained 5x5.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch.nn as nn

from ..layers import get_act_layer, get_norm_layer


@dataclass
class FactorizeReport:
    """What :func:`factorize` did: ``replaced`` maps a conv's name to the number of 3x3 convs
    that replace it; ``skipped`` maps a conv's name to why it was left as is."""

    replaced: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        lines = [f"replaced {len(self.replaced)} conv(s)"]
        lines += [f"  {n}: {k} x 3x3" for n, k in self.replaced.items()]
        if self.skipped:
            lines.append(f"left {len(self.skipped)} conv(s) as they were")
            lines += [f"  {n}: {why}" for n, why in self.skipped.items()]
        return "\n".join(lines)


def _why_not(conv: nn.Conv2d) -> str | None:
    """None if ``conv`` can be factorized, else the reason it cannot."""
    kh, kw = conv.kernel_size
    if kh != kw:
        return f"non-square kernel {kh}x{kw}"
    if conv.stride != (1, 1):
        return f"stride {conv.stride[0]}x{conv.stride[1]} (only stride-1 convs keep their output size)"
    if conv.dilation != (1, 1):
        return f"dilation {conv.dilation}"
    if isinstance(conv.padding, str):
        if conv.padding == "same" and kh % 2 == 0:
            return "even kernel with 'same' padding"
    elif conv.padding[0] != conv.padding[1]:
        return f"unequal padding {conv.padding}"
    if conv.padding_mode != "zeros":
        return f"padding mode {conv.padding_mode!r}"
    return None


def _padding(conv: nn.Conv2d) -> int:
    if conv.padding == "same":
        return (conv.kernel_size[0] - 1) // 2
    if conv.padding == "valid":
        return 0
    return conv.padding[0]


def factorized_stack(conv: nn.Conv2d, norm_layer: Callable[[int], nn.Module] | None = None,
                     act_layer: Callable[[], nn.Module] | None = None) -> nn.Sequential:
    """The (k - 1) / 2 stacked 3x3 convs that replace ``conv`` (odd square kernel, stride 1).

    Children are ``conv1``, [``norm1``, ``act1``,] ``conv2``, ...; the output has the same
    size and alignment as ``conv``'s, as the conv's padding ``p`` is spread over the stack
    (each 3x3 pads 0, 1 or 2, summing to ``p``).
    """
    k = conv.kernel_size[0]
    if k < 3 or k % 2 == 0:
        raise ValueError(f"only odd kernels of at least 3 can be factorized into 3x3 convs, got {k}")
    n = (k - 1) // 2
    pad = _padding(conv)
    pads = [pad // n + (1 if i < pad % n else 0) for i in range(n)]
    if max(pads) > 2:
        raise ValueError(f"padding {pad} is too large to spread over {n} 3x3 conv(s)")
    factory = {"device": conv.weight.device, "dtype": conv.weight.dtype}
    mods: OrderedDict[str, nn.Module] = OrderedDict()
    c_in, c_out = conv.in_channels, conv.out_channels
    has_bias = conv.bias is not None
    for i in range(1, n + 1):
        last = i == n
        mods[f"conv{i}"] = nn.Conv2d(c_in, c_out, 3, padding=pads[i - 1], groups=conv.groups,
                                     bias=has_bias if last or norm_layer is None else False,
                                     **factory)
        nn.init.kaiming_normal_(mods[f"conv{i}"].weight, mode="fan_out", nonlinearity="relu")
        if mods[f"conv{i}"].bias is not None:
            nn.init.zeros_(mods[f"conv{i}"].bias)
        if not last:
            if norm_layer is not None:
                mods[f"norm{i}"] = norm_layer(c_out).to(**factory)
            if act_layer is not None:
                mods[f"act{i}"] = act_layer()
        c_in = c_out
    return nn.Sequential(mods)


def factorize(model: nn.Module, kernel_sizes: Iterable[int] = (5, 7), norm_layer=None,
              act_layer=None) -> nn.Module:
    """A copy of ``model`` with every stride-1 k x k conv (k in ``kernel_sizes``) replaced by
    (k - 1) / 2 stacked 3x3 convs of the same input and output widths.

    ``norm_layer`` / ``act_layer`` (a name such as ``"bn"`` / ``"relu"``, a class, or None)
    go between the 3x3 convs, not after the last one: the layers that followed the original
    conv still follow the stack. Output shapes and receptive fields are unchanged; the new
    convs are freshly initialized (He, fan-out) and the rest of the model keeps its weights.

    Convs with a matching kernel that cannot be replaced (stride 2, dilation, unequal padding,
    non-square) are left as they are. The returned model has a ``factorize_report``
    (:class:`FactorizeReport`) naming what was replaced and what was skipped, and why.
    """
    sizes = set()
    for k in kernel_sizes:
        if not isinstance(k, int) or isinstance(k, bool) or k < 5 or k % 2 == 0:
            raise ValueError(f"kernel_sizes must be odd ints >= 5 (e.g. (5, 7)), got {k!r}")
        sizes.add(k)
    norm = get_norm_layer(norm_layer) if norm_layer is not None else None
    act = get_act_layer(act_layer) if act_layer is not None else None
    new = copy.deepcopy(model)
    report = FactorizeReport()
    targets = []
    for name, m in new.named_modules():
        if not (isinstance(m, nn.Conv2d) and set(m.kernel_size) & sizes) or not name:
            continue
        why = _why_not(m) if type(m) is nn.Conv2d else f"unsupported conv type {type(m).__name__}"
        if why is None:
            targets.append(name)
        else:
            report.skipped[name] = why
    for name in targets:
        parent_name, _, child = name.rpartition(".")
        parent = new.get_submodule(parent_name) if parent_name else new
        conv = getattr(parent, child)
        stack = factorized_stack(conv, norm, act)
        setattr(parent, child, stack)
        report.replaced[name] = len([c for c in stack._modules if c.startswith("conv")])
    new.factorize_report = report
    return new
