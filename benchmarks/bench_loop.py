"""What the training loop costs: ``cnnzoo.train``'s images/s against a bare PyTorch loop.

The bare loop is the least a training step can be: the same model (same seed), the same batches
already in memory (taken from the same loader beforehand, so it skips indexing, augmentation
and normalization), forward, cross-entropy, backward and the same SGD step. ``cnnzoo.train``
does all the rest: the loader, the schedule, the per-step statistics, the checks for a diverged
loss, the progress line, the checkpoint bookkeeping. Its figure is the images/s the engine reports
for the epoch (training steps only; evaluation and checkpoint writes are outside it, as in every
run's log). The two alternate in one process (engine, bare, engine, bare, ...), ``--rounds``
times, and the median of the paired ratios is printed with both figures, so a change in the
machine's load falls on both alike. Target (issue 11): the engine at least 0.95x the bare loop.

    python benchmarks/bench_loop.py                                   # resnet20, CIFAR-10 (JPEG q75) zip
    python benchmarks/bench_loop.py --data digits --model resnet20 --steps 20
"""

from __future__ import annotations

import contextlib
import io
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_data import data_parser, load_or_exit, set_threads  # noqa: E402


def engine_images_per_s(cfg, bundle) -> float:
    """Images/s of the training steps of one ``cnnzoo.train`` run of ``cfg`` (its log silenced)."""
    from cnnzoo.train import train

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return train(cfg, bundle=bundle)["images_per_s"]


def bare_images_per_s(cfg, bundle, batches) -> float:
    """Images/s of a bare loop over ``batches`` (in memory) with ``cfg``'s model and optimizer."""
    import cnnzoo

    torch.manual_seed(cfg.seed)
    model = cnnzoo.create_model(cfg.model, num_classes=bundle.num_classes, in_chans=bundle.input_size[0],
                                **cfg.model_opts).train()
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                          weight_decay=cfg.weight_decay)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    start = time.perf_counter()
    for x, y in batches:
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return sum(len(y) for _, y in batches) / (time.perf_counter() - start)


def main(argv=None) -> int:
    p = data_parser(__doc__)
    p.add_argument("--model", default="resnet20", help="registry name")
    p.add_argument("--batch-size", type=int, default=128, help="images per step")
    p.add_argument("--steps", type=int, default=30, help="training steps per run (one epoch at most)")
    p.add_argument("--rounds", type=int, default=3, help="engine/bare pairs, interleaved")
    p.add_argument("--channels-last", action="store_true", help="both sides in channels-last (default NCHW)")
    args = p.parse_args(argv)
    set_threads(args)
    from cnnzoo.train import resolve_config

    bundle = load_or_exit("bench_loop", args.data, subset=args.subset or None, cache_dir=args.cache_dir,
                          val_size=256)
    print(f"data: {bundle!r}")
    print(f"machine: {platform.processor() or platform.machine()}, "
          f"{torch.backends.cpu.get_cpu_capability()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, load average {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as tmp:
        def config(i: int):
            return resolve_config({
                "model": args.model, "data": args.data, "iters": args.steps, "batch_size": args.batch_size,
                "channels_last": args.channels_last, "precise_bn": 0, "device": "cpu",
                "threads": torch.get_num_threads(), "out": os.path.join(tmp, f"run{i}"),
                "checkpoint_every": 0})

        cfg = config(0)
        loader = bundle.loader("train", cfg.batch_size, train=True, seed=cfg.seed,
                               channels_last=cfg.channels_last)
        if len(loader) < args.steps:
            p.error(f"--steps {args.steps} is more than one epoch ({len(loader)} batches); raise --subset")
        batches = [b for _, b in zip(range(args.steps), loader, strict=False)]
        print(f"{args.model}, batch {cfg.batch_size}, {args.steps} steps a run, recipe {cfg.recipe} "
              f"(SGD lr {cfg.lr}, momentum {cfg.momentum}, nesterov {cfg.nesterov}), "
              f"{'channels-last' if cfg.channels_last else 'NCHW'}")
        bare_images_per_s(cfg, bundle, batches[:2])  # warm-up (allocator, kernel choice)
        rows = []
        for i in range(args.rounds):
            eng = engine_images_per_s(config(i + 1), bundle)
            bare = bare_images_per_s(cfg, bundle, batches)
            rows.append((eng, bare))
            print(f"  round {i + 1}: cnnzoo.train {eng:7.1f} img/s   bare loop {bare:7.1f} img/s   "
                  f"ratio {eng / bare:.3f}", flush=True)
    ratio = statistics.median(e / b for e, b in rows)
    print(f"median: cnnzoo.train {statistics.median(e for e, _ in rows):.1f} img/s, bare loop "
          f"{statistics.median(b for _, b in rows):.1f} img/s, ratio {ratio:.3f} "
          f"({'meets' if ratio >= 0.95 else 'BELOW'} the 0.95x target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
