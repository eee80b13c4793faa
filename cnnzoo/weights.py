"""Weights files: read them safely, find their layout, load them, save them with what rebuilds them.

``create_model(name, pretrained=...)`` comes here. ``pretrained`` is ``"torchvision"`` or
``"timm"`` (downloaded by those libraries' loaders; ``"timm:legacy_seresnet50"`` names another
timm model), a state dict, or a local file: a PyTorch file (``.pth``/``.pt``/``.th``, read with
``torch.load(weights_only=True)``; a ``{"state_dict": ...}`` or ``{"model": ...}`` wrapper and
``module.`` prefixes are unwrapped) or ``.safetensors``. The file's format is read from its first
bytes, not its name.

Nothing here executes code from a file: PyTorch files are unpickled with torch's restricted
unpickler, which refuses every Python object but tensors and plain containers, and safetensors
holds no code at all.

The layout (cnnzoo, torchvision, timm or one of the public CIFAR implementations) is detected
from the keys (:mod:`cnnzoo.interop`), and the model is built with the options the layout needs
(e.g. timm's SE width, akamaster's option-A padding), the number of classes and input channels
of the weights, then the caller's options. Where the caller asks for another number of classes,
the classifier is re-initialised (with a warning); for other input channels, the first conv is
adapted (:func:`adapt_input_conv`).

:func:`save_weights` writes safetensors with the model's name and options as metadata, so
``create_model(path)`` rebuilds the model.
"""

from __future__ import annotations

import json
import math
import os
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from . import interop
from ._registry import create_model

FORMAT = "cnnzoo-weights/1"
LIBRARIES = ("torchvision", "timm")

# cnnzoo name -> (torchvision builder, options its weights were trained with)
TORCHVISION_NAMES: dict[str, tuple[str, dict[str, Any]]] = {
    **{f"resnet{d}": (f"resnet{d}", {}) for d in (18, 34, 50, 101, 152)},
    "wide_resnet50_2": ("wide_resnet50_2", {}),
    **{f"densenet{d}": (f"densenet{d}", {}) for d in (121, 161, 169, 201)},
    **{f"vgg{d}{bn}": (f"vgg{d}{bn}", {}) for d in (11, 13, 16, 19) for bn in ("", "_bn")},
    "googlenet_tv": ("googlenet", {"transform_input": True}),
}
# cnnzoo name -> timm model whose default pretrained weights load into it
TIMM_NAMES: dict[str, str] = {
    **{f"resnet{d}": f"resnet{d}" for d in (18, 34, 50, 101, 152)},
    "wide_resnet50_2": "wide_resnet50_2",
    "se_resnet50": "seresnet50",
    # timm's seresnet18/34/101/152 have no weights: its legacy SENet models (the authors' layout) do
    **{f"se_resnet{d}": f"legacy_seresnet{d}" for d in (18, 34, 101, 152)},
    **{f"densenet{d}": f"densenet{d}" for d in (121, 161, 169, 201)},
    **{f"vgg{d}{bn}": f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn")},
}


# --------------------------------------------------------------------------------------------
# Reading files.


def _one_line(msg: str, limit: int = 160) -> str:
    line = msg.strip().splitlines()[0] if msg.strip() else ""
    if ". " in line[:limit]:  # torch's messages run on for several sentences
        line = line[: line.index(". ", 0, limit) + 1]
    return line if len(line) <= limit else line[: limit - 3] + "..."


def sniff_format(path: str | os.PathLike) -> str:
    """``"safetensors"``, ``"torch"`` (zip or legacy pickle), or a short description of what the
    file is instead (``"an empty file"``, ``"text ('...')"``, ``"unrecognised bytes"``)."""
    with open(path, "rb") as f:
        head = f.read(64)
    if not head:
        return "an empty file"
    if head.startswith(b"PK\x03\x04") or (head[0] == 0x80 and 2 <= head[1] <= 5):
        return "torch"
    if len(head) > 8 and head[8:9] == b"{" and 2 <= int.from_bytes(head[:8], "little") < 100_000_000:
        return "safetensors"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return "unrecognised bytes"
    return f"text ({text.strip()[:30]!r})"


def _read_torch(path: Path) -> dict[str, torch.Tensor]:
    from .train.checkpoint import read_weights  # one-line errors; pickled objects refused and named

    return read_weights(path)[0]


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no items()
    except Exception as e:  # SafetensorError: bad header, truncated data
        raise ValueError(f"cannot read {path}: truncated or corrupted safetensors file "
                         f"({_one_line(str(e))})") from None
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state, meta


def read_state_dict(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors in a weights file (or a training run folder: its ``best.pt``) and the file's
    metadata (a safetensors header's; empty for PyTorch files). Never executes code from the file.

    Raises ``ValueError`` in one line for a missing, empty, truncated, unsafe or foreign file.
    """
    p = Path(path)
    if p.is_dir():
        return _read_torch(p), {}
    if not p.exists():
        raise ValueError(f"no weights file at {p}")
    kind = sniff_format(p)
    if kind == "safetensors":
        state, meta = _read_safetensors(p)
    elif kind == "torch":
        state, meta = _read_torch(p), {}
    else:
        raise ValueError(f"{p} is not a weights file: expected a PyTorch (.pth/.pt/.th) or .safetensors "
                         f"file, found {kind}")
    if not state:
        raise ValueError(f"{p} holds no tensors")
    return state, meta


# --------------------------------------------------------------------------------------------
# Downloads (torchvision's and timm's own loaders).


def _offline(library: str, model: str, url: str, e: Exception) -> ValueError:
    reason = f"{type(e).__name__}: {_one_line(str(e), 100)}"
    return ValueError(f"cannot download {library}'s {model} weights ({reason}); offline, fetch {url} "
                      f"elsewhere and pass its local path: pretrained='path/to/file' (command line: "
                      f"--opt pretrained=path/to/file)")


def download_torchvision(name: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """torchvision's default weights for cnnzoo model ``name``, and the options they need."""
    import torchvision

    if name not in TORCHVISION_NAMES:
        raise ValueError(f"torchvision has no weights for {name}; it has weights for "
                         f"{sorted(TORCHVISION_NAMES)}")
    tv_name, opts = TORCHVISION_NAMES[name]
    url = torchvision.models.get_model_weights(tv_name).DEFAULT.url
    try:
        state = torch.hub.load_state_dict_from_url(url, map_location="cpu", weights_only=True,
                                                   check_hash=True)
    except (OSError, RuntimeError) as e:  # no network (URLError is an OSError), a bad download
        raise _offline("torchvision", tv_name, url, e) from None
    return state, opts


def download_timm(name: str, timm_name: str | None = None) -> dict[str, torch.Tensor]:
    """timm's default pretrained weights of ``timm_name`` (default: the model ``name`` maps to)."""
    try:
        import timm
    except ImportError:
        raise ValueError("pretrained='timm' needs timm: pip install timm") from None
    timm_name = timm_name or TIMM_NAMES.get(name)
    if timm_name is None:
        raise ValueError(f"no timm weights known for {name} (known: {sorted(TIMM_NAMES)}); "
                         f"name one: pretrained='timm:MODEL'")
    try:
        cfg = timm.models.get_pretrained_cfg(timm_name)
    except Exception:
        cfg = None
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise ValueError(f"timm has no pretrained weights for {timm_name!r}")
    if cfg.hf_hub_id:
        from huggingface_hub import hf_hub_download

        where = f"https://huggingface.co/{cfg.hf_hub_id}"
        try:
            file = hf_hub_download(cfg.hf_hub_id, filename=cfg.hf_hub_filename or "model.safetensors")
        except Exception as e:  # no network, no cache: huggingface_hub's errors are many
            raise _offline("timm", timm_name, where, e) from None
        return read_state_dict(file)[0]
    try:
        return torch.hub.load_state_dict_from_url(cfg.url, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as e:
        raise _offline("timm", timm_name, cfg.url, e) from None


# --------------------------------------------------------------------------------------------
# Loading into a model.


def adapt_input_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """A first conv's ``weight`` ``(out, c, k, k)`` for ``in_chans`` input channels: summed over
    its channels for 1 (a grey image is R = G = B), otherwise its channels repeated to
    ``in_chans`` and scaled by ``c / in_chans`` (the same response to an input whose channels all
    carry the same image)."""
    c = weight.shape[1]
    if in_chans == c:
        return weight
    if in_chans == 1:
        return weight.sum(1, keepdim=True)
    reps = math.ceil(in_chans / c)
    return weight.repeat(1, reps, 1, 1)[:, :in_chans] * (c / in_chans)


def _warn(msg: str) -> None:
    """A ``UserWarning`` attributed to the caller's first line outside cnnzoo."""
    package = os.path.dirname(os.path.abspath(__file__))
    frame, level = sys._getframe(1), 2
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package + os.sep):
        frame, level = frame.f_back, level + 1
    warnings.warn(msg, UserWarning, stacklevel=level)


def _adapt(model: nn.Module, state: dict[str, torch.Tensor], where: str) -> dict[str, torch.Tensor]:
    """Re-initialise a classifier for another number of classes (warning), adapt the first conv
    to other input channels."""
    own = model.state_dict()
    state = dict(state)
    conv = interop.first_conv(model)
    k = f"{conv}.weight" if conv else None
    if k in state and k in own and state[k].ndim == 4 and state[k].shape[1] != own[k].shape[1] \
            and state[k].shape[0] == own[k].shape[0]:
        state[k] = adapt_input_conv(state[k], own[k].shape[1])
    classes = getattr(model, "num_classes", None)
    heads = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and m.out_features == classes]
    keys = [f"{n}.{p}" for n in heads for p in ("weight", "bias")]
    differ = [k for k in keys if k in state and k in own and state[k].shape != own[k].shape
              and state[k].shape[1:] == own[k].shape[1:]]
    if differ:
        old = state[differ[0]].shape[0]
        names = sorted({k.rsplit(".", 1)[0] for k in differ})
        _warn(f"{where}: the classifier ({', '.join(names)}) is re-initialised: the weights are "
              f"for {old} classes, the model has {classes}")
        state.update({k: own[k] for k in keys if k in state})
    return state


def _load_renamed(model: nn.Module, renamed: interop.Renamed, where: str) -> nn.Module:
    renamed.state = _adapt(model, renamed.state, where)
    msg = interop.mismatch_message(model, renamed, what=f"{where} ({renamed.layout.label} layout)")
    if msg:
        raise ValueError(msg)
    model.load_state_dict(interop.complete(model, renamed.state), strict=True)
    return model


def _state_of(weights) -> tuple[dict[str, torch.Tensor], dict[str, str], str]:
    if isinstance(weights, nn.Module):
        return weights.state_dict(), {}, f"{type(weights).__name__} weights"
    if isinstance(weights, Mapping):
        return dict(weights), {}, "the state dict"
    if isinstance(weights, (str, os.PathLike)):
        state, meta = read_state_dict(weights)
        return state, meta, str(weights)
    raise ValueError(f"weights must be a path, a state dict or a model, got {type(weights).__name__}")


def load_weights(model: nn.Module, weights, source: str | None = None) -> nn.Module:
    """Load a weights file, state dict or model of any known layout into the built ``model``.

    The layout is detected unless ``source`` names it. The model must already have the options
    the weights need (see ``create_model(name, pretrained=...)``, which finds them); a classifier
    for another number of classes is re-initialised with a warning and the first conv adapted to
    the model's input channels. Returns ``model``; a mismatch raises ``ValueError`` naming the
    first differing keys or shapes.
    """
    state, _, where = _state_of(weights)
    return _load_renamed(model, interop.best_layout(model, state, source), where)


def _probe(name: str, opts: dict[str, Any]) -> nn.Module:
    with torch.device("meta"):
        return create_model(name, **opts)


def saved_options(meta: Mapping[str, str]) -> tuple[str | None, dict[str, Any]]:
    """The model name and options a :func:`save_weights` file records (``(None, {})`` if none)."""
    if meta.get("format") != FORMAT:
        return None, {}
    try:
        opts = json.loads(meta.get("options") or "{}")
    except json.JSONDecodeError:
        opts = {}
    return meta.get("model"), opts if isinstance(opts, dict) else {}


def build_with_weights(name: str, state: Mapping[str, torch.Tensor], where: str,
                       source: str | None = None, saved: dict[str, Any] | None = None,
                       **overrides: Any) -> nn.Module:
    """Build model ``name`` with the options ``state``'s layout needs (after ``saved`` options,
    before ``overrides``) and load ``state`` into it."""
    base = dict(saved or {})
    probe = _probe(name, {**base, **overrides})
    renamed = interop.best_layout(probe, state, source)
    needed = {k: v for k, v in interop.layout_options(probe, renamed).items() if k not in overrides}
    opts = {**base, **needed, **overrides}
    try:
        model = create_model(name, **opts)
    except ValueError as e:
        if not needed:
            raise
        args = ", ".join(f"{k}={v!r}" for k, v in needed.items())
        raise ValueError(f"{where} ({renamed.layout.label} layout) needs {args}, which {name} does not "
                         f"accept: {_one_line(str(e))}") from None
    # Rename again for the final model: reshapes and transforms follow its shapes.
    renamed = interop.rename_state_dict(model, state, renamed.layout)
    _load_renamed(model, renamed, where)
    model.model_opts = opts
    return model


def create_pretrained(name: str, pretrained: str | os.PathLike, source: str | None = None,
                      **overrides: Any) -> nn.Module:
    """``create_model(name, pretrained=..., source=..., **overrides)`` (see the module docstring)."""
    if isinstance(pretrained, str) and pretrained.split(":", 1)[0] in LIBRARIES:
        library, _, other = pretrained.partition(":")
        if library == "torchvision":
            if other:
                raise ValueError("pretrained='torchvision' takes no model name; give a cnnzoo name "
                                 f"of {sorted(TORCHVISION_NAMES)}")
            state, defaults = download_torchvision(name)
        else:
            state, defaults = download_timm(name, other or None), {}
        return build_with_weights(name, state, f"{pretrained} weights", source or library,
                                  **{**defaults, **overrides})
    if isinstance(pretrained, Mapping):  # a state dict already in memory
        return build_with_weights(name, dict(pretrained), "the state dict", source, **overrides)
    if not isinstance(pretrained, (str, os.PathLike)):
        raise ValueError(f"pretrained must be 'torchvision', 'timm', a path or a state dict, "
                         f"got {type(pretrained).__name__}")
    state, meta = read_state_dict(pretrained)
    saved_name, saved = saved_options(meta)
    return build_with_weights(name, state, str(pretrained), source,
                              saved if saved_name == name else None, **overrides)


def create_from_file(path: str | os.PathLike, source: str | None = None, **overrides: Any) -> nn.Module:
    """``create_model(path)``: the model a :func:`save_weights` file names, with its weights."""
    state, meta = read_state_dict(path)
    name, saved = saved_options(meta)
    if not name:
        raise ValueError(f"{path} does not say which model it holds (no cnnzoo metadata); name the model: "
                         f"create_model('resnet20', pretrained={str(path)!r}), on the command line "
                         f"resnet20 --opt pretrained={path}")
    return build_with_weights(name, state, str(path), source, saved, **overrides)


# --------------------------------------------------------------------------------------------
# Saving.


def save_weights(model: nn.Module, path: str | os.PathLike) -> None:
    """Write ``model``'s tensors to ``path`` as safetensors, with its registered name and options
    as metadata, so that ``create_model(path)`` rebuilds it. The file is written atomically."""
    import safetensors.torch

    from .train.checkpoint import atomic_write

    meta = getattr(model, "meta", None)
    opts = dict(getattr(model, "model_opts", None) or {})
    if hasattr(model, "num_classes"):
        opts["num_classes"] = int(model.num_classes)
    conv = interop.first_conv(model)
    if conv and "in_chans" not in opts:
        c = model.get_submodule(conv).in_channels
        if c != 3:
            opts["in_chans"] = c
    for k, v in opts.items():
        try:
            json.dumps(v)
        except TypeError:
            raise ValueError(f"cannot record option {k}={v!r} in {path}: only plain values "
                             f"(numbers, strings, lists) can be saved as metadata") from None
    header = {"format": FORMAT, "options": json.dumps(opts, sort_keys=True)}
    if getattr(meta, "name", None):
        header["model"] = meta.name
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    data = safetensors.torch.save(tensors, metadata=header)
    atomic_write(path, lambda f: f.write(data))


__all__ = ["FORMAT", "TIMM_NAMES", "TORCHVISION_NAMES", "adapt_input_conv", "build_with_weights",
           "create_from_file", "create_pretrained", "load_weights", "read_state_dict", "save_weights",
           "sniff_format"]
