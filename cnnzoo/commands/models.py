"""``cnnzoo list [PATTERN]``: the registered models.

Read from the shipped model index (:mod:`cnnzoo._model_index`): no model is built and torch is
not imported, so the command answers at once.
"""

from __future__ import annotations

import argparse

FORMATS = ("table", "markdown", "csv", "json")


def add_parser(sub) -> None:
    p = sub.add_parser("list", help="list registered models",
                       description="List registered models: name, family, parameters (at the default "
                                   "options) and input size.")
    p.add_argument("pattern", nargs="?", default="*",
                   help="shell-style wildcard, e.g. 'se_*' (quote it in a shell)")
    p.add_argument("--format", choices=FORMATS, default="table", help="output format")
    p.set_defaults(func=run_list)


def run_list(args: argparse.Namespace) -> int:
    from cnnzoo._model_index import index_rows

    from ._tables import print_rows

    print_rows(index_rows(args.pattern), args.format, title="cnnzoo models")
    return 0
