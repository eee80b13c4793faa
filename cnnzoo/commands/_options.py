"""Parsing of model options given on the command line as ``--opt key=value``."""

from __future__ import annotations

import ast
from typing import Any


def parse_value(text: str) -> Any:
    """``"0.1"`` -> 0.1, ``"se"`` -> "se", ``"none"`` / ``"None"`` -> None, ``"(1,2)"`` -> (1, 2)."""
    if text.lower() in ("none", "null"):
        return None
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_opts(items: list[str] | None) -> dict[str, Any]:
    """``["attn=se", "depth=110"]`` -> ``{"attn": "se", "depth": 110}``."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"bad --opt {item!r}: expected key=value, e.g. --opt attn=se")
        out[key.strip()] = parse_value(value.strip())
    return out


def add_opt_argument(parser) -> None:
    parser.add_argument(
        "--opt", action="append", metavar="KEY=VALUE", default=[],
        help="model option, repeatable: --opt attn=se --opt unit=preact --opt widths=(32,64,128)")
