"""The inference fast path, step by step, and its bf16 agreement on real images.

``ablation``: for each model, one process, every configuration interleaved (cnnzoo.bench's
``time_interleaved``): torchvision's model eager in NCHW and channels-last (where torchvision has
it, with cnnzoo's weights mapped through cnnzoo.interop), cnnzoo's eager in both layouts, then
``for_inference`` adding one step at a time: channels-last without folding, with BN folding
(the default), in bf16, compiled. Each row: median images/s, the ratio to the first row, and
the multiply-adds/s against a large 3x3 conv timed in the same loop.

``convs``: where the fast path's convolution time goes. Every conv of ``for_inference(model)`` is
called on the input it sees in the model, all of them and the peak conv interleaved; the rows
group them by kernel size: share of the multiply-adds, share of the conv time, multiply-adds/s
and that rate against the peak conv's; and the minor page faults (fresh memory first written) of one
call of the whole model.

``agreement``: a trained run's evaluation split through its eager fp32 model and through
``for_inference`` in fp32 and in bf16: accuracies, top-1 agreement with the eager model, and the
largest logit difference.

    python benchmarks/bench_infer.py ablation --models resnet50,googlenet_tv,densenet121 --threads 2
    python benchmarks/bench_infer.py convs --models resnet50 --threads 2
    python benchmarks/bench_infer.py agreement runs/resnet20-cifar --threads 2
"""

from __future__ import annotations

import argparse
import copy
import os
import sys

import torch

import cnnzoo
from cnnzoo.analysis import profile
from cnnzoo.bench import PEAK_MACS, _peak_step, build_counterpart, counterpart_of, machine, time_interleaved
from cnnzoo.interop import load_external
from cnnzoo.optimize import for_inference


def _configs(name: str, batch_size: int, size: tuple[int, int, int], compile: bool):
    """(label, model, input, multiply-adds per image) for each configuration of ``name``."""
    torch.manual_seed(0)
    ours = cnnzoo.create_model(name).eval()
    found = counterpart_of(name, "torchvision")
    x = torch.randn(batch_size, *size, generator=torch.Generator().manual_seed(0))
    xcl = x.contiguous(memory_format=torch.channels_last)
    with torch.device("meta"):
        macs = profile(cnnzoo.create_model(name), size).macs
        fast_macs = profile(for_inference(cnnzoo.create_model(name), channels_last=False), size).macs
    out = []
    if found is not None:
        tv = build_counterpart(*found, num_classes=ours.num_classes).eval()
        load_external(ours, tv.state_dict(), "torchvision")
        out += [("torchvision eager NCHW", tv, x, macs)]
        tv_cl = build_counterpart(*found, num_classes=ours.num_classes).eval()
        tv_cl.load_state_dict(tv.state_dict())
        out += [("torchvision eager channels-last", tv_cl.to(memory_format=torch.channels_last), xcl, macs)]
    out += [("cnnzoo eager NCHW", ours, x, macs),
            ("cnnzoo eager channels-last", copy.deepcopy(ours).to(memory_format=torch.channels_last), xcl,
             macs),
            ("fast, no folding", for_inference(ours, fold_bn=False), xcl, macs),
            ("fast (BN folded)", for_inference(ours), xcl, fast_macs),
            ("fast bf16", for_inference(ours, dtype=torch.bfloat16), xcl, fast_macs)]
    if compile:
        out += [("fast compiled", for_inference(ours, compile=True), xcl, fast_macs)]
    return out


def ablation(args) -> int:
    print(machine(), f"threads {torch.get_num_threads()}, load average "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    for name in args.models.split(","):
        size = tuple(args.input_size) if args.input_size else cnnzoo.get_model_meta(name).input_size
        configs = _configs(name, args.batch_size, size, args.compile)
        steps = [(lambda m=m, x=x: m(x)) for _, m, x, _ in configs]
        steps += [_peak_step(torch.channels_last, bf16_weights=False, autocast=False),
                  _peak_step(torch.channels_last, bf16_weights=True, autocast=False)]
        with torch.inference_mode():
            times = time_interleaved(steps, args.iters, args.warmup)
        med = [sorted(t)[len(t) // 2] for t in times]
        peak32, peak16 = PEAK_MACS / med[-2] / 1e9, PEAK_MACS / med[-1] / 1e9
        print(f"\n{name}, batch {args.batch_size} at {'x'.join(map(str, size))}, {args.iters} timed calls "
              f"each after {args.warmup} warm-up; conv peak {peak32:.1f} G MACs/s fp32, {peak16:.1f} bf16")
        print(f"{'configuration':<34}{'img/s':>9}{'vs first':>10}{'G MACs/s':>10}{'% of fp32 peak':>16}")
        for (label, _, _, macs), t in zip(configs, med, strict=False):
            ips = args.batch_size / t
            rate = macs * ips / 1e9
            print(f"{label:<34}{ips:>9.1f}{ips * med[0] / args.batch_size:>9.2f}x{rate:>10.1f}"
                  f"{100 * rate / peak32:>15.1f}%")
    return 0


def convs(args) -> int:
    import resource  # POSIX only, as the page-fault count is

    print(machine(), f"threads {torch.get_num_threads()}")
    for name in args.models.split(","):
        size = tuple(args.input_size) if args.input_size else cnnzoo.get_model_meta(name).input_size
        model = for_inference(cnnzoo.create_model(name))
        seen: list[tuple[torch.nn.Conv2d, torch.Tensor, int]] = []  # conv, its input, its output's size
        hooks = [c.register_forward_hook(lambda c, a, o, seen=seen: seen.append((c, a[0].clone(), o.numel())))
                 for c in model.modules() if isinstance(c, torch.nn.Conv2d)]
        x = torch.randn(args.batch_size, *size, generator=torch.Generator().manual_seed(0))
        with torch.inference_mode():
            model(x)
            for h in hooks:
                h.remove()
            model(x)
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            model(x)
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
            steps = [(lambda c=c, x=x: c(x)) for c, x, _ in seen]
            steps.append(_peak_step(torch.channels_last, bf16_weights=False, autocast=False))
            times = time_interleaved(steps, args.iters, args.warmup)
        med = [sorted(t)[len(t) // 2] for t in times]
        peak = PEAK_MACS / med[-1] / 1e9
        groups: dict[str, list[float]] = {}
        for (c, _, n_out), t in zip(seen, med, strict=False):
            macs = n_out * c.in_channels // c.groups * c.kernel_size[0] * c.kernel_size[1]
            g = groups.setdefault("x".join(map(str, c.kernel_size)), [0.0, 0.0, 0])
            g[0], g[1], g[2] = g[0] + macs, g[1] + t, g[2] + 1
        all_macs, all_t = sum(g[0] for g in groups.values()), sum(g[1] for g in groups.values())
        print(f"\n{name} fast path, batch {args.batch_size} at {'x'.join(map(str, size))}, median of "
              f"{args.iters} calls of each conv; peak conv {peak:.1f} G MACs/s; one call of the whole "
              f"model: {faults} minor page faults")
        print(f"{'kernel':<8}{'convs':>6}{'% of MACs':>11}{'% of conv time':>16}{'G MACs/s':>10}"
              f"{'% of peak':>11}")
        for k, (macs, t, n) in groups.items():
            rate = macs / t / 1e9
            print(f"{k:<8}{n:>6}{100 * macs / all_macs:>10.1f}%{100 * t / all_t:>15.1f}%{rate:>10.1f}"
                  f"{100 * rate / peak:>10.1f}%")
        print(f"{'all':<8}{len(seen):>6}{100:>10.1f}%{100:>15.1f}%{all_macs / all_t / 1e9:>10.1f}"
              f"{100 * all_macs / all_t / 1e9 / peak:>10.1f}%")
    return 0


def agreement(args) -> int:
    from cnnzoo.data import load_data
    from cnnzoo.train.checkpoint import load_checkpoint, load_model_state
    from cnnzoo.train.evaluate import logits_of, resolve_checkpoint

    path = resolve_checkpoint(args.run)
    ckpt = load_checkpoint(path)
    cfg = ckpt["config"]
    bundle = load_data(cfg["data"], data_dir=args.data_dir or cfg["data_dir"], val_size=cfg["val_size"],
                       seed=cfg["seed"], image_size=cfg["image_size"], subset=cfg["subset"],
                       cache_dir=cfg["cache_dir"])
    model = cnnzoo.create_model(cfg["model"], num_classes=bundle.num_classes, in_chans=bundle.input_size[0],
                                **cfg["model_opts"])
    load_model_state(model, ckpt["model"], str(path))
    model.eval()
    fast = {"fp32": for_inference(model), "bf16": for_inference(model, dtype=torch.bfloat16)}
    n, hits = 0, {"eager": 0, "fp32": 0, "bf16": 0}
    agree, worst = {"fp32": 0, "bf16": 0}, {"fp32": 0.0, "bf16": 0.0}
    with torch.inference_mode():
        for x, y in bundle.loader(args.split, args.batch_size, train=False):
            ref = logits_of(model(x))
            hits["eager"] += (ref.argmax(1) == y).sum().item()
            for k, m in fast.items():
                out = m(x).float()
                hits[k] += (out.argmax(1) == y).sum().item()
                agree[k] += (out.argmax(1) == ref.argmax(1)).sum().item()
                worst[k] = max(worst[k], ((out - ref).abs().max() / ref.abs().max()).item())
            n += y.numel()
    print(f"{cfg['model']} ({path}) on {cfg['data']} {args.split}, {n} images, "
          f"{torch.get_num_threads()} threads")
    print(f"eager fp32 top-1 {hits['eager'] / n:.2%}")
    for k in fast:
        print(f"fast {k}: top-1 {hits[k] / n:.2%}, agrees with eager fp32 on {agree[k] / n:.2%} "
              f"({n - agree[k]} differ), largest logit difference {worst[k]:.2e} of the batch's max |logit|")
    return 0


def _timing_parser(sub, name: str, help: str, models: str, iters: tuple[int, str], warmup: tuple[int, str]):
    """A subcommand timing models at a batch size: --models, --batch-size, --input-size, --iters, --warmup."""
    p = sub.add_parser(name, help=help, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--models", default=models, help="comma-separated names")
    p.add_argument("--batch-size", type=int, default=16, help="images per call")
    p.add_argument("--input-size", type=int, nargs=3, metavar=("C", "H", "W"),
                   help="input size; None: each model's own")
    p.add_argument("--iters", type=int, default=iters[0], help=iters[1])
    p.add_argument("--warmup", type=int, default=warmup[0], help=warmup[1])
    return p


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    sub = p.add_subparsers(dest="what", required=True)
    a = _timing_parser(sub, "ablation", "each step of the fast path, timed side by side",
                       "resnet50,googlenet_tv,densenet121", iters=(10, "timed calls of each configuration"),
                       warmup=(3, "untimed calls first (compilation happens here)"))
    a.add_argument("--compile", action="store_true", help="also time the compiled fast path")
    _timing_parser(sub, "convs", "the fast path's conv time by kernel size, against the peak conv",
                   "resnet50", iters=(5, "timed calls of each conv"), warmup=(2, "untimed calls first"))
    g = sub.add_parser("agreement", help="bf16 and fp32 fast path against the eager model on real images",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g.add_argument("run", help="a run folder (its best.pt) or a checkpoint")
    g.add_argument("--split", default="test", help="test or val")
    g.add_argument("--data-dir", default=None, help="where CIFAR's files are; None: the run's")
    g.add_argument("--batch-size", type=int, default=256, help="images per batch")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    return {"ablation": ablation, "convs": convs, "agreement": agreement}[args.what](args)


if __name__ == "__main__":
    sys.exit(main())
