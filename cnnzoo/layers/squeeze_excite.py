"""Squeeze-and-Excitation (Hu et al., 2018): the one attention module of cnnzoo."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from .create_act import get_act_layer


class SqueezeExcite(nn.Module):
    """Global-average squeeze, bottleneck of ``channels * rd_ratio`` (at least 1), sigmoid gate.

    The two FCs are 1x1 convs with bias (``fc1``, ``fc2``), as in the SENet release and timm.
    """

    def __init__(self, channels: int, rd_ratio: float = 1 / 16,
                 act_layer: Callable[[], nn.Module] | str = "relu"):
        super().__init__()
        if not 0 < rd_ratio <= 1:
            raise ValueError(f"se_ratio must be in (0, 1], got {rd_ratio!r}")
        rd = max(1, round(channels * rd_ratio))
        self.fc1 = nn.Conv2d(channels, rd, 1, bias=True)
        self.act = get_act_layer(act_layer)()
        self.fc2 = nn.Conv2d(rd, channels, 1, bias=True)
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
