"""Small pieces shared by the data modules: the error type, argument checks, seed derivation."""

from __future__ import annotations

import hashlib

import torch


class DataError(ValueError):
    """Missing, corrupt or unusable data; the message is one line saying what is wrong and where."""


def check_int(name: str, v: object, lo: int, allow_none: bool = False) -> None:
    """``v`` is an int >= ``lo`` (or ``None`` when allowed); else a one-line DataError."""
    if v is None and allow_none:
        return
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise DataError(f"{name} must be an integer >= {lo}{' or None' if allow_none else ''}, got {v!r}")


def derive_seed(*parts: object) -> int:
    """A 63-bit seed that is a pure function of ``parts`` (stable across runs, processes, platforms).

    Python's ``hash`` is salted per process for strings, so the parts go through sha256 instead.
    """
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def generator(*parts: object) -> torch.Generator:
    """A CPU generator seeded from ``parts``; the global RNG is never touched."""
    return torch.Generator().manual_seed(derive_seed(*parts))
