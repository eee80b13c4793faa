"""Fused bricks whose name states their order."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch.nn as nn


def _conv(in_chs: int, out_chs: int, kernel_size: int, stride: int = 1, groups: int = 1,
          padding: int | None = None, bias: bool = False) -> nn.Conv2d:
    if padding is None:
        padding = kernel_size // 2
    return nn.Conv2d(in_chs, out_chs, kernel_size, stride=stride, padding=padding, groups=groups,
                     bias=bias)


class ConvNormAct(nn.Sequential):
    """conv -> norm -> act (``conv``, ``norm``, ``act``); a ``None`` norm/act is ``nn.Identity``."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 3, stride: int = 1,
                 groups: int = 1, padding: int | None = None, bias: bool = False,
                 norm_layer: Callable[[int], nn.Module] | None = nn.BatchNorm2d,
                 act_layer: Callable[[], nn.Module] | None = nn.ReLU):
        super().__init__(OrderedDict(
            conv=_conv(in_chs, out_chs, kernel_size, stride, groups, padding, bias),
            norm=norm_layer(out_chs) if norm_layer is not None else nn.Identity(),
            act=act_layer() if act_layer is not None else nn.Identity(),
        ))


class NormActConv(nn.Sequential):
    """norm -> act -> conv (``norm``, ``act``, ``conv``): the pre-activation brick."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 3, stride: int = 1,
                 groups: int = 1, padding: int | None = None, bias: bool = False,
                 norm_layer: Callable[[int], nn.Module] | None = nn.BatchNorm2d,
                 act_layer: Callable[[], nn.Module] | None = nn.ReLU):
        super().__init__(OrderedDict(
            norm=norm_layer(in_chs) if norm_layer is not None else nn.Identity(),
            act=act_layer() if act_layer is not None else nn.Identity(),
            conv=_conv(in_chs, out_chs, kernel_size, stride, groups, padding, bias),
        ))
