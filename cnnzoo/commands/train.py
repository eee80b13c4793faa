"""``cnnzoo train`` and ``cnnzoo eval``: thin wrappers over :mod:`cnnzoo.train`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ._options import add_opt_argument, parse_opts, parse_value

# flag -> TrainConfig key, for the flags that map one to one
_FLAGS = {
    "data": "data", "data_dir": "data_dir", "download": "download", "val_size": "val_size",
    "image_size": "image_size", "subset": "subset", "cache_dir": "cache_dir", "recipe": "recipe",
    "epochs": "epochs", "iters": "iters", "batch_size": "batch_size", "optimizer": "optimizer", "lr": "lr",
    "momentum": "momentum", "nesterov": "nesterov", "weight_decay": "weight_decay", "schedule": "schedule",
    "warmup": "warmup", "label_smoothing": "label_smoothing", "mixup": "mixup", "cutmix": "cutmix",
    "ema": "ema_decay", "clip_grad": "clip_grad", "aux_weight": "aux_weight", "seed": "seed", "amp": "amp",
    "channels_last": "channels_last", "compile": "compile", "device": "device", "sync_bn": "sync_bn",
    "out": "out", "checkpoint_every": "checkpoint_every",
}


def _recipes_help() -> str:
    from cnnzoo.train.config import RECIPES

    return "; ".join(f"{r.name}: {r.description}" for r in RECIPES.values())


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train", help="train a model on a dataset",
        description="Train a registered model and write a run folder (config, logs, checkpoints, curves, "
                    "results.json). Values come from the recipe, then --config, then these flags. "
                    "Multi-process: torchrun --nproc-per-node N -m cnnzoo train ...",
        epilog=f"recipes: {_recipes_help()}")
    p.add_argument("model", nargs="?", help="registered model name, e.g. resnet20 (see cnnzoo list)")
    add_opt_argument(p)
    p.add_argument("--config", metavar="YAML", help="a YAML file of config keys (flags override it)")
    g = p.add_argument_group("data")
    g.add_argument("--data", help="digits (default, embedded), cifar10, cifar100 or imagefolder:PATH")
    g.add_argument("--data-dir", help="where CIFAR's files live or are downloaded (default ./data)")
    g.add_argument("--download", action="store_const", const=True, help="download CIFAR if missing")
    g.add_argument("--val-size", type=parse_value, help="held-out validation images (count or fraction)")
    g.add_argument("--image-size", type=int, help="resize images to this square size")
    g.add_argument("--subset", type=int, help="train on the first N (deterministic) training images")
    g.add_argument("--cache-dir", help="uint8 tensor cache (default ~/.cache/cnnzoo or $CNNZOO_CACHE)")
    g = p.add_argument_group("schedule and optimization")
    g.add_argument("--recipe", help="fast (default), resnet-cifar, densenet-cifar, wrn-cifar, vgg-cifar")
    g.add_argument("--epochs", type=int)
    g.add_argument("--iters", type=int, help="optimizer steps (instead of --epochs)")
    g.add_argument("--batch-size", type=int, help="per-process batch size")
    g.add_argument("--lr", type=float)
    g.add_argument("--optimizer", help="sgd or adamw")
    g.add_argument("--momentum", type=float)
    g.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=None)
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--schedule", help="multistep, cosine, linear or constant")
    g.add_argument("--warmup", type=float, help="warm-up: a fraction of the run if < 1, else iterations")
    g.add_argument("--label-smoothing", type=float)
    g.add_argument("--mixup", type=float, help="mixup alpha (0: off)")
    g.add_argument("--cutmix", type=float, help="CutMix alpha (0: off)")
    g.add_argument("--ema", type=float, metavar="DECAY", help="EMA of weights, e.g. 0.999 (0: off)")
    g.add_argument("--clip-grad", type=float, metavar="NORM", help="clip the gradient norm (0: off)")
    g.add_argument("--aux-weight", type=float, help="weight of auxiliary-head losses (default 0.3)")
    g = p.add_argument_group("execution")
    g.add_argument("--seed", type=int)
    g.add_argument("--amp", help="none, bf16 (CPU or CUDA) or fp16 (CUDA, with a gradient scaler)")
    g.add_argument("--channels-last", action="store_const", const=True)
    g.add_argument("--compile", action="store_const", const=True, help="torch.compile the model")
    g.add_argument("--device", help="auto (default), cpu or cuda")
    g.add_argument("--sync-bn", action="store_const", const=True,
                   help="SyncBatchNorm across processes (CUDA)")
    g.add_argument("--out", help="run folder (default runs/MODEL-DATA-TIMESTAMP)")
    g.add_argument("--checkpoint-every", type=int, metavar="N",
                   help="also checkpoint every N steps (0: epoch ends only; default 500)")
    g.add_argument("--resume", metavar="DIR", help="continue the run in DIR exactly where it stopped")
    p.set_defaults(func=run_train)

    e = sub.add_parser(
        "eval", help="evaluate a trained run or checkpoint",
        description="Top-1, top-5 and per-class accuracy of a run (its best.pt) or a checkpoint, and a "
                    "confusion-matrix PNG. The run's own split settings are reused.")
    e.add_argument("target", metavar="RUN_DIR|CHECKPOINT")
    e.add_argument("--data", help="dataset spec (default: the one the run was trained on)")
    e.add_argument("--data-dir", help="where CIFAR's files live (default: the run's)")
    e.add_argument("--cache-dir")
    e.add_argument("--split", default="test", help="test (default) or val")
    e.add_argument("--format", default="table", help="table or json")
    e.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    e.add_argument("--batch-size", type=int, default=256)
    e.add_argument("--plot", metavar="PNG", help="confusion-matrix PNG (default: beside the checkpoint)")
    e.set_defaults(func=run_eval)


def run_train(args: argparse.Namespace) -> int:
    from cnnzoo.train import load_yaml, resolve_config, train
    from cnnzoo.train.checkpoint import check_compatible, load_checkpoint

    flags = {key: getattr(args, attr) for attr, key in _FLAGS.items()}
    opts = parse_opts(args.opt)
    if args.resume:
        given = sorted(f"--{a.replace('_', '-')}" for a, k in _FLAGS.items() if flags[k] is not None)
        if given or args.config:
            drop = ", ".join(given) or "--config"
            raise ValueError(f"--resume continues with the run's saved config; drop {drop}")
        if args.model:
            path = Path(args.resume) / "last.pt"
            check_compatible(load_checkpoint(path)["config"], args.model, opts, str(path))
        train(resume=args.resume)
        return 0
    file_cfg = load_yaml(args.config) if args.config else {}
    if args.model:
        flags["model"] = args.model
    if opts:
        flags["model_opts"] = opts
    train(resolve_config(flags, file_cfg))
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from cnnzoo.train.evaluate import evaluate_checkpoint, plot_confusion, resolve_checkpoint

    if args.format not in ("table", "json"):
        raise ValueError(f"--format {args.format!r} is not allowed; choose table or json")
    if args.split not in ("test", "val"):
        raise ValueError(f"--split {args.split!r} is not allowed; choose test or val")
    ckpt = resolve_checkpoint(args.target)
    result, cfg, names = evaluate_checkpoint(ckpt, data=args.data, split=args.split, data_dir=args.data_dir,
                                             device=args.device, batch_size=args.batch_size,
                                             cache_dir=args.cache_dir)
    png = Path(args.plot) if args.plot else ckpt.parent / f"confusion_{args.split}.png"
    plot_confusion(result.confusion, names, png,
                   f"{cfg['model']} on {args.data or cfg['data']} ({args.split}): top-1 {result.top1:.2%}")
    if args.format == "json":
        print(json.dumps({"checkpoint": str(ckpt), "model": cfg["model"], "data": args.data or cfg["data"],
                          "split": args.split, **result.to_dict(names), "confusion_png": str(png)}, indent=2))
        return 0
    from ._tables import print_rows

    print(f"{cfg['model']} on {args.data or cfg['data']} ({args.split}, {result.n} images): "
          f"top-1 {result.top1:.2%}  top-5 {result.top5:.2%}  loss {result.loss:.4f}")
    support = result.confusion.sum(1).tolist()
    print_rows([{"class": n, "accuracy": a, "images": s}
                for n, a, s in zip(names, result.per_class, support, strict=True)],
               "table", title="per-class accuracy")
    print(f"confusion matrix: {png}")
    return 0
