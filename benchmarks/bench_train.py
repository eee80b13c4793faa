"""Training throughput, as ratios from one run: is the data pipeline ever the bottleneck, and what
do ``--channels-last`` and ``--compile`` buy for resnet20 and resnet56?

Each configuration is a real training step of the engine's kind (forward, cross-entropy,
backward, SGD with momentum) on batches from the real loader, timed after warm-up steps (which
absorb torch.compile's compilation). The pipeline figure is :func:`bench_data.pipeline_throughput`
on the same data and batch size.

    python benchmarks/bench_train.py                  # CIFAR-10 (JPEG q75) zip from ../shared/data
    python benchmarks/bench_train.py --data digits --device cuda --steps 50
"""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_data import data_parser, load_or_exit, pipeline_throughput, set_threads  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_throughput(model_name: str, bundle, *, batch_size: int, steps: int, warmup: int,
                     channels_last: bool, compile: bool, device: torch.device) -> float:
    """Training images/s of ``model_name`` on ``bundle``'s training batches."""
    import cnnzoo

    torch.manual_seed(0)
    model = cnnzoo.create_model(model_name, num_classes=bundle.num_classes, in_chans=bundle.input_size[0])
    model.to(device).train()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    fwd = torch.compile(model) if compile else model
    loss_fn = nn.CrossEntropyLoss()
    done, epoch, seen, start = 0, 0, 0, 0.0
    while done < warmup + steps:
        for x, y in bundle.loader("train", batch_size, train=True, device=device, epoch=epoch,
                                  channels_last=channels_last):
            if done == warmup:
                _sync(device)
                start = time.perf_counter()
            loss = loss_fn(fwd(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if done >= warmup:
                seen += y.numel()
            done += 1
            if done >= warmup + steps:
                break
        epoch += 1
    _sync(device)
    return seen / (time.perf_counter() - start)


def main(argv=None) -> int:
    p = data_parser(__doc__)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--batch-size", type=int, default=128, help="images per training step")
    p.add_argument("--steps", type=int, default=8, help="timed training steps per configuration")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation happens here)")
    p.add_argument("--models", default="resnet20,resnet56", help="comma-separated model names")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile configurations")
    args = p.parse_args(argv)
    set_threads(args)

    device = torch.device(args.device)
    bundle = load_or_exit("bench_train", args.data, subset=args.subset or None, cache_dir=args.cache_dir)
    print(f"data: {bundle!r}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {device}, load average "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}")

    pipe = pipeline_throughput(bundle, batch_size=args.batch_size, n_batches=50, device=device)
    rows = []
    for name in args.models.split(","):
        for cl in (False, True):
            for comp in (False, True):
                if comp and args.no_compile:
                    continue
                label = f"{name}{' channels_last' if cl else ''}{' compile' if comp else ''}"
                t0 = time.perf_counter()
                try:
                    ips = train_throughput(name, bundle, batch_size=args.batch_size, steps=args.steps,
                                           warmup=args.warmup, channels_last=cl, compile=comp, device=device)
                    note = ""
                except Exception as e:  # torch.compile needs a C++ toolchain; report, don't hide
                    ips, note = None, f"failed: {type(e).__name__}: {str(e).strip().splitlines()[0][:80]}"
                rows.append((label, ips, time.perf_counter() - t0, note))
                print(f"  {label:<32} {'-' if ips is None else f'{ips:8.1f} img/s'}  "
                      f"({time.perf_counter() - t0:.0f} s incl. warm-up) {note}", flush=True)

    base = {name: next(ips for label, ips, _, _ in rows if label == name) for name in args.models.split(",")}
    r20 = base.get("resnet20")
    print()
    print(f"data pipeline: {pipe:,.0f} img/s (batch {args.batch_size}, augmentation on {device})")
    if r20:
        verdict = "never the bottleneck" if pipe >= 20 * r20 else "BELOW the 20x target"
        print(f"pipeline / resnet20 training = {pipe / r20:,.1f}x  ({verdict})")
    print(f"{'configuration':<34}{'img/s':>9}{'vs eager':>10}")
    for label, ips, _, note in rows:
        ref = base[label.split()[0]]
        rel = f"{ips / ref:.2f}x" if ips and ref else "-"
        print(f"{label:<34}{'-' if ips is None else f'{ips:.1f}':>9}{rel:>10}  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
