"""What bf16 autocast buys in training: fp32 against ``--amp bf16``, in NCHW and channels-last.

Every variant is a copy of the same model (same seed) with its own SGD optimizer; they take
training steps in turn (forward, label-smoothed cross-entropy, backward, SGD with momentum and
weight decay, as ``cnnzoo train``'s fast recipe does) on the same real, augmented batches, after
one warm-up step each. The median step time of each variant gives its images/s, and the median
of the paired per-round ratios gives each one's speed against fp32 channels-last (a change in
the machine's load falls on all of them alike). bf16 pays only where the CPU has bf16
instructions (AVX512_BF16 or AMX); elsewhere it is emulated and slow, which this prints too.

    python benchmarks/bench_amp.py                        # resnet20, CIFAR-10 (JPEG q75) zip
    python benchmarks/bench_amp.py --data digits --model resnet56 --rounds 10
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_data import data_parser, load_or_exit, set_threads  # noqa: E402

NCHW, NHWC = torch.contiguous_format, torch.channels_last
VARIANTS = {"fp32, NCHW": (None, NCHW), "fp32, channels-last": (None, NHWC),
            "bf16, NCHW": (torch.bfloat16, NCHW), "bf16, channels-last": (torch.bfloat16, NHWC)}
BASELINE = "fp32, channels-last"


def main(argv=None) -> int:
    import cnnzoo
    from cnnzoo.train.engine import cpu_native_bf16
    from cnnzoo.train.evaluate import autocast

    p = data_parser(__doc__)
    p.add_argument("--model", default="resnet20", help="registered model name")
    p.add_argument("--batch-size", type=int, default=128, help="images per training step")
    p.add_argument("--rounds", type=int, default=20, help="timed steps of each variant, in turn")
    args = p.parse_args(argv)
    set_threads(args)

    bundle = load_or_exit("bench_amp", args.data, subset=args.subset or None, cache_dir=args.cache_dir)
    print(f"data: {bundle!r}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, native bf16: {cpu_native_bf16()}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}")

    nets = {}
    for name, (_, fmt) in VARIANTS.items():
        torch.manual_seed(0)
        net = cnnzoo.create_model(args.model, num_classes=bundle.num_classes, in_chans=bundle.input_size[0])
        net.train().to(memory_format=fmt)
        nets[name] = net, torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, nesterov=True,
                                          weight_decay=5e-4)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)

    def step(name: str, x: torch.Tensor, y: torch.Tensor) -> float:
        (net, opt), (amp_dtype, fmt) = nets[name], VARIANTS[name]
        x = x.contiguous(memory_format=fmt)
        t0 = time.perf_counter()
        with autocast("cpu", amp_dtype):
            out = net(x)
        loss_fn(out.float(), y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    def batches():
        epoch = 0
        while True:
            yield from bundle.loader("train", args.batch_size, train=True, epoch=epoch)
            epoch += 1

    times: dict[str, list[float]] = {name: [] for name in nets}
    stream = batches()
    x, y = next(stream)
    for name in nets:
        step(name, x, y)  # warm-up: kernel selection, allocator
    for _ in range(args.rounds):
        x, y = next(stream)
        for name in nets:
            times[name].append(step(name, x, y))

    print(f"\n{args.model}, batch {args.batch_size}, {args.rounds} steps of each, interleaved")
    print(f"{'variant':<22}{'img/s':>9}{'vs ' + BASELINE:>26}")
    for name, t in times.items():
        ratio = statistics.median(b / a for a, b in zip(t, times[BASELINE], strict=True))
        print(f"{name:<22}{args.batch_size / statistics.median(t):>9.0f}{ratio:>25.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
