"""Stochastic depth and constant scaling as modules (a disabled one is ``nn.Identity``)."""

from __future__ import annotations

import torch
import torch.nn as nn


class DropPath(nn.Module):
    """Drop the whole residual branch per sample with probability ``p`` (Huang et al., 2016).

    Kept samples are scaled by ``1 / (1 - p)`` so the expectation is unchanged.
    """

    def __init__(self, p: float):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"drop path rate must be in [0, 1), got {p!r}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = 1 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Scale(nn.Module):
    """Multiply by a constant (residual scaling, shortcut scaling)."""

    def __init__(self, value: float):
        super().__init__()
        self.value = float(value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.value

    def extra_repr(self) -> str:
        return f"value={self.value}"


def drop_path_or_identity(p: float) -> nn.Module:
    return DropPath(p) if p > 0 else nn.Identity()


def scale_or_identity(value: float) -> nn.Module:
    return nn.Identity() if value == 1 else Scale(value)
