"""``cnnzoo train`` and ``cnnzoo eval``: thin wrappers over :mod:`cnnzoo.train`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ._options import HelpFormatter, add_opt_argument, parse_opts, parse_value

# flag -> TrainConfig key, for the flags that map one to one
_FLAGS = {
    "data": "data", "data_dir": "data_dir", "download": "download", "val_size": "val_size",
    "image_size": "image_size", "subset": "subset", "cache_dir": "cache_dir", "recipe": "recipe",
    "epochs": "epochs", "iters": "iters", "batch_size": "batch_size", "optimizer": "optimizer", "lr": "lr",
    "momentum": "momentum", "nesterov": "nesterov", "weight_decay": "weight_decay", "schedule": "schedule",
    "milestones": "milestones", "gamma": "gamma", "warmup": "warmup", "warmup_factor": "warmup_factor",
    "label_smoothing": "label_smoothing", "mixup": "mixup", "cutmix": "cutmix", "ema": "ema_decay",
    "clip_grad": "clip_grad", "aux_weight": "aux_weight", "seed": "seed", "amp": "amp",
    "channels_last": "channels_last", "compile": "compile", "device": "device", "threads": "threads",
    "sync_bn": "sync_bn", "out": "out", "checkpoint_every": "checkpoint_every", "init_from": "init_from",
}


class _TrainHelp(HelpFormatter):
    """``cnnzoo train --help``: a flag left unset takes its value from the recipe (then the
    ``--config`` file, then ``TrainConfig``); its help says which value, read from the recipes.

    The recipes are imported only when the help is shown, not to build the parser.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        key = _FLAGS.get(action.dest)
        if key == "recipe":
            return _escape(f"{action.help}: {_recipes_text()}")
        if key is None or action.default is not None or "default" in (action.help or ""):
            return super()._get_help_string(action)
        return f"{action.help} ({_escape(_config_default(key))})"


def _escape(text: str) -> str:
    return text.replace("%", "%%")  # argparse %-formats help text


def _recipe_order() -> list:
    from cnnzoo.train.config import RECIPES, TrainConfig

    return sorted(RECIPES.values(), key=lambda r: r.name != TrainConfig.recipe)  # the default first


def _recipes_text() -> str:
    from cnnzoo.train.config import TrainConfig

    return "; ".join(f"{r.name}{' (default)' if r.name == TrainConfig.recipe else ''}: {r.description}"
                     for r in _recipe_order())


def _show(value) -> str:
    """A config value as it is typed on the command line."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (list, tuple)):
        return ",".join(_show(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def _config_default(key: str) -> str:
    """Where ``key`` comes from when no flag sets it: one value, or each recipe's.

    Recipes that agree are grouped; the largest group, when it has several, is "others":
    ``default: from the recipe: fast 0.2; vgg-cifar 0.05; others 0.1``.
    """
    from cnnzoo.train.config import TrainConfig

    base = TrainConfig()
    groups: dict[str, list[str]] = {}
    for r in _recipe_order():
        groups.setdefault(_show(r.settings.get(key, getattr(base, key))), []).append(r.name)
    if len(groups) == 1:
        return f"default: {next(iter(groups))}"
    items = list(groups.items())
    largest = max(items, key=lambda kv: len(kv[1]))
    if len(largest[1]) > 1:
        items = [kv for kv in items if kv is not largest] + [(largest[0], ["others"])]
    return "default: from the recipe: " + "; ".join(f"{', '.join(names)} {v}" for v, names in items)


def _fractions(text: str) -> list[float]:
    """``"0.5,0.75"`` -> [0.5, 0.75] (the range is checked with the rest of the config)."""
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated fractions of the run, e.g. 0.5,0.75; got {text!r}") from None


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train", help="train a model on a dataset", formatter_class=_TrainHelp,
        description="Train a registered model and write a run folder (config, logs, checkpoints, curves, "
                    "results.json). Values come from the recipe, then --config, then these flags. "
                    "Multi-process: torchrun --nproc-per-node N -m cnnzoo train ...")
    p.add_argument("model", nargs="?",
                   help="registered model name, e.g. resnet20 (see cnnzoo list); may come from --config")
    add_opt_argument(p)
    p.add_argument("--config", metavar="YAML",
                   help="a YAML file of config keys; flags override it (default: none)")
    p.add_argument("--init-from", metavar="RUN_DIR|WEIGHTS",
                   help="start from these trained weights; the classifier is re-initialised when the "
                        "classes differ (default: random initialisation)")
    g = p.add_argument_group("data")
    g.add_argument("--data", help="digits (embedded), cifar10, cifar100 or imagefolder:PATH")
    g.add_argument("--data-dir", help="where CIFAR's files are, or are downloaded to")
    g.add_argument("--download", action="store_const", const=True, help="download CIFAR if missing")
    g.add_argument("--val-size", type=parse_value, metavar="N|FRACTION",
                   help="training images held out for validation, a count or a fraction "
                        "(default: 5000 for full CIFAR, 10%% of the training images otherwise)")
    g.add_argument("--image-size", type=int, metavar="PX",
                   help="resize images to this square size (default: the data's own size)")
    g.add_argument("--subset", type=int, metavar="N",
                   help="keep N training images (and at most N test images): a fixed random choice, the "
                        "same for every seed, for quick runs (default: all)")
    g.add_argument("--cache-dir", help="uint8 tensor cache (default: $CNNZOO_CACHE or ~/.cache/cnnzoo)")
    g = p.add_argument_group("schedule and optimization")
    g.add_argument("--recipe", metavar="NAME", help="the recipe the other flags default to")
    g.add_argument("--epochs", type=int,
                   help="passes over the training images (each recipe sets --epochs or --iters)")
    g.add_argument("--iters", type=int, help="optimizer steps, instead of --epochs")
    g.add_argument("--batch-size", type=int, help="per-process batch size")
    g.add_argument("--lr", type=float, help="peak learning rate")
    g.add_argument("--optimizer", help="sgd or adamw")
    g.add_argument("--momentum", type=float, help="SGD momentum")
    g.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=None,
                   help="Nesterov momentum (SGD)")
    g.add_argument("--weight-decay", type=float, help="weight decay (L2 for SGD, decoupled for AdamW)")
    g.add_argument("--schedule", help="multistep, cosine, linear or constant")
    g.add_argument("--milestones", type=_fractions, metavar="F1,F2,...",
                   help="multistep: fractions of the run where the learning rate is multiplied by --gamma")
    g.add_argument("--gamma", type=float, help="multistep: the learning-rate factor at each milestone")
    g.add_argument("--warmup", type=float, help="warm-up: a fraction of the run if < 1, else iterations")
    g.add_argument("--warmup-factor", type=float,
                   help="learning-rate factor at the start of a linear warm-up, all through a constant one")
    g.add_argument("--label-smoothing", type=float, help="label smoothing of the cross-entropy")
    g.add_argument("--mixup", type=float, help="mixup alpha; 0: off")
    g.add_argument("--cutmix", type=float, help="CutMix alpha; 0: off")
    g.add_argument("--ema", type=float, metavar="DECAY",
                   help="decay of an EMA of the weights, e.g. 0.999; 0: off")
    g.add_argument("--clip-grad", type=float, metavar="NORM", help="clip the gradient norm to this; 0: off")
    g.add_argument("--aux-weight", type=float, help="weight of auxiliary-head losses (GoogLeNet)")
    g = p.add_argument_group("execution")
    g.add_argument("--seed", type=int,
                   help="random seed: initialisation, validation split, batch order, augmentation")
    g.add_argument("--amp", help="none, bf16 (CPU or CUDA) or fp16 (CUDA, with a gradient scaler)")
    g.add_argument("--channels-last", nargs="?", const="on", choices=("auto", "on", "off"),
                   help="memory format: on (channels-last), off (NCHW) or auto, the faster of the two "
                        "for this run, timed on a few training steps before the first (the flag alone: on)")
    g.add_argument("--compile", action="store_const", const=True, help="torch.compile the model")
    g.add_argument("--device", help="auto, cpu or cuda")
    g.add_argument("--threads", type=int, metavar="N",
                   help="torch threads per process (default: torch's default)")
    g.add_argument("--sync-bn", action="store_const", const=True,
                   help="SyncBatchNorm across processes (CUDA)")
    g.add_argument("--out", metavar="DIR", help="run folder (default: runs/MODEL-DATA-TIMESTAMP)")
    g.add_argument("--checkpoint-every", type=int, metavar="N",
                   help="also checkpoint every N steps; 0: at epoch ends only")
    g.add_argument("--resume", metavar="DIR",
                   help="continue the run in DIR exactly where it stopped; with --epochs or --iters, "
                        "continue it to that longer length (default: a new run)")
    g.add_argument("--allow-data-change", action="store_true",
                   help="with --resume: continue even though the data is not what the checkpoint recorded "
                        "(other image counts, class names or image size); without it that is refused")
    p.set_defaults(func=run_train)

    e = sub.add_parser(
        "eval", help="evaluate a trained run or checkpoint",
        description="Top-1, top-5 and per-class accuracy of a run (its best.pt) or a checkpoint, and a "
                    "confusion-matrix PNG. The run's own split settings are reused.")
    e.add_argument("target", metavar="RUN_DIR|CHECKPOINT|WEIGHTS",
                   help="a run folder (its best.pt, else last.pt), a checkpoint file, or a .safetensors file "
                        "written by cnnzoo.save_weights (then --data is required)")
    e.add_argument("--data", help="dataset spec (default: the one the run was trained on)")
    e.add_argument("--data-dir", help="where CIFAR's files are (default: the run's)")
    e.add_argument("--cache-dir", help="uint8 tensor cache (default: the run's)")
    e.add_argument("--split", default="test", help="test or val")
    e.add_argument("--format", default="table", help="table or json")
    e.add_argument("--device", default="auto", help="auto, cpu or cuda")
    e.add_argument("--batch-size", type=int, default=256, help="images per evaluation batch")
    e.add_argument("--fast", action="store_true",
                   help="evaluate through the inference fast path (cnnzoo.optimize.for_inference: BNs folded "
                        "into convs, channels-last; bf16 weights when the run trained with --amp bf16)")
    e.add_argument("--tta", default="none",
                   help="test-time augmentation: none, or flip (average each image's predicted probabilities "
                        "with its horizontal mirror's; training augments with mirrors, so this is one more "
                        "forward pass per image for usually a few tenths of a point)")
    e.add_argument("--plot", metavar="PNG",
                   help="where to draw the confusion matrix (default: beside the checkpoint, "
                        "confusion_SPLIT.png for best.pt, confusion_SPLIT_NAME.png for NAME.pt)")
    e.add_argument("--allow-other-classes", action="store_true",
                   help="evaluate on --data whose class names differ from the run's, with a warning (the "
                        "rows carry --data's names); without it that is refused")
    e.set_defaults(func=run_eval)


def config_flags(args: argparse.Namespace) -> dict:
    """The flags as ``TrainConfig`` keys; ``None``: not given (the recipe or --config decides)."""
    flags = {key: getattr(args, attr) for attr, key in _FLAGS.items()}
    flags["channels_last"] = {"on": True, "off": False}.get(flags["channels_last"], flags["channels_last"])
    return flags


def run_train(args: argparse.Namespace) -> int:
    from cnnzoo.train import load_yaml, resolve_config, train
    from cnnzoo.train.checkpoint import check_compatible, load_checkpoint

    flags = config_flags(args)
    opts = parse_opts(args.opt)
    if args.allow_data_change and not args.resume:
        raise ValueError("--allow-data-change goes with --resume (a new run takes the data as it is)")
    if args.resume:
        length = {"epochs": flags.pop("epochs"), "iters": flags.pop("iters")}  # a longer run
        given = sorted(f"--{a.replace('_', '-')}" for a, k in _FLAGS.items() if flags.get(k) is not None)
        if given or args.config:
            drop = ", ".join(given) or "--config"
            raise ValueError(f"--resume continues with the run's saved config; drop {drop}")
        if args.model:
            path = Path(args.resume) / "last.pt"
            check_compatible(load_checkpoint(path)["config"], args.model, opts, str(path))
        train(resume=args.resume, allow_data_change=args.allow_data_change, **length)
        return 0
    file_cfg = load_yaml(args.config) if args.config else {}
    if args.model:
        flags["model"] = args.model
    if opts:
        flags["model_opts"] = opts
    train(resolve_config(flags, file_cfg))
    return 0


def confusion_png(checkpoint: Path, split: str, tta: str = "none") -> Path:
    """Where ``cnnzoo eval`` draws the confusion matrix: beside the checkpoint, named after the
    split and, unless it is the run's ``best.pt``, the checkpoint (``confusion_test_last.png``),
    and the test-time augmentation when there is one (``confusion_test_tta-flip.png``), so
    evaluating another checkpoint or another way never overwrites the best one's picture."""
    suffix = "" if checkpoint.stem == "best" else f"_{checkpoint.stem}"
    suffix += "" if tta == "none" else f"_tta-{tta}"
    return checkpoint.parent / f"confusion_{split}{suffix}.png"


def json_matrix_rows(d: dict, key: str) -> str:
    """``json.dumps(d, indent=2)``, but the matrix ``d[key]`` (a top-level key) one row a line."""
    text = json.dumps({**d, key: None}, indent=2)
    rows = ",\n".join("    " + json.dumps(row) for row in d[key])
    head, tail = text.split(f'\n  "{key}": null', 1)  # two spaces: the top level only
    return f'{head}\n  "{key}": [\n{rows}\n  ]{tail}'


def run_eval(args: argparse.Namespace) -> int:
    from cnnzoo.train.evaluate import evaluate_checkpoint, plot_confusion, resolve_checkpoint

    if args.format not in ("table", "json"):
        raise ValueError(f"--format {args.format!r} is not allowed; choose table or json")
    if args.split not in ("test", "val"):
        raise ValueError(f"--split {args.split!r} is not allowed; choose test or val")
    ckpt = resolve_checkpoint(args.target)
    result, cfg, names = evaluate_checkpoint(ckpt, data=args.data, split=args.split, data_dir=args.data_dir,
                                             device=args.device, batch_size=args.batch_size,
                                             cache_dir=args.cache_dir,
                                             allow_other_classes=args.allow_other_classes, fast=args.fast,
                                             tta=args.tta)
    png = Path(args.plot) if args.plot else confusion_png(ckpt, args.split, args.tta)
    how = args.split if args.tta == "none" else f"{args.split}, tta {args.tta}"
    plot_confusion(result.confusion, names, png,
                   f"{cfg['model']} on {args.data or cfg['data']} ({how}): top-1 {result.top1:.2%}")
    if args.format == "json":
        print(json_matrix_rows({"checkpoint": str(ckpt), "model": cfg["model"],
                                "data": args.data or cfg["data"], "split": args.split, "tta": args.tta,
                                **result.to_dict(names), "confusion_png": str(png)}, "confusion"))
        return 0
    from ._tables import print_rows

    print(f"{cfg['model']} on {args.data or cfg['data']} ({how}, {result.n} images): "
          f"top-1 {result.top1:.2%}  top-5 {result.top5:.2%}  loss {result.loss:.4f}")
    support = result.confusion.sum(1).tolist()
    print_rows([{"class": n, "accuracy (%)": None if a is None else round(100 * a, 2), "images": s}
                for n, a, s in zip(names, result.per_class, support, strict=True)],
               "table", title="per-class accuracy")
    print(f"confusion matrix: {png}")
    return 0
