"""Training configuration: one flat dataclass of plain values, and recipes as data.

A run's configuration is resolved in layers, each overriding the previous one:
``TrainConfig`` defaults < the recipe < a YAML file < command-line flags. The resolved config
is plain types only (str, int, float, bool, None, lists, dicts), so it is saved verbatim in
``DIR/config.yaml``, in every checkpoint and in ``results.json``.
"""

from __future__ import annotations

import math
import re
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from typing import Any

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("multistep", "cosine", "linear", "constant")
WARMUP_MODES = ("linear", "constant")
AMP_MODES = ("none", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class TrainConfig:
    """Everything that defines a training run.

    Length: exactly one of ``epochs`` and ``iters``. Learning rate at optimizer step ``t`` of a
    run of ``T`` steps is ``lr * lr_factor(t)`` (see :func:`lr_factor`): an optional warm-up,
    then ``schedule``. ``milestones`` are fractions of the run (``0.5`` = half-way), so a recipe
    keeps its shape when its length is changed. ``warmup`` is a fraction of the run when below 1,
    else a number of iterations; ``warmup_min_depth`` applies the warm-up only to networks with at
    least that many conv/linear layers (the ResNet paper's warm-up for ResNet-110 and deeper).
    """

    model: str | None = None
    model_opts: dict[str, Any] = field(default_factory=dict)
    # trained weights to start from: a run folder (its best.pt) or a checkpoint/weights file
    init_from: str | None = None
    # data (see cnnzoo.data.load_data)
    data: str = "digits"
    data_dir: str = "./data"
    download: bool = False
    val_size: int | float | None = None
    image_size: int | None = None
    subset: int | None = None
    cache_dir: str | None = None
    # length
    recipe: str = "fast"
    epochs: int | None = None
    iters: int | None = None
    batch_size: int = 128
    # small datasets: halve batch_size (down to 8) until an epoch has this many steps, scaling lr
    # by sqrt(new / old) (0: off; off as well when batch_size is given explicitly)
    min_steps_per_epoch: int = 0
    # optimization
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    schedule: str = "multistep"
    milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])
    gamma: float = 0.1
    warmup: float = 0.0
    warmup_mode: str = "linear"
    warmup_factor: float = 0.1
    warmup_min_depth: int = 0
    # regularization
    label_smoothing: float = 0.0
    mixup: float = 0.0
    cutmix: float = 0.0
    ema_decay: float = 0.0
    clip_grad: float = 0.0
    aux_weight: float = 0.3
    # precise BN: before each evaluation, recompute BatchNorm statistics as a plain average over
    # this many training batches of the current weights (0: off, keep the running averages)
    precise_bn: int = 0
    # execution
    seed: int = 0
    amp: str = "none"
    # memory format: True (channels-last), False (NCHW) or "auto": the faster of the two for this
    # run, measured before the first step (cnnzoo/train/layout.py); config.yaml records the choice
    channels_last: bool | str = "auto"
    compile: bool = False
    device: str = "auto"
    threads: int | None = None  # torch intra-op threads per process (None: torch's default)
    sync_bn: bool = False
    out: str | None = None
    checkpoint_every: int = 500

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        check_keys(d, "config")
        return cls(**d)


@dataclass(frozen=True)
class Recipe:
    """A named set of config values with the source it follows."""

    name: str
    description: str
    settings: dict[str, Any]


RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe("resnet-cifar",
           "He et al. 2016 Sec. 4.2: SGD momentum 0.9, lr 0.1, wd 1e-4, batch 128, lr/10 at 32k and "
           "48k iterations, stop at 64k; lr 0.01 for the first 400 iterations for 110+ layers",
           dict(iters=64_000, batch_size=128, optimizer="sgd", lr=0.1, momentum=0.9, nesterov=False,
                weight_decay=1e-4, schedule="multistep", milestones=[0.5, 0.75], gamma=0.1,
                warmup=400, warmup_mode="constant", warmup_factor=0.1, warmup_min_depth=110)),
    Recipe("densenet-cifar",
           "Huang et al. 2017: SGD Nesterov momentum 0.9, lr 0.1, wd 1e-4, batch 64, 300 epochs, "
           "lr/10 at 50% and 75%",
           dict(epochs=300, batch_size=64, optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True,
                weight_decay=1e-4, schedule="multistep", milestones=[0.5, 0.75], gamma=0.1)),
    Recipe("wrn-cifar",
           "Zagoruyko & Komodakis 2016: SGD Nesterov momentum 0.9, lr 0.1, wd 5e-4, batch 128, "
           "200 epochs, lr x0.2 at epochs 60, 120, 160",
           dict(epochs=200, batch_size=128, optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True,
                weight_decay=5e-4, schedule="multistep", milestones=[0.3, 0.6, 0.8], gamma=0.2)),
    Recipe("vgg-cifar",
           "the common CIFAR recipe for VGG with BN (the VGG paper trained on ImageNet only): SGD "
           "momentum 0.9, lr 0.05, wd 5e-4, batch 128, 160 epochs, lr/10 at 50% and 75%",
           dict(epochs=160, batch_size=128, optimizer="sgd", lr=0.05, momentum=0.9, nesterov=False,
                weight_decay=5e-4, schedule="multistep", milestones=[0.5, 0.75], gamma=0.1)),
    Recipe("fast",
           "best accuracy per CPU-minute: 15 epochs, one-cycle (linear warm-up over 20%, linear "
           "decay to 0), SGD Nesterov, lr 0.2, wd 5e-4, batch 128 (smaller on small datasets, so that "
           "an epoch has at least 64 steps), label smoothing 0.1, precise BN over 20 batches",
           dict(epochs=15, batch_size=128, optimizer="sgd", lr=0.2, momentum=0.9, nesterov=True,
                weight_decay=5e-4, schedule="linear", warmup=0.2, warmup_mode="linear",
                warmup_factor=0.1, label_smoothing=0.1, min_steps_per_epoch=64, precise_bn=20)),
)}


def _field_names() -> list[str]:
    return [f.name for f in fields(TrainConfig)]


def check_keys(d: dict[str, Any], where: str) -> None:
    bad = sorted(set(d) - set(_field_names()))
    if bad:
        raise ValueError(f"unknown key(s) {', '.join(bad)} in {where}; allowed: {', '.join(_field_names())}")


# --------------------------------------------------------------------------------------------
# Types: every value is checked against its TrainConfig field's annotation, so a string where a
# number belongs is named as such (not a TypeError deep in the run).

_NOUNS = {bool: ("true or false", "booleans"), int: ("an integer", "integers"),
          float: ("a number", "numbers"), str: ("a string", "strings"), type(None): ("none", "nones")}


def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig)


def _members(hint) -> tuple:
    """A union's members (``int | None`` -> (int, NoneType)); any other type alone."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return typing.get_args(hint)
    return (hint,)


def _fits(value: Any, hint) -> bool:
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin in (list, tuple):
        (item,) = typing.get_args(hint)[:1] or (Any,)
        return isinstance(value, (list, tuple)) and all(_fits(v, item) for v in value)
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    if hint is float:  # an int is a number too (YAML reads 1 as an int)
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _describe(hint) -> str:
    """What a value of ``hint`` is, in words: ``int | float | None`` -> 'a number or none'."""
    words = []
    members = _members(hint)
    for m in members:
        if m is int and float in members:
            continue  # a number covers it
        origin = typing.get_origin(m)
        if origin in (list, tuple):
            item = (typing.get_args(m) or (Any,))[0]
            words.append(f"a list of {_NOUNS[item][1]}" if item in _NOUNS else "a list")
        elif origin is dict or m is dict:
            words.append("a mapping")
        else:
            words.append(_NOUNS.get(m, (m.__name__,))[0])
    return " or ".join(words)


def check_types(d: dict[str, Any], where: str | None = None) -> None:
    """Raise ``ValueError`` naming the key (and ``where``) of the first value of the wrong type."""
    hints = _field_types()
    for key, value in d.items():
        if key in hints and not any(_fits(value, m) for m in _members(hints[key])):
            prefix = f"{where}: " if where else ""
            raise ValueError(f"{prefix}{key} must be {_describe(hints[key])}, got {value!r}")


_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _yaml_numbers(d: dict[str, Any]) -> dict[str, Any]:
    """Numbers that YAML 1.1 reads as text (``1e-3``: no dot), as numbers where a number belongs."""
    def num(v):
        return float(v) if isinstance(v, str) and _NUMBER.fullmatch(v.strip()) else v

    hints = _field_types()
    out = dict(d)
    for key, value in d.items():
        members = _members(hints.get(key))
        if float in members:
            out[key] = num(value)
        elif list[float] in members and isinstance(value, list):
            out[key] = [num(v) for v in value]
    return out


# Model options that the data decides: the engine passes them to create_model itself.
DATA_DECIDES = {"num_classes": "its number of classes", "in_chans": "its number of image channels"}


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")
    return RECIPES[name]


def load_yaml(path: str) -> dict[str, Any]:
    """A YAML config file as a dict of TrainConfig keys (``opt`` is accepted for ``model_opts``)."""
    import yaml

    try:
        with open(path) as f:
            d = yaml.safe_load(f)
    except FileNotFoundError:
        raise ValueError(f"config file {path} does not exist") from None
    except yaml.YAMLError as e:
        raise ValueError(f"config file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    # any other OSError (a folder, no permission) is reported by the caller's boundary (cnnzoo.cli)
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise ValueError(f"config file {path} must hold a mapping of keys to values")
    where = f"config file {path}"
    for key in ("opt", "model_opts"):
        if d.get(key) is not None and not isinstance(d[key], dict):
            raise ValueError(f"{where}: {key} must be a mapping of model options, got {d[key]!r}")
    if "opt" in d:
        d["model_opts"] = {**(d.get("model_opts") or {}), **(d.pop("opt") or {})}
    check_keys(d, where)
    d = _yaml_numbers(d)
    check_types(d, where)
    return d


def _one_length(layer: dict[str, Any], where: str) -> None:
    if layer.get("epochs") is not None and layer.get("iters") is not None:
        raise ValueError(f"give either epochs or iters, not both ({where})")


def resolve_config(flags: dict[str, Any] | None = None, yaml_config: dict[str, Any] | None = None
                   ) -> TrainConfig:
    """Defaults < recipe < ``yaml_config`` < ``flags`` (``None`` values in ``flags`` mean unset).

    A layer that sets ``epochs`` or ``iters`` replaces the run length of the layers below it.
    """
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    yaml_config = dict(yaml_config or {})
    check_keys(flags, "flags")
    check_keys(yaml_config, "config")
    check_types(yaml_config, "config")
    check_types(flags)
    _one_length(flags, "flags")
    _one_length(yaml_config, "config file")
    name = flags.get("recipe") or yaml_config.get("recipe") or TrainConfig.recipe
    merged: dict[str, Any] = {}
    for layer in (dict(get_recipe(name).settings), yaml_config, flags):
        if layer.get("epochs") is not None or layer.get("iters") is not None:
            merged.pop("epochs", None)
            merged.pop("iters", None)
        if "model_opts" in layer:
            layer = {**layer, "model_opts": {**merged.get("model_opts", {}), **layer["model_opts"]}}
        merged.update(layer)
    merged["recipe"] = name
    explicit = {**yaml_config, **flags}
    if "batch_size" in explicit and "min_steps_per_epoch" not in explicit:
        merged["min_steps_per_epoch"] = 0  # a batch size the user chose is used as given
    cfg = TrainConfig(**merged)
    validate(cfg)
    return cfg


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


def validate(cfg: TrainConfig) -> None:
    """Raise ``ValueError`` with a one-line message on any invalid value (or value of the wrong type)."""
    _check(isinstance(cfg.model, str) and bool(cfg.model), "no model given: e.g. cnnzoo train resnet20")
    check_types({f.name: getattr(cfg, f.name) for f in fields(cfg)})
    for key, why in DATA_DECIDES.items():
        _check(key not in cfg.model_opts,
               f"model option {key} is decided by the data ({why}), not by --opt or model_opts: remove it")
    _check(cfg.init_from is None or (isinstance(cfg.init_from, str) and bool(cfg.init_from)),
           f"init_from must be a run folder or a weights file, got {cfg.init_from!r}")
    _check((cfg.epochs is None) != (cfg.iters is None), "give either epochs or iters, not both")
    for name in ("epochs", "iters", "batch_size", "threads"):
        v = getattr(cfg, name)
        _check(v is None or (isinstance(v, int) and not isinstance(v, bool) and v > 0),
               f"{name} must be a positive integer, got {v!r}")
    for name, choices in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES), ("amp", AMP_MODES),
                          ("device", DEVICES), ("warmup_mode", WARMUP_MODES)):
        _check(getattr(cfg, name) in choices,
               f"{name}={getattr(cfg, name)!r} is not allowed; choose one of {', '.join(choices)}")
    _check(cfg.lr > 0, f"lr must be positive, got {cfg.lr!r}")
    for name in ("momentum", "weight_decay", "mixup", "cutmix", "clip_grad", "aux_weight", "warmup"):
        _check(getattr(cfg, name) >= 0, f"{name} must be >= 0, got {getattr(cfg, name)!r}")
    _check(0 <= cfg.label_smoothing < 1, f"label_smoothing must be in [0, 1), got {cfg.label_smoothing!r}")
    _check(0 <= cfg.ema_decay < 1, f"ema_decay must be in [0, 1) (0 = off), got {cfg.ema_decay!r}")
    _check(0 < cfg.gamma <= 1, f"gamma must be in (0, 1], got {cfg.gamma!r}")
    _check(0 < cfg.warmup_factor <= 1, f"warmup_factor must be in (0, 1], got {cfg.warmup_factor!r}")
    _check(all(0 < m < 1 for m in cfg.milestones) and list(cfg.milestones) == sorted(cfg.milestones),
           f"milestones must be increasing fractions of the run in (0, 1), got {cfg.milestones!r}")
    _check(cfg.channels_last in (True, False, "auto"),
           f"channels_last must be true, false or 'auto', got {cfg.channels_last!r}")
    for name in ("min_steps_per_epoch", "precise_bn"):
        v = getattr(cfg, name)
        _check(isinstance(v, int) and not isinstance(v, bool) and v >= 0,
               f"{name} must be an integer >= 0 (0: off), got {v!r}")
    _check(isinstance(cfg.checkpoint_every, int) and cfg.checkpoint_every >= 0,
           f"checkpoint_every must be an integer >= 0 (0: at epoch ends only), got {cfg.checkpoint_every!r}")
    _check(not (cfg.nesterov and cfg.optimizer == "sgd" and cfg.momentum == 0),
           "nesterov needs momentum > 0")


def lr_factor(step: int, total: int, cfg: TrainConfig, depth: int = 0) -> float:
    """The multiplier of ``cfg.lr`` at optimizer step ``step`` (0-based) of a ``total``-step run."""
    warm = cfg.warmup * total if cfg.warmup < 1 else cfg.warmup
    warm = int(round(warm)) if depth >= cfg.warmup_min_depth else 0
    if step < warm:
        if cfg.warmup_mode == "constant":
            return cfg.warmup_factor
        return cfg.warmup_factor + (1 - cfg.warmup_factor) * step / warm
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "multistep":
        return cfg.gamma ** sum(step >= round(m * total) for m in cfg.milestones)
    # cosine and linear run from the end of the warm-up to the end of the run.
    t = (step - warm) / max(total - warm, 1)
    if cfg.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * t))
    return 1.0 - t
