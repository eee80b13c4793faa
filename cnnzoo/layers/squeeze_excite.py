"""Squeeze-and-Excitation (Hu et al., 2018): the one attention module of cnnzoo."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from .create_act import get_act_layer


def se_width(channels: int, rd_ratio: float, rd_divisor: int = 1) -> int:
    """Bottleneck width of a Squeeze-Excite gate on ``channels`` (see :class:`SqueezeExcite`)."""
    if rd_divisor == 1:
        return max(1, round(channels * rd_ratio))
    # timm's make_divisible (round_limit 0): nearest multiple, halves rounded up
    return max(rd_divisor, int(channels * rd_ratio + rd_divisor / 2) // rd_divisor * rd_divisor)


class SqueezeExcite(nn.Module):
    """Global-average squeeze, bottleneck of ``channels * rd_ratio`` channels, sigmoid gate.

    The two FCs are 1x1 convs (``fc1``, ``fc2``), with bias as in the SENet release and timm
    (``bias=False``: without, as e.g. moskomule/senet.pytorch). The bottleneck width is
    ``channels * rd_ratio`` rounded to the nearest integer (at least 1); with ``rd_divisor > 1``
    it is rounded to the nearest multiple of ``rd_divisor`` instead (at least ``rd_divisor``),
    as timm's ``make_divisible`` does for its ``seresnet*`` (8: 64 channels get 8, not 4).
    """

    def __init__(self, channels: int, rd_ratio: float = 1 / 16,
                 act_layer: Callable[[], nn.Module] | str = "relu", rd_divisor: int = 1, bias: bool = True):
        super().__init__()
        if not 0 < rd_ratio <= 1:
            raise ValueError(f"se_ratio must be in (0, 1], got {rd_ratio!r}")
        if not isinstance(rd_divisor, int) or isinstance(rd_divisor, bool) or rd_divisor < 1:
            raise ValueError(f"se_divisor must be a positive int, got {rd_divisor!r}")
        if not isinstance(bias, bool):
            raise ValueError(f"se_bias must be True or False, got {bias!r}")
        self.rd_ratio, self.rd_divisor = rd_ratio, rd_divisor
        rd = se_width(channels, rd_ratio, rd_divisor)
        self.fc1 = nn.Conv2d(channels, rd, 1, bias=bias)
        self.act = get_act_layer(act_layer)()
        self.fc2 = nn.Conv2d(rd, channels, 1, bias=bias)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.fc2(self.act(self.fc1(s))))


_ATTN = {"se": SqueezeExcite}


def get_attn_layer(attn: str | Callable[..., nn.Module] | None, **kwargs) -> Callable[[int], nn.Module]:
    """A factory ``f(channels) -> module``; ``None`` gives ``nn.Identity`` (attention disabled).

    ``kwargs`` (e.g. ``rd_ratio``) are passed to the attention class.
    """
    if attn is None:
        return lambda channels: nn.Identity()
    if isinstance(attn, str):
        if attn.lower() not in _ATTN:
            raise ValueError(f"unknown attn {attn!r}; choose None or one of {sorted(_ATTN)}")
        attn = _ATTN[attn.lower()]
    if not callable(attn):
        raise ValueError(f"attn must be None, a name or a class, got {attn!r}")
    return lambda channels: attn(channels, **kwargs)
