"""The one model registry: names are API.

Builders are plain functions decorated with :func:`register_model`; they take keyword
overrides and return an ``nn.Module``. Metadata (family, default input size, mean/std,
paper, expected parameter count) lives beside the builder, in the decorator call.

This module imports no torch: the built-in families (``cnnzoo.models``) are imported, and so
registered, by the first call that needs the registry's contents.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch.nn as nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


@dataclass(frozen=True)
class ModelMeta:
    """What is known about a registered model, independent of any instance.

    ``params`` is the published parameter count at ``num_classes`` classes;
    ``params_tol`` is its rounding (0 means exact); ``params_scope`` says what the publication
    counted: ``"all"`` parameters, or only conv/linear ``"weights"`` (BN affine excluded).
    """

    name: str
    family: str
    input_size: tuple[int, int, int] = (3, 224, 224)
    num_classes: int = 1000
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    paper: str = ""
    params: int | None = None
    params_tol: int = 0
    params_scope: str = "all"
    defaults: dict[str, Any] = field(default_factory=dict)
    alias_of: str | None = None


@dataclass(frozen=True)
class _Entry:
    fn: Callable[..., nn.Module]
    meta: ModelMeta


_REGISTRY: dict[str, _Entry] = {}


def _registry() -> dict[str, _Entry]:
    """The registry, after importing (and so registering) the built-in families."""
    importlib.import_module("cnnzoo.models")  # a no-op once imported, or while it is importing
    return _REGISTRY


def register_model(
    fn: Callable[..., nn.Module] | None = None, *, name: str | None = None, **meta: Any
) -> Callable:
    """Register a builder function under its name (or ``name=``).

    Usable bare (``@register_model``) or with metadata
    (``@register_model(family="resnet", params=11_689_512)``). A duplicate name raises.
    """

    def deco(f: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or f.__name__
        if key in _registry():
            raise ValueError(f"model name {key!r} is already registered")
        meta.setdefault("family", f.__module__.rsplit(".", 1)[-1])
        _REGISTRY[key] = _Entry(f, ModelMeta(name=key, **meta))
        return f

    return deco(fn) if fn is not None else deco


def register_alias(name: str, target: str, *, params: int | None = None, params_tol: int = 0,
                   **defaults: Any) -> None:
    """Register ``name`` as ``target`` with some overrides preset (e.g. ``se_resnet50``).

    An alias only sets options: ``create_model(name, **kw)`` is
    ``create_model(target, **{**defaults, **kw})``.
    """
    if name in _registry():
        raise ValueError(f"model name {name!r} is already registered")
    base = _REGISTRY[target]

    def build(**overrides: Any) -> nn.Module:
        return base.fn(**{**defaults, **overrides})

    build.__name__ = name
    build.__doc__ = f"``{target}`` with {defaults}."
    meta = replace(base.meta, name=name, params=params, params_tol=params_tol,
                   defaults={**base.meta.defaults, **defaults}, alias_of=target)
    _REGISTRY[name] = _Entry(build, meta)


def _lookup(name: str) -> _Entry:
    if not isinstance(name, str):
        raise TypeError(f"model name must be a string such as 'resnet20' (see cnnzoo.list_models()), "
                        f"got {name!r} ({type(name).__name__})")
    try:
        return _registry()[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=5, cutoff=0.5)
        hint = f"; closest: {', '.join(close)}" if close else ""
        raise ValueError(f"unknown model {name!r}{hint} (see cnnzoo.list_models())") from None


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching a shell-style wildcard pattern, sorted."""
    if not isinstance(pattern, str):
        raise TypeError(f"pattern must be a string (a name or a wildcard such as 'resnet*'), "
                        f"got {pattern!r} ({type(pattern).__name__})")
    return sorted(n for n in _registry() if fnmatch.fnmatchcase(n, pattern))


def get_model_meta(name: str) -> ModelMeta:
    """Metadata of a registered model; unknown names raise ``ValueError``."""
    return _lookup(name).meta


def create_model(name: str, pretrained: str | None = None, *, source: str | None = None,
                 features_only: bool = False, out_indices: Any = None, **overrides: Any) -> nn.Module:
    """Build a registered model. The one door: ``create_model("resnet56", attn="se")``.

    ``pretrained``: ``"torchvision"``, ``"timm"`` or the path of a weights file of any known
    layout (cnnzoo, torchvision, timm, the public CIFAR implementations; ``source=`` names it
    instead of detecting it); the model gets the options those weights need, then ``overrides``
    (see :mod:`cnnzoo.weights`). ``name`` may itself be a file written by ``cnnzoo.save_weights``:
    the model it names, with its weights. ``features_only=True``: a backbone returning the feature
    maps of ``out_indices`` (:func:`cnnzoo.features.features_only`).

    Unknown names and invalid overrides raise ``ValueError`` saying what is allowed.
    """
    registered = isinstance(name, str) and name in _registry()
    if pretrained is not None or (not registered and _looks_like_path(name)):
        from . import weights  # torch: imported only when weights are asked for

        if pretrained is None:
            model = weights.create_from_file(name, source=source, **overrides)
        else:
            model = weights.create_pretrained(name, pretrained, source=source, **overrides)
    else:
        if source is not None:
            raise ValueError("source= names the layout of pretrained weights; give pretrained= too")
        model = _build(name, overrides)
    if features_only:
        from .features import features_only as _features_only  # written alongside; torch

        model = _features_only(model, out_indices)
    elif out_indices is not None:
        raise ValueError("out_indices= selects the feature maps of features_only=True; give it too")
    return model


def _looks_like_path(name: Any) -> bool:
    import os

    return isinstance(name, os.PathLike) or (isinstance(name, str) and (
        "/" in name or os.sep in name or name.lower().endswith((".safetensors", ".pth", ".pt", ".th"))
        or os.path.isfile(name)))


def _build(name: str, overrides: dict[str, Any]) -> nn.Module:
    entry = _lookup(name)
    # Checked for every family (a bool is an int to Python: num_classes=True would build 1 class).
    for key, low, what in (("num_classes", 0, "a non-negative int (0: no classifier)"),
                           ("in_chans", 1, "a positive int")):
        v = overrides.get(key, low)
        if not isinstance(v, int) or isinstance(v, bool) or v < low:
            raise ValueError(f"{key} must be {what}, got {v!r}")
    try:
        model = entry.fn(**overrides)
    except TypeError as e:
        if not overrides:  # no option given: a bug, not the caller's mistake
            raise
        # A value of the wrong type that no check caught, deep in a constructor.
        given = ", ".join(f"{k}={v!r}" for k, v in overrides.items())
        raise ValueError(f"bad option for {name} ({given}): {e}") from e
    model.meta = entry.meta
    model.model_opts = dict(overrides)  # what rebuilds it (cnnzoo.save_weights records them)
    return model
