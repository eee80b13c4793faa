"""``cnnzoo study NAME`` and ``cnnzoo study list``: thin wrappers over :mod:`cnnzoo.studies`."""

from __future__ import annotations

import argparse
import textwrap


def add_parser(sub) -> None:
    p = sub.add_parser(
        "study", help="run one claim of the papers as an experiment (see cnnzoo study list)",
        description="Train a study's grid (one run folder per configuration and seed, through cnnzoo train), "
                    "then write DIR/results.json, DIR/table.md and PNG plots with a verdict on the claim: "
                    "reproduced, not visible at this scale, or contradicted. Running the same command "
                    "again resumes: finished runs are kept, an interrupted one continues from its "
                    "checkpoint. 'cnnzoo study list' shows every study, its claim and its grids.")
    p.add_argument("name", metavar="NAME|list",
                   help="a study (degradation, units, shortcuts, factorization, heads, se), or 'list'")
    p.add_argument("--scale", default="smoke",
                   help="smoke (seconds, tiny data), cpu (CIFAR-10 on a 2-core machine, needs --data) or "
                        "paper (the papers' recipes, for a GPU, needs --data)")
    p.add_argument("--data", metavar="SPEC",
                   help="dataset: cifar10, imagefolder:PATH (a folder or .zip with train/ and test/)... "
                        "(default: digits at smoke scale; the cpu and paper scales need it)")
    p.add_argument("--seeds", type=int, metavar="N",
                   help="seeds 0..N-1 per configuration "
                        "(default: the scale's: 1 at smoke, 2 at cpu and paper)")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="runs trained side by side, each a process with one torch thread")
    p.add_argument("--out", metavar="DIR",
                   help="study folder (default: runs/study-NAME-SCALE, so the same command resumes it)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda, for every run")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cnnzoo.studies import STUDIES, get_study

    if args.name == "list":
        print(render_list(STUDIES.values()))
        return 0
    get_study(args.name)  # an unknown name is one line before anything is loaded
    from cnnzoo.studies import run_study

    run_study(args.name, args.scale, data=args.data, seeds=args.seeds, jobs=args.jobs, out=args.out,
              device=args.device)
    return 0


def render_list(studies) -> str:
    """Each study: its claim, source, and at each scale its data, length and grid."""
    wrap = textwrap.TextWrapper(width=100, initial_indent="    ", subsequent_indent="    ")
    about = textwrap.TextWrapper(width=100, initial_indent="      ", subsequent_indent="      ")
    blocks = []
    for s in studies:
        lines = [f"{s.name}: {s.title}", wrap.fill(s.claim), wrap.fill(f"source: {s.source}")]
        for name, sc in s.scales.items():
            seeds = f"{sc.seeds} seed{'s' if sc.seeds > 1 else ''}"
            data = sc.data or "--data required"
            lines += [f"  {name} scale ({seeds}; data: {data}):", about.fill(sc.about)]
            width = max(len(c.name) for c in sc.cells)
            for c in sc.cells:
                lines.append(f"      {c.name:<{width}}  {c.describe()}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
