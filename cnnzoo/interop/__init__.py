"""Weights from other libraries: key mapping and strict loading.

Each family registers, per source library, a function that renames one external key to the
cnnzoo key (or returns ``None`` to drop a key that has no counterpart, which must then be
listed as such). :func:`load_external` applies it and loads strictly: every cnnzoo tensor is
filled, every external tensor is used, shapes agree.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn as nn

SOURCES = ("torchvision", "timm")
KeyMap = Callable[[str], "str | None"]
_MAPPERS: dict[tuple[type, str], KeyMap] = {}


def register_mapping(model_cls: type, source: str) -> Callable[[KeyMap], KeyMap]:
    """Decorator: ``fn(external_key) -> cnnzoo_key | None`` for models of ``model_cls``."""
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; choose one of {list(SOURCES)}")

    def deco(fn: KeyMap) -> KeyMap:
        _MAPPERS[(model_cls, source)] = fn
        return fn

    return deco


def rename_prefix(key: str, prefixes: Mapping[str, str]) -> str | None:
    """``key`` with the first matching prefix of ``prefixes`` replaced; ``None`` if none matches."""
    for old, new in prefixes.items():
        if key.startswith(old):
            return new + key[len(old):]
    return None


def _mapper_for(model: nn.Module, source: str) -> KeyMap:
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; choose one of {list(SOURCES)}")
    for cls in type(model).__mro__:
        if (cls, source) in _MAPPERS:
            return _MAPPERS[(cls, source)]
    known = sorted({c.__name__ for c, s in _MAPPERS if s == source})
    raise ValueError(f"no {source} mapping for {type(model).__name__}; {source} maps: {known}")


def convert_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor],
                       source: str) -> dict[str, torch.Tensor]:
    """Rename ``state_dict``'s keys to ``model``'s and check the result covers it exactly."""
    mapper = _mapper_for(model, source)
    own = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    unused: list[str] = []
    for k, v in state_dict.items():
        nk = mapper(k)
        if nk is None:
            continue
        if nk not in own:
            unused.append(k)
            continue
        if tuple(own[nk].shape) != tuple(v.shape):
            raise ValueError(f"shape mismatch: {source} {k} {tuple(v.shape)} -> {nk} "
                             f"{tuple(own[nk].shape)} (different num_classes or options?)")
        out[nk] = v
    missing = sorted(set(own) - set(out))
    if unused or missing:
        raise ValueError(
            f"{source} weights do not fit {type(model).__name__}: "
            f"{len(unused)} unused (e.g. {unused[:3]}), {len(missing)} missing (e.g. {missing[:3]})"
        )
    return out


def load_external(model: nn.Module, state_dict: Mapping[str, torch.Tensor] | nn.Module,
                  source: str) -> nn.Module:
    """Load a torchvision or timm ``state_dict`` (or model) into a cnnzoo ``model``, strictly.

    Returns ``model``. Raises ``ValueError`` naming unused, missing or misshapen tensors.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a cnnzoo model (an nn.Module), got a {type(model).__name__}")
    if isinstance(state_dict, nn.Module):
        state_dict = state_dict.state_dict()
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping of names to tensors (or a model), "
                        f"got a {type(state_dict).__name__}")
    model.load_state_dict(convert_state_dict(model, state_dict, source), strict=True)
    return model


# Each family's module registers its key mappings on import.
from . import densenet, googlenet, resnet, vgg  # noqa: E402,F401

__all__ = ["SOURCES", "convert_state_dict", "load_external", "register_mapping", "rename_prefix"]
