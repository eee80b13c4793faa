"""``cnnzoo summary MODEL`` and ``cnnzoo compare M1 M2 ...``: cost and receptive field.

Thin: builds models on the meta device (shapes only, no memory) and renders what
:func:`cnnzoo.analysis.profile` measured. ``--bench`` builds real weights to time them.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ._options import add_opt_argument, parse_opts

FORMATS = ("table", "markdown", "csv", "json")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "summary", help="parameters, multiply-adds, receptive field of one model",
        description="Parameters, multiply-adds (FLOPs = 2 x MACs), other ops, activation memory "
                    "and receptive field of a model, per stage and optionally per layer.")
    p.add_argument("model", help="registered model name (see `cnnzoo list`)")
    _add_input_size(p)
    p.add_argument("--per-layer", action="store_true",
                   help="also one row per layer: params, MACs, other ops, receptive field")
    p.add_argument("--format", choices=FORMATS, default="table",
                   help="output format (csv: the most detailed table only)")
    p.add_argument("--bench", action="store_true",
                   help="also time the forward pass (real weights, CPU, batch 1)")
    p.add_argument("--runs", type=int, default=10, help="timed runs for --bench (median reported)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads for --bench (default: torch's default)")
    add_opt_argument(p)
    p.set_defaults(func=run_summary)

    c = sub.add_parser(
        "compare", help="compare the cost of several models",
        description="One row per model: parameters, multiply-adds, receptive field, activations. "
                    "Names may be wildcards ('resnet*').")
    c.add_argument("models", nargs="+", help="registered model names or wildcard patterns")
    _add_input_size(c, "input size for every model (default: each model's own)")
    c.add_argument("--format", choices=FORMATS, default="table", help="output format")
    c.add_argument("--plot", metavar="FILE.png",
                   help="also draw parameters vs multiply-adds to this PNG (default: no plot)")
    add_opt_argument(c)
    c.set_defaults(func=run_compare)


def _add_input_size(p, help_text: str = "input size (default: the model's own)") -> None:
    p.add_argument("--input-size", nargs=3, type=int, metavar=("C", "H", "W"), help=help_text)


# --------------------------------------------------------------------------------------------
# Library calls.


def build_model(name: str, opts: dict[str, Any], meta: bool = True):
    """``create_model`` on the meta device (or for real). Unknown names and bad options raise
    ``ValueError`` in ``create_model``, with suggestions."""
    import torch

    import cnnzoo

    if not meta:
        return cnnzoo.create_model(name, **opts)
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        return cnnzoo.create_model(name, **opts)


def measure(name: str, opts: dict[str, Any], input_size) -> Any:
    from ..analysis import profile

    model = build_model(name, opts)
    return profile(model, input_size, name=name)


# --------------------------------------------------------------------------------------------
# Rendering.


def _shape(s) -> str:
    return "x".join(map(str, s))


def _human(n: float, unit: str = "") -> str:
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {suffix}{unit}"
    return f"{n:g} {unit}".strip()


def _emit(tables: list[tuple[str, list[dict]]], fmt: str, section: str | None = None) -> None:
    """Print titled tables: rich on a terminal, plain text in a pipe, or markdown/csv.

    ``section`` names a column whose changes draw a rule between rows on a terminal.
    """
    from ._tables import render

    if fmt == "csv":  # one table: the last (the most detailed) one
        print(render(tables[-1][1], "csv"))
        return
    if fmt == "table" and sys.stdout.isatty():
        _print_rich(tables, section)
        return
    for i, (title, rows) in enumerate(tables):
        if i:
            print()
        print(f"### {title}\n" if fmt == "markdown" else title)
        print(render(rows, fmt))


def _print_rich(tables: list[tuple[str, list[dict]]], section: str | None) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from ._tables import _fmt

    console = Console()
    for title, rows in tables:
        # A table with a "name" column is split into sections by ``section`` (a header row per
        # stage instead of a column), which leaves the names room on an 80-column terminal.
        split = section if section and rows and "name" in rows[0] else None
        cols = [c for c in (rows[0] if rows else []) if c != split]
        t = Table(title=title, box=box.SIMPLE_HEAD, title_style="bold", pad_edge=False,
                  collapse_padding=True)
        for c in cols:
            numeric = all(isinstance(r[c], (int, float)) or r[c] in (None, "global") for r in rows)
            head = c.replace(" ", "\n") if numeric else c  # one word a line: narrower columns
            full = max([len(h) for h in head.splitlines()] + [len(_fmt(r[c])) for r in rows])
            if c in ("name", "model"):  # long names fold rather than push numbers off screen
                t.add_column(head, overflow="fold", min_width=min(10, full))
            elif c in ("type", "family"):
                t.add_column(head, overflow="ellipsis", no_wrap=True, max_width=11)
            else:
                t.add_column(head, justify="right" if numeric else "left", no_wrap=True, min_width=full)
        current = object()
        for r in rows:
            if split and r[split] != current:
                current = r[split]
                t.add_row(f"[bold]{current}[/bold]", *([""] * (len(cols) - 1)))
            t.add_row(*(_fmt(r[c]) for c in cols))
        console.print(t)


def _totals_rows(r) -> list[dict]:
    rf = ("none", "no spatial map") if r.receptive_field is None else (
        f"{r.receptive_field} px", f"effective stride {r.effective_stride}")
    return [
        {"quantity": "parameters", "value": f"{r.params:,}", "readable": _human(r.params)},
        {"quantity": "multiply-adds", "value": f"{r.macs:,}", "readable": _human(r.macs, "MACs")},
        {"quantity": "FLOPs", "value": f"{r.flops:,}", "readable": _human(r.flops, "FLOPs") + " (2 x MACs)"},
        {"quantity": "other ops", "value": f"{r.other_ops:,}",
         "readable": _human(r.other_ops)},
        {"quantity": "receptive field", "value": rf[0], "readable": rf[1]},
        {"quantity": "activations", "value": f"{r.activation_bytes:,} B",
         "readable": f"{r.activation_bytes / 2**20:.1f} MiB (fp32, batch 1)"},
    ]


def _unit(total: float) -> tuple[float, str]:
    """The scale that shows ``total`` with a few digits: (1e9, "G"), (1e6, "M") or (1e3, "k")."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if total >= scale:
            return scale, suffix
    return 1.0, ""


def _head(quantity: str, suffix: str) -> str:
    """A column title with its unit: ``MACs (M)``; a bare count has none."""
    return f"{quantity} ({suffix})" if suffix else quantity


def _scaled(v: int, scale: float) -> float:
    return round(v / scale, 3) if scale > 1 else v


def _stage_rows(r, text: bool) -> list[dict]:
    """Per-stage rows and a total row. Text formats show scaled units; csv the JSON ``stages``
    keys with raw counts."""
    stages = r.stages() + [{"stage": "total", "layers": len(r.layers), "output_shape": [],
                            "params": r.params, "macs": r.macs, "other_ops": r.other_ops,
                            "receptive_field": r.receptive_field,
                            "effective_stride": r.effective_stride}]
    if not text:
        return [{**s, "output_shape": _shape(s["output_shape"])} for s in stages]
    ps, pu = _unit(r.params)
    ms, mu = _unit(r.macs)
    return [{"stage": s["stage"], "output": _shape(s["output_shape"]),
             _head("params", pu): _scaled(s["params"], ps), _head("MACs", mu): _scaled(s["macs"], ms),
             "MACs %": round(100 * s["macs"] / r.macs, 1) if r.macs else 0.0,
             "rf": _rf(s["receptive_field"]), "stride": _rf(s["effective_stride"])}
            for s in stages]


def _rf(v):
    return "global" if v is None else v


def _layer_rows(r, text: bool) -> list[dict]:
    """Per-layer rows. Text formats show scaled units; csv the JSON ``layers`` keys, raw counts."""
    if not text:
        return [{**d, "output_shape": _shape(d["output_shape"])} for d in (row.to_dict() for row in r.layers)]
    ms, mu = _unit(max((row.macs for row in r.layers), default=0))
    xs, xu = _unit(max((row.other_ops for row in r.layers), default=0))
    return [{"stage": row.stage, "name": row.name, "type": row.type, "output": _shape(row.output_shape),
             "params": row.params, _head("MACs", mu): _scaled(row.macs, ms),
             _head("other ops", xu): _scaled(row.other_ops, xs),
             "rf": _rf(row.receptive_field), "stride": _rf(row.effective_stride)}
            for row in r.layers]


def run_summary(args: argparse.Namespace) -> int:
    opts = parse_opts(args.opt)
    result = measure(args.model, opts, args.input_size)
    latency = None
    if args.bench:
        from ..analysis import measure_latency

        latency = measure_latency(build_model(args.model, opts, meta=False), result.input_size,
                                  runs=args.runs, threads=args.threads)
    if args.format == "json":
        d = result.to_dict()
        d["options"] = opts
        if latency is not None:
            d["latency"] = latency.to_dict()
        print(json.dumps(d, indent=2, default=str))
        return 0
    text = args.format != "csv"
    head = f"{args.model} at {_shape(result.input_size)}"
    if opts:
        head += " (" + ", ".join(f"{k}={v}" for k, v in opts.items()) + ")"
    tables = []
    if args.format != "csv":
        totals = _totals_rows(result)
        if latency is not None:
            totals.append({"quantity": "latency (measured)", "value": f"{latency.median_ms:.2f} ms",
                           "readable": f"median of {latency.runs} runs, {latency.threads} thread(s), "
                                       f"batch {latency.batch_size}, {latency.device}"})
        tables.append((head, totals))
    tables.append(("stages (grouped by effective stride)", _stage_rows(result, text)))
    if args.per_layer:
        tables.append(("layers", _layer_rows(result, text)))
    _emit(tables, args.format, section="stage")
    for n in result.notes:
        print(f"note: {n}", file=sys.stderr)
    if latency is not None and args.format == "csv":
        print(f"latency: {latency}", file=sys.stderr)
    return 0


def expand_names(patterns: list[str]) -> list[str]:
    import cnnzoo

    names: list[str] = []
    for p in patterns:
        if any(ch in p for ch in "*?["):
            found = cnnzoo.list_models(p)
            if not found:
                raise ValueError(f"no registered model matches {p!r}")
        else:
            cnnzoo.get_model_meta(p)
            found = [p]
        names += [n for n in found if n not in names]
    return names


def run_compare(args: argparse.Namespace) -> int:
    import cnnzoo

    opts = parse_opts(args.opt)
    if args.plot:
        from ..analysis.plot import check_plot_path

        check_plot_path(args.plot)
    names = expand_names(args.models)
    results = [measure(n, opts, args.input_size) for n in names]
    families = [cnnzoo.get_model_meta(n).family for n in names]
    text = args.format in ("table", "markdown")
    rows = []
    for r, fam in zip(results, families, strict=True):
        if text:
            rows.append({"model": r.name, "family": fam, "input": _shape(r.input_size),
                         "params (M)": round(r.params / 1e6, 2), "GMACs": round(r.macs / 1e9, 3),
                         "rf": _rf(r.receptive_field), "stride": _rf(r.effective_stride),
                         "act. MiB": round(r.activation_bytes / 2**20, 1)})
        else:
            rows.append({"model": r.name, "family": fam, "input": _shape(r.input_size),
                         "params": r.params, "macs": r.macs, "flops": r.flops, "other_ops": r.other_ops,
                         "receptive_field": r.receptive_field, "effective_stride": r.effective_stride,
                         "activation_bytes": r.activation_bytes})
    if args.format == "json":
        print(json.dumps(rows, indent=2))
    else:
        _emit([("model comparison" + (f" ({', '.join(f'{k}={v}' for k, v in opts.items())})"
                                      if opts else ""), rows)], args.format)
    if args.plot:
        from ..analysis.plot import plot_cost

        path = plot_cost(results, args.plot, families)
        print(f"wrote {path}", file=sys.stderr)
    return 0
