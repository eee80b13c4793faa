"""Small pieces shared by the data modules: the error type and seed derivation."""

from __future__ import annotations

import hashlib

import torch


class DataError(ValueError):
    """Missing, corrupt or unusable data; the message is one line saying what is wrong and where."""


def derive_seed(*parts: object) -> int:
    """A 63-bit seed that is a pure function of ``parts`` (stable across runs, processes, platforms).

    Python's ``hash`` is salted per process for strings, so the parts go through sha256 instead.
    """
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def generator(*parts: object) -> torch.Generator:
    """A CPU generator seeded from ``parts``; the global RNG is never touched."""
    return torch.Generator().manual_seed(derive_seed(*parts))
