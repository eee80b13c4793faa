"""Construction helpers shared by the model families: override validation."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

_INTERNAL = {"self", "args", "kwargs"}


def allowed_options(*ctors: Callable) -> set[str]:
    """Keyword names accepted by the given constructors."""
    names: set[str] = set()
    for c in ctors:
        names |= {p for p in inspect.signature(c).parameters if p not in _INTERNAL}
    return names


def check_options(overrides: dict[str, Any], allowed: Iterable[str]) -> None:
    """Raise ``ValueError`` naming the unknown keywords and listing the allowed ones.

    The message names no constructor: the caller asked for a model by name, not for a builder.
    """
    allowed = set(allowed)
    bad = sorted(set(overrides) - allowed)
    if bad:
        raise ValueError(f"unknown option(s) {', '.join(bad)} (allowed: {', '.join(sorted(allowed))})")


def build(ctor: Callable, overrides: dict[str, Any], *, extra: Iterable[Callable] = (),
          exclude: Iterable[str] = (), **defaults: Any):
    """``ctor(**{**defaults, **overrides})`` after checking every override is a known option.

    ``extra`` names further constructors whose keywords ``ctor`` forwards through ``**kwargs``;
    ``exclude`` names keywords that ``ctor`` computes itself and so may not be overridden.
    """
    allowed = allowed_options(ctor, *extra) - set(exclude)
    check_options(overrides, allowed)
    return ctor(**{**defaults, **overrides})


def check_positive(name: str, value: Any) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")


def check_positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def check_positive_ints(name: str, values: Iterable[Any]) -> tuple[int, ...]:
    """A non-empty sequence of positive ints, as a tuple."""
    if not isinstance(values, (list, tuple)):
        raise ValueError(f"{name} must be a sequence of positive ints, e.g. (16, 32, 64); got {values!r}")
    values = tuple(values)
    if not values or any(not isinstance(v, int) or isinstance(v, bool) or v <= 0 for v in values):
        raise ValueError(f"{name} must be positive ints, got {values!r}")
    return values


def check_rate(name: str, value: Any) -> None:
    """A dropout-like probability in [0, 1)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < 1:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> None:
    choices = list(choices)
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not allowed; choose one of {choices}")
