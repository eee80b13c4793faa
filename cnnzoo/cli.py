"""The ``cnnzoo`` command: parses arguments and calls library functions, nothing more.

Each sub-command lives in ``cnnzoo/commands/<name>.py`` and exposes ``add_parser(subparsers)``,
which registers its parser and sets ``func(args) -> int``. What ends a command is decided here,
for every command at once (:func:`main`): bad input (unknown model, bad option, unreadable data:
a ``ValueError``) and any OS error on a path (missing, a file where a folder belongs, read-only,
a full disk: an ``OSError``) are one line on stderr and exit status 2; Ctrl-C, at any moment
from the first import on, is one line and exit status 130. Never a traceback, except for a bug.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from collections.abc import Sequence

# Modules providing sub-commands, in the order they appear in --help.
COMMAND_MODULES = (
    "cnnzoo.commands.models",
    "cnnzoo.commands.analysis",
    "cnnzoo.commands.train",
    "cnnzoo.commands.predict",
    "cnnzoo.commands.export",
    "cnnzoo.commands.bench",
    "cnnzoo.commands.study",
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


def os_error_line(e: OSError) -> str:
    """An OS error as one line: what went wrong and on which path, without the errno number."""
    if e.strerror and e.filename is not None:
        where = os.fsdecode(e.filename)
        if e.filename2 is not None:
            where += f" -> {os.fsdecode(e.filename2)}"
        return f"{e.strerror}: {where}"
    return error_line(e)


def interrupted(e: BaseException) -> bool:
    """Whether ``e`` is a Ctrl-C, or an error raised while one was being handled (a library that
    turns the interruption of its own work into another error, e.g. ``torch.save``)."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


def _report(prog: str, e: BaseException) -> int | None:
    """Print the one line that ends a command on ``e``; return its exit status (``None``: a bug,
    to be shown as a traceback). The rules for every command are here, in one place."""
    if interrupted(e):
        text = str(e).strip() if isinstance(e, KeyboardInterrupt) else ""
        print(f"{prog}: {text or 'interrupted'}", file=sys.stderr)
        return 130
    if isinstance(e, OSError):  # an input or output path: missing, a file, read-only, full disk...
        print(f"{prog}: error: {os_error_line(e)}", file=sys.stderr)
        return 2
    if isinstance(e, (CliError, ValueError)):
        print(f"{prog}: error: {error_line(e)}", file=sys.stderr)
        return 2
    return None


def _warning_printer(prog: str):
    """``warnings.showwarning`` for a command: cnnzoo's own warnings as one ``PROG: warning:`` line."""
    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if not os.path.abspath(filename).startswith(package):
            return default(message, category, filename, lineno, file, line)
        print(f"{prog}: warning: {error_line(message)}", file=sys.stderr)

    return show


def main(argv: Sequence[str] | None = None) -> int:
    prog = "cnnzoo"
    # Everything, parsing included, runs inside the try: a Ctrl-C while a command module (or torch)
    # is being imported is an interruption like any other.
    try:
        args = build_parser().parse_args(argv)
        prog = f"cnnzoo {args.command}"
        with warnings.catch_warnings():
            warnings.showwarning = _warning_printer(prog)
            return int(args.func(args) or 0)
    except BrokenPipeError:
        # Output piped into e.g. `head`, which closed early: not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (Exception, KeyboardInterrupt) as e:
        status = _report(prog, e)
        if status is None:
            raise
        return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
