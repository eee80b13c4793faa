"""Weights from other libraries and repositories: layouts, detection and strict conversion.

A *layout* is how one source names (and sometimes shapes) the tensors of one cnnzoo family:

* ``rename``: one external key -> the cnnzoo key (``None`` drops a key that has no counterpart,
  such as a non-parameter buffer);
* ``transform``: changes to the renamed tensors that renaming cannot make (fold a conv bias
  into the BN after it, reshape an FC stored as a 7x7 conv);
* ``options``: the model options the source implies that no shape shows (akamaster's option-A
  shortcut pads channels on both sides; Caffe's ceil-mode stem pool in the SENet release).

Options that the shapes do show (timm's SE width rounded to 8, a projection shortcut, the number
of classes) are read from the renamed tensors by each family's :func:`register_shape_options`
function. :func:`detect_source` finds the layout whose renamed keys cover the most of the model's,
so a file of any registered layout loads without naming its source.

Sources: ``"cnnzoo"`` (native keys), ``"torchvision"``, ``"timm"`` (its current models and its
``legacy_seresnet*``), and the public CIFAR implementations ``"akamaster"``
(pytorch_resnet_cifar10), ``"bearpaw"`` (pytorch-classification), ``"moskomule"`` (senet.pytorch),
``"kuangliu"`` (pytorch-cifar), ``"bamos"`` (densenet.pytorch), ``"szagoruyko"``
(wide-residual-networks). See docs/weights.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

SOURCES = ("cnnzoo", "torchvision", "timm", "akamaster", "bearpaw", "moskomule", "kuangliu", "bamos",
           "szagoruyko")
KeyMap = Callable[[str], "str | None"]
State = dict[str, torch.Tensor]
Shapes = Mapping[str, torch.Size]


@dataclass(frozen=True)
class Layout:
    """How ``source`` names one family's tensors (see the module docstring).

    ``transform(state, own_shapes)`` gets the renamed tensors and the model's shapes and returns
    the tensors to load; ``options`` is a dict or ``f(renamed_state) -> dict``. ``variant`` names
    a second layout of the same source (timm's legacy SENet) in messages.
    """

    source: str
    rename: KeyMap
    transform: Callable[[State, Shapes], State] | None = None
    options: dict[str, Any] | Callable[[State], dict[str, Any]] = field(default_factory=dict)
    variant: str = ""

    @property
    def label(self) -> str:
        return f"{self.source} ({self.variant})" if self.variant else self.source

    def fixed_options(self, state: State) -> dict[str, Any]:
        return dict(self.options(state) if callable(self.options) else self.options)


_LAYOUTS: dict[type, list[Layout]] = {}
_SHAPE_OPTIONS: dict[type, Callable[[nn.Module, State], dict[str, Any]]] = {}


def _check_source(source: str) -> None:
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; choose one of {list(SOURCES)}")


def register_layout(model_cls: type, layout: Layout) -> Layout:
    """Register ``layout`` for models of ``model_cls`` (and subclasses)."""
    _check_source(layout.source)
    _LAYOUTS.setdefault(model_cls, []).append(layout)
    return layout


def register_mapping(model_cls: type, source: str) -> Callable[[KeyMap], KeyMap]:
    """Decorator: ``fn(external_key) -> cnnzoo_key | None``, a layout that only renames."""
    _check_source(source)

    def deco(fn: KeyMap) -> KeyMap:
        register_layout(model_cls, Layout(source, fn))
        return fn

    return deco


def register_shape_options(model_cls: type):
    """Decorator: ``fn(model, renamed_state) -> options`` that make ``model``'s shapes those of the
    state (only the options that differ from ``model``'s)."""

    def deco(fn):
        _SHAPE_OPTIONS[model_cls] = fn
        return fn

    return deco


def rename_prefix(key: str, prefixes: Mapping[str, str]) -> str | None:
    """``key`` with the first matching prefix of ``prefixes`` replaced; ``None`` if none matches."""
    for old, new in prefixes.items():
        if key.startswith(old):
            return new + key[len(old):]
    return None


# Every model can load its own keys.
register_layout(nn.Module, Layout("cnnzoo", lambda k: k))


def layouts_for(model: nn.Module, source: str | None = None) -> list[Layout]:
    """The layouts that can fill ``model``, optionally of one source: cnnzoo's own first, then its
    class's, then its bases'."""
    if source is not None:
        _check_source(source)
    found = [lay for cls in type(model).__mro__ for lay in _LAYOUTS.get(cls, ())
             if source is None or lay.source == source]
    found.sort(key=lambda lay: lay.source != "cnnzoo")  # stable: a tie goes to the native keys
    if not found:
        known = sorted({c.__name__ for c, lays in _LAYOUTS.items() for lay in lays if lay.source == source})
        raise ValueError(f"no {source} layout for {type(model).__name__}; {source} has layouts for {known}")
    return found


def _model_name(model: nn.Module) -> str:
    meta = getattr(model, "meta", None)
    return getattr(meta, "name", None) or type(model).__name__


def _fit_shape(v: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """``v`` reshaped to ``shape`` when they differ only by trailing 1s (a linear layer's weight as
    a 1x1 conv's, or the reverse); otherwise ``v`` unchanged."""
    def strip(s):
        s = list(s)
        while s and s[-1] == 1:
            s.pop()
        return s

    if tuple(v.shape) != tuple(shape) and v.ndim >= 2 and len(shape) >= 2 and strip(v.shape) == strip(shape):
        return v.reshape(shape)
    return v


@dataclass
class Renamed:
    """External tensors under cnnzoo names, and where each came from."""

    layout: Layout
    state: State
    origin: dict[str, str]  # cnnzoo key -> external key
    dropped: list[str]  # external keys the layout drops on purpose


def rename_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], layout: Layout) -> Renamed:
    """``state_dict`` in cnnzoo names and shapes (``layout``'s renaming and transform); no checks."""
    own = {k: v.shape for k, v in model.state_dict().items()}
    out: State = {}
    origin: dict[str, str] = {}
    dropped: list[str] = []
    for k, v in state_dict.items():
        nk = layout.rename(k)
        if nk is None:
            dropped.append(k)
            continue
        if nk in out:
            raise ValueError(f"{layout.label} keys {origin[nk]!r} and {k!r} both map to {nk!r}")
        out[nk] = _fit_shape(v, own[nk]) if nk in own else v
        origin[nk] = k
    if layout.transform is not None:
        out = layout.transform(out, own)
        origin.update({k: k for k in out if k not in origin})
    return Renamed(layout, out, origin, dropped)


def _score(model_keys: set[str], renamed: Renamed) -> int:
    return sum(k in model_keys for k in renamed.state)


def best_layout(model: nn.Module, state_dict: Mapping[str, torch.Tensor],
                source: str | None = None) -> Renamed:
    """The renamed ``state_dict`` under the layout (of ``source``, or any) that covers the most of
    ``model``'s keys; in a tie cnnzoo's own, then the first registered (torchvision before timm:
    the same names)."""
    keys = set(model.state_dict())
    best: Renamed | None = None
    for layout in layouts_for(model, source):
        try:
            r = rename_state_dict(model, state_dict, layout)
        except ValueError:
            continue  # keys this layout cannot tell apart: not its file
        if best is None or _score(keys, r) > _score(keys, best):
            best = r
    if best is None:
        raise ValueError(f"no {source or 'known'} layout can rename these weights for {_model_name(model)}")
    return best


def detect_source(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> str:
    """The source whose layout names ``state_dict`` as ``model``'s keys (see :func:`best_layout`)."""
    return best_layout(model, state_dict).layout.source


def first_conv(model: nn.Module) -> str | None:
    """Name of ``model``'s first ``Conv2d`` (the one that sees the input channels)."""
    return next((n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)


def classifier_name(model: nn.Module) -> str | None:
    """Name of ``model``'s final linear layer (``get_classifier()``), if it has one."""
    get = getattr(model, "get_classifier", None)
    fc = get() if callable(get) else None
    if not isinstance(fc, nn.Linear):
        return None
    return next((n for n, m in model.named_modules() if m is fc), None)


def _io_options(model: nn.Module, state: State) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    fc, conv = classifier_name(model), first_conv(model)
    own = model.state_dict()
    if fc and f"{fc}.weight" in state and state[f"{fc}.weight"].ndim == 2:
        if state[f"{fc}.weight"].shape[0] != own[f"{fc}.weight"].shape[0]:
            opts["num_classes"] = int(state[f"{fc}.weight"].shape[0])
    if conv and f"{conv}.weight" in state and state[f"{conv}.weight"].ndim == 4:
        if state[f"{conv}.weight"].shape[1] != own[f"{conv}.weight"].shape[1]:
            opts["in_chans"] = int(state[f"{conv}.weight"].shape[1])
    return opts


def layout_options(model: nn.Module, renamed: Renamed) -> dict[str, Any]:
    """Model options that make ``model`` fit ``renamed``: the layout's own, then those its shapes
    show (only where they differ from ``model``'s): number of classes and input channels, and
    each family's (:func:`register_shape_options`)."""
    opts = renamed.layout.fixed_options(renamed.state)
    opts.update(_io_options(model, renamed.state))
    for cls in type(model).__mro__:
        if cls in _SHAPE_OPTIONS:
            opts.update(_SHAPE_OPTIONS[cls](model, renamed.state))
            break
    return opts


def mismatches(model: nn.Module, renamed: Renamed) -> tuple[list[str], list[str], list[str]]:
    """``(missing, unused, misshapen)`` descriptions, in ``model``'s key order.

    Missing ``num_batches_tracked`` buffers are not counted: files saved before PyTorch 0.4
    have none, and torch's own strict loading accepts their absence too.
    """
    own = model.state_dict()
    state = renamed.state
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unused = [renamed.origin.get(k, k) for k in state if k not in own]
    shapes = [f"{renamed.origin.get(k, k)} {tuple(state[k].shape)} -> {k} {tuple(own[k].shape)}"
              for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    return missing, unused, shapes


def mismatch_message(model: nn.Module, renamed: Renamed, what: str | None = None) -> str | None:
    """One line naming the first missing, unused and misshapen tensors; ``None`` if all fit."""
    missing, unused, shapes = mismatches(model, renamed)
    if not (missing or unused or shapes):
        return None
    parts = []
    if shapes:
        parts.append(f"shape mismatch in {len(shapes)} (first: {shapes[0]})")
    if missing:
        parts.append(f"{len(missing)} missing (first: {', '.join(missing[:3])})")
    if unused:
        parts.append(f"{len(unused)} unused (first: {', '.join(unused[:3])})")
    what = what or f"{renamed.layout.label} weights"
    msg = f"{what} do not fit {_model_name(model)}: {'; '.join(parts)}"
    try:
        opts = {k: v for k, v in layout_options(model, renamed).items()}
    except Exception:  # a shape too odd to read options from: the mismatch is the message
        opts = {}
    if opts:
        args = ", ".join(f"{k}={v!r}" for k, v in opts.items())
        msg += (f" (these weights need the options {args}: create_model(name, pretrained=FILE), or "
                "--opt pretrained=FILE on the command line, sets them)")
    return msg


def complete(model: nn.Module, state: State) -> State:
    """``state`` with the model's own ``num_batches_tracked`` where the weights have none."""
    own = model.state_dict()
    extra = {k: own[k] for k in own if k.endswith("num_batches_tracked") and k not in state}
    return {**state, **extra} if extra else state


def convert_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor],
                       source: str) -> dict[str, torch.Tensor]:
    """Rename ``state_dict``'s keys to ``model``'s and check the result covers it exactly."""
    renamed = best_layout(model, state_dict, source)
    msg = mismatch_message(model, renamed)
    if msg:
        raise ValueError(msg)
    return complete(model, renamed.state)


def load_external(model: nn.Module, state_dict: Mapping[str, torch.Tensor] | nn.Module,
                  source: str) -> nn.Module:
    """Load a ``state_dict`` (or model) of ``source``'s layout into a cnnzoo ``model``, strictly.

    Returns ``model``. Raises ``ValueError`` naming unused, missing or misshapen tensors. The model
    must already have the options the layout needs (``create_model(name, pretrained=...)`` and
    :func:`cnnzoo.weights.load_weights` find them).
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


# Each family's module registers its layouts on import.
from . import densenet, googlenet, resnet, vgg  # noqa: E402,F401

__all__ = ["SOURCES", "Layout", "Renamed", "best_layout", "classifier_name", "convert_state_dict",
           "detect_source", "first_conv",
           "layout_options", "layouts_for", "load_external", "mismatch_message", "register_layout",
           "register_mapping", "register_shape_options", "rename_prefix", "rename_state_dict"]
