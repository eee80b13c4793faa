"""Rendering rows as a rich table on a terminal, plain text in a pipe, or markdown/csv/json."""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Sequence
from typing import Any


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def render(rows: Sequence[dict], fmt: str = "table", title: str | None = None) -> str:
    """Rows (dicts with the same keys) as text in ``fmt``: table, markdown, csv or json."""
    cols = list(rows[0]) if rows else []
    if fmt == "json":
        return json.dumps(list(rows), indent=2, default=str)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        return buf.getvalue().rstrip("\n")
    cells = [[_fmt(r[c]) for c in cols] for r in rows]
    if fmt == "markdown":
        lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in cells]
        return "\n".join(lines)
    if fmt != "table":
        raise ValueError(f"unknown format {fmt!r}; choose table, markdown, csv or json")
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
    numeric = [all(isinstance(r[c], (int, float)) for r in rows) for c in cols]

    def line(vals):
        return "  ".join(v.rjust(w) if num else v.ljust(w)
                         for v, w, num in zip(vals, widths, numeric, strict=True))

    out = [line(cols), line(["-" * w for w in widths])] + [line(row) for row in cells]
    return "\n".join(s.rstrip() for s in out)


def print_rows(rows: Sequence[dict], fmt: str = "table", title: str | None = None) -> None:
    """Print rows; a ``table`` on a terminal is drawn by rich, in a pipe as plain text."""
    if fmt == "table" and sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        cols = list(rows[0]) if rows else []
        t = Table(title=title)
        for c in cols:
            t.add_column(c, justify="right" if all(isinstance(r[c], (int, float)) for r in rows) else "left")
        for r in rows:
            t.add_row(*(_fmt(r[c]) for c in cols))
        Console().print(t)
    else:
        print(render(rows, fmt, title))
