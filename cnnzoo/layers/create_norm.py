"""Normalization layers by name, resolved once at the top of a model.

A norm factory takes the channel count: ``norm_layer(64) -> nn.Module``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import torch.nn as nn


def _group_norm(num_channels: int, num_groups: int = 32, eps: float = 1e-5) -> nn.GroupNorm:
    # The largest divisor of the channel count not above num_groups, so any width works.
    return nn.GroupNorm(math.gcd(num_groups, num_channels), num_channels, eps=eps)


def _layer_norm(num_channels: int, eps: float = 1e-5) -> nn.GroupNorm:
    return nn.GroupNorm(1, num_channels, eps=eps)


def _no_norm(num_channels: int) -> nn.Identity:
    return nn.Identity()


_NORMS: dict[str, Callable[..., nn.Module]] = {
    "bn": nn.BatchNorm2d,
    "batchnorm": nn.BatchNorm2d,
    "gn": _group_norm,
    "groupnorm": _group_norm,
    "ln": _layer_norm,
    "in": partial(nn.InstanceNorm2d, affine=True),
    "none": _no_norm,
}


def get_norm_layer(norm: str | Callable[..., nn.Module] | None, **kwargs) -> Callable[[int], nn.Module]:
    """A factory ``f(num_channels) -> module`` for ``norm`` (a name, a class, or None = no norm).

    ``kwargs`` (e.g. ``eps=1e-3``) are bound into the factory.
    """
    if norm is None:
        return _no_norm
    if callable(norm):
        return partial(norm, **kwargs) if kwargs else norm
    if not isinstance(norm, str) or norm.lower() not in _NORMS:
        raise ValueError(f"unknown norm_layer {norm!r}; choose one of {sorted(_NORMS)} or pass a class")
    f = _NORMS[norm.lower()]
    return partial(f, **kwargs) if kwargs else f


def norm_names() -> list[str]:
    return sorted(_NORMS)
