"""The ``cnnzoo`` command: parses arguments and calls library functions, nothing more.

Each sub-command lives in ``cnnzoo/commands/<name>.py`` and exposes ``add_parser(subparsers)``,
which registers its parser and sets ``func(args) -> int``. Bad input (unknown model, bad option,
unreadable data) is reported as one line on stderr with exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Modules providing sub-commands, in the order they appear in --help.
COMMAND_MODULES = (
    "cnnzoo.commands.models",
    "cnnzoo.commands.analysis",
    "cnnzoo.commands.train",
    "cnnzoo.commands.predict",
    "cnnzoo.commands.bench",
)


# The library's messages point Python callers at Python; a command-line user is told the command.
CLI_WORDING = {
    "cnnzoo.list_models()": "`cnnzoo list`",
}


class CliError(Exception):
    """A user error: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """The ``cnnzoo`` parser and its sub-commands' (``add_subparsers`` reuses the class): the help
    of every flag shows its default (:class:`~cnnzoo.commands._options.HelpFormatter`)."""

    def __init__(self, *args, formatter_class=None, **kwargs) -> None:
        from .commands._options import HelpFormatter

        super().__init__(*args, formatter_class=formatter_class or HelpFormatter, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command. Imports no torch: command modules import it when they run."""
    from . import __version__

    parser = _Parser(
        prog="cnnzoo", description="The classic CNN lineage: build, measure, train and compare.")
    parser.add_argument("--version", action="version", version=f"cnnzoo {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for mod in COMMAND_MODULES:
        importlib.import_module(mod).add_parser(sub)
    return parser


def error_line(e: BaseException) -> str:
    """The first line of an error's message, in the command line's words (:data:`CLI_WORDING`)."""
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    for python, cli in CLI_WORDING.items():
        msg = msg.replace(python, cli)
    return msg


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (CliError, ValueError, FileNotFoundError) as e:
        print(f"cnnzoo {args.command}: error: {error_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cnnzoo {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Output piped into e.g. `head`, which closed early: not an error of ours.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
