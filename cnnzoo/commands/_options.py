"""What every command's parser shares: help that shows defaults, and ``--opt key=value`` parsing."""

from __future__ import annotations

import argparse
import ast
from typing import Any


class HelpFormatter(argparse.HelpFormatter):
    """Help in which every flag says its default.

    A flag whose help already says where its value comes from (it mentions "default") is left
    as written; any other flag with a default gets ``(default: X)``, an on/off switch
    ``(default: off)``. The ``cnnzoo`` parser makes this every sub-command's formatter.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, argparse.SUPPRESS, []):
            return text
        if action.nargs == 0 and isinstance(action.default, bool):  # a switch
            return f"{text} (default: {'on' if action.default else 'off'})"
        if action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return f"{text} (default: %(default)s)"
        return text


def parse_value(text: str) -> Any:
    """A Python literal, else the text itself.

    ``"0.1"`` -> 0.1, ``"se"`` -> "se", ``"none"`` / ``"None"`` -> None, ``"true"`` -> True, and a
    comma makes a tuple: ``"32,64,128"`` (what a shell passes through unquoted) and ``"(32,64,128)"``
    -> (32, 64, 128).
    """
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
        help="model option, repeatable: --opt attn=se --opt unit=preact --opt widths=32,64,128 "
             "(a comma makes a tuple; default: the model's own options)")
