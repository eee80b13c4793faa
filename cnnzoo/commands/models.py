"""``cnnzoo list [PATTERN]``: the registered models."""

from __future__ import annotations

import argparse

import torch


def add_parser(sub) -> None:
    p = sub.add_parser("list", help="list registered models",
                       description="List registered models: name, family, parameters, input size.")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style wildcard, e.g. 'se_*'")
    p.add_argument("--format", choices=("table", "markdown", "csv", "json"), default="table")
    p.set_defaults(func=run_list)


def model_rows(pattern: str) -> list[dict]:
    import cnnzoo
    from cnnzoo.models._base import count_params

    names = cnnzoo.list_models(pattern)
    if not names:
        raise ValueError(f"no registered model matches {pattern!r}")
    rows = []
    for name in names:
        meta = cnnzoo.get_model_meta(name)
        with torch.device("meta"):  # shapes only: no memory, no init cost
            model = cnnzoo.create_model(name)
        rows.append({
            "name": name, "family": meta.family,
            "params": count_params(model),
            "input_size": "x".join(map(str, meta.input_size)),
        })
    return rows


def run_list(args: argparse.Namespace) -> int:
    from ._tables import print_rows

    print_rows(model_rows(args.pattern), args.format, title="cnnzoo models")
    return 0
