"""``cnnzoo export``: a model, a trained run or a weights file to ONNX or TorchScript
(see :mod:`cnnzoo.export`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._options import add_opt_argument, parse_opts

FORMATS = ("onnx", "torchscript")  # cnnzoo.export.FORMATS, named here without importing torch


def add_parser(sub) -> None:
    p = sub.add_parser(
        "export", help="write a model as ONNX or TorchScript",
        description="Export a registered model (randomly initialised), a run folder of cnnzoo train (its "
                    "best.pt, else last.pt) or a weights file to ONNX or TorchScript, in eval mode "
                    "(GoogLeNet's auxiliary heads are left out). The file takes a float32 'input' "
                    "(N, C, H, W) and gives 'logits' (N, classes). It is then run on random images, in "
                    "onnxruntime or by torch.jit.load, and compared with PyTorch's logits. ONNX needs "
                    "pip install 'cnnzoo[export]'.",
        epilog="exit status: 0 when the file was written and matches PyTorch (max |difference| <= "
               "1e-4 x the largest logit, or 1e-4 below 1); 1 when it differs more; 2 on bad input "
               "(unknown model, unreadable run, unwritable --out).")
    p.add_argument("source", metavar="MODEL|RUN_DIR|WEIGHTS",
                   help="a registered model name (see `cnnzoo list`), a run folder or checkpoint of "
                        "cnnzoo train, or a weights file of cnnzoo.save_weights (other weights: MODEL "
                        "--opt pretrained=FILE)")
    p.add_argument("--format", default="onnx", metavar="{onnx,torchscript}",
                   help="onnx or torchscript (default onnx)")
    p.add_argument("--out", metavar="FILE",
                   help="file to write (default: MODEL.onnx or MODEL.torchscript in the current folder; "
                        "for a run or weights file, beside it: RUN_DIR/best.onnx)")
    p.add_argument("--dynamic-batch", action="store_true",
                   help="any batch size in the file, not only --batch-size")
    p.add_argument("--batch-size", type=int, default=1, metavar="N",
                   help="images per batch the file takes (with --dynamic-batch: the traced example)")
    p.add_argument("--input-size", nargs=3, type=int, metavar=("C", "H", "W"),
                   help="input size of the file (default: the model's own; a run's training input size)")
    add_opt_argument(p)
    p.add_argument("--no-check", action="store_true",
                   help="skip running the file and comparing it with PyTorch")
    p.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from cnnzoo.export import check_output_path, export_model, load_source  # imports torch

    if args.format not in FORMATS:
        raise ValueError(f"--format {args.format!r} is not allowed; choose one of {', '.join(FORMATS)}")
    if args.out:  # before building the model: a bad --out is told at once
        check_output_path(args.out)
    source = load_source(args.source, parse_opts(args.opt))
    out = args.out or source.default_output(args.format)
    if source.file is not None and source.file.resolve() == Path(out).resolve():
        raise ValueError(f"--out {out} is the file the weights come from; give another file name")
    input_size = tuple(args.input_size) if args.input_size else source.input_size
    result = export_model(source.model, out, args.format, input_size, dynamic_batch=args.dynamic_batch,
                          batch_size=args.batch_size, check=not args.no_check)
    n = "N" if result.dynamic_batch else str(result.input_shape[0])
    size_mb = result.path.stat().st_size / 1e6
    print(f"wrote {result.path} ({args.format}, {size_mb:.1f} MB): {source.name}, "
          f"input {'x'.join([n, *map(str, result.input_shape[1:])])}")
    if result.max_error is None:
        return 0
    runner = "onnxruntime" if args.format == "onnx" else "torch.jit.load"
    print(f"check: {runner} vs PyTorch on {result.check_batch} random image(s): max |difference| "
          f"{result.max_error:.2g} (largest logit {result.max_logit:.3g})")
    if not result.ok:
        print(f"cnnzoo export: error: {result.path} differs from the model by {result.max_error:.3g}, more "
              f"than the tolerance", file=sys.stderr)
        return 1
    return 0
