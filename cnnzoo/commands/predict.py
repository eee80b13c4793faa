"""``cnnzoo predict``: the top-k classes of image files, by a trained run (see :mod:`cnnzoo.predict`)."""

from __future__ import annotations

import argparse
import json
import sys

FORMATS = ("table", "json")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "predict", help="classify image files with a trained run",
        description="The most probable classes of each image, by a run folder (its best.pt, else "
                    "last.pt) or a checkpoint written by cnnzoo train. Each image is prepared as the "
                    "run's evaluation data were: greyscale or RGB, resized to the run's input size, "
                    "normalized with the run's mean and std. Folders are walked recursively for image "
                    "files (.jpg .jpeg .png .ppm .bmp .pgm .tif .tiff .webp); a file that cannot be "
                    "read gets one line on stderr and the others are still classified.",
        epilog="exit status: 0 if at least one image was classified; 2 if none was, or on bad input "
               "(an unreadable run, a bad flag).")
    p.add_argument("target", metavar="RUN_DIR|WEIGHTS",
                   help="a run folder (its best.pt, else last.pt) or a .pt checkpoint of cnnzoo train")
    p.add_argument("images", metavar="IMAGE|DIR", nargs="+",
                   help="image files and/or folders (walked recursively)")
    p.add_argument("--topk", type=int, default=5, metavar="K",
                   help="classes shown per image, most probable first; at most the number of classes "
                        "(default 5)")
    p.add_argument("--format", default="table", choices=FORMATS, help="table or json (default table)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="auto (default: CUDA when available, else CPU), cpu or cuda")
    p.add_argument("--batch-size", type=int, default=64, metavar="N",
                   help="images per forward pass (default 64)")
    p.add_argument("--tta", default="none", choices=("none", "flip"),
                   help="test-time augmentation: none (default), or flip (average each image's probabilities "
                        "with its horizontal mirror's, as cnnzoo eval --tta flip does)")
    p.set_defaults(func=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    from cnnzoo.predict import Predictor, find_images  # torch is imported here, not by --help

    if args.topk < 1:
        raise ValueError(f"--topk must be at least 1, got {args.topk}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    predictor = Predictor(args.target, device=args.device, tta=args.tta)
    files, problems = find_images(args.images)
    for msg in problems:
        print(f"cnnzoo predict: {msg}", file=sys.stderr)
    n = len(predictor.class_names)
    k = min(args.topk, n)
    if args.topk > n:
        print(f"cnnzoo predict: --topk {args.topk} is more than the run's {n} classes: showing all {n}",
              file=sys.stderr)
    done, failed = [], []
    for pred in predictor.iter_predict(files, k, args.batch_size):
        if pred.error is None:
            done.append(pred)
        else:
            failed.append(pred)
            print(f"cnnzoo predict: {pred.error.splitlines()[0]}", file=sys.stderr)
    if args.format == "json":
        print(json.dumps({"checkpoint": str(predictor.checkpoint), "model": predictor.config["model"],
                          "classes": n, "topk": k, "predictions": [p.to_dict() for p in done],
                          "errors": [p.to_dict() for p in failed]}, indent=2))
    elif done:
        from ._tables import print_rows

        print_rows([{"image": p.path, **{f"top-{i + 1}": f"{c} ({q:.1%})" for i, (c, q) in enumerate(p.top)}}
                    for p in done], "table",
                   title=f"{predictor.config['model']} ({predictor.checkpoint}): top-{k} of {n} classes")
    if not done:
        print("cnnzoo predict: error: no image was classified", file=sys.stderr)
        return 2
    return 0
