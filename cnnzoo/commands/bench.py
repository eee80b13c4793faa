"""``cnnzoo bench MODEL``: cnnzoo's model against torchvision's or timm's, same weights, one process.

Thin: :func:`cnnzoo.bench.bench` does the work (and imports torch, only when the command runs).
"""

from __future__ import annotations

import argparse
import json
import sys

from ._options import add_opt_argument, parse_opts


def add_parser(sub) -> None:
    p = sub.add_parser(
        "bench", help="time a model against torchvision's or timm's (same weights) and the conv peak",
        description="Times cnnzoo's model and, where one exists, torchvision's or timm's counterpart with "
                    "the same weights, interleaved in one process after warm-up, and a large 3x3 conv "
                    "(the machine's peak). Prints median images/s, their ratio and the multiply-adds/s "
                    "each achieves. Without --fast both models run with the same settings; with --fast "
                    "cnnzoo's side is the inference fast path (cnnzoo.optimize.for_inference) and the "
                    "other stays eager fp32, the baseline.")
    p.add_argument("model", help="registered model name (see `cnnzoo list`)")
    p.add_argument("--against", choices=("auto", "torchvision", "timm", "none"), default="auto",
                   help="the other library (auto: torchvision where it has the model, else timm)")
    p.add_argument("--mode", choices=("infer", "train"), default="infer",
                   help="time forward passes or training steps (forward, backward, SGD)")
    p.add_argument("--batch-size", type=int, default=16, help="images per call")
    p.add_argument("--input-size", nargs=3, type=int, metavar=("C", "H", "W"),
                   help="input size (default: the model's own)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="torch threads (default: torch's default, printed with the results)")
    p.add_argument("--channels-last", action="store_true",
                   help="channels-last memory format for both models (with --fast: for the baseline; "
                        "the fast path is always channels-last)")
    p.add_argument("--fast", action="store_true",
                   help="cnnzoo's side runs the inference fast path: BNs folded, channels-last (infer only)")
    p.add_argument("--amp", choices=("none", "bf16"), default="none",
                   help="bf16: autocast for both models; with --fast, bf16 weights for cnnzoo's only")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile both models (with --fast: cnnzoo's only), compiled during warm-up")
    p.add_argument("--reuse-memory", action="store_true",
                   help="first make this process keep freed memory for reuse (glibc only; see "
                        "cnnzoo.optimize.reuse_freed_memory): large tensors then cost no page faults, "
                        "on both sides alike")
    p.add_argument("--iters", type=int, default=10, help="timed calls of each, interleaved (median reported)")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls of each first")
    p.add_argument("--format", choices=("table", "json"), default="table", help="output format")
    add_opt_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cnnzoo.bench import bench

    from ._tables import print_rows

    if args.reuse_memory:
        from cnnzoo.optimize import reuse_freed_memory

        if not reuse_freed_memory():
            print("cnnzoo bench: --reuse-memory needs glibc (Linux); timing with the default allocator",
                  file=sys.stderr)
    result = bench(args.model, against=args.against, mode=args.mode, batch_size=args.batch_size,
                   input_size=tuple(args.input_size) if args.input_size else None, threads=args.threads,
                   channels_last=args.channels_last, fast=args.fast, amp=args.amp, compile=args.compile,
                   iters=args.iters, warmup=args.warmup, model_opts=parse_opts(args.opt))
    if args.format == "json":
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    print("\n".join(result.headline()))
    print_rows(result.rows(), "table")
    return 0
