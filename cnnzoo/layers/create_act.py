"""Activation layers by name, resolved once at the top of a model."""

from __future__ import annotations

from collections.abc import Callable

import torch.nn as nn

_ACTS: dict[str, Callable[..., nn.Module]] = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "prelu": nn.PReLU,
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "gelu": nn.GELU,
    "mish": nn.Mish,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "identity": nn.Identity,
}
# Stateless activations that can safely run in place after a conv/norm.
_INPLACE = {"relu", "relu6", "leaky_relu", "elu", "silu", "swish", "mish"}


def get_act_layer(act: str | Callable[..., nn.Module] | None) -> Callable[[], nn.Module]:
    """A zero-argument factory for the activation ``act`` (a name, a class, or None)."""
    if act is None:
        return nn.Identity
    if callable(act):
        return act
    if not isinstance(act, str) or act.lower() not in _ACTS:
        raise ValueError(f"unknown act_layer {act!r}; choose one of {sorted(_ACTS)} or pass a class")
    name = act.lower()
    cls = _ACTS[name]
    if name in _INPLACE:
        return lambda: cls(inplace=True)
    return cls


def act_names() -> list[str]:
    return sorted(_ACTS)
