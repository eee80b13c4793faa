"""Peak training memory of a DenseNet with and without ``memory_efficient``, at equal gradients.

``memory_efficient=True`` recomputes each dense layer's concatenation-BN-ReLU-1x1 conv in the
backward pass instead of keeping its output, the memory that grows quadratically with depth.
Each configuration runs in a fresh process (a process's peak resident memory only rises), which
builds the model (same seed), makes the batch, then does one training step: forward,
cross-entropy, backward. The figure is the peak resident memory during that step minus the
resident memory just before it (weights, batch and libraries are in both), from
``getrusage``'s high-water mark, so it counts everything the step allocates: activations kept for
the backward pass, gradients, workspace. The gradients of the two runs are compared, relative to
the largest gradient (they differ only by rounding: the recomputed BN uses the same statistics).
Target (issue 11): densenet121 at batch 32, 224x224, memory_efficient at most 60% of the default.

    python benchmarks/bench_memory.py                          # densenet121, batch 32, 224x224
    python benchmarks/bench_memory.py --model densenet_bc_100_12 --batch-size 64 --input-size 32
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile

import torch


def _rss_bytes() -> int:
    """This process's resident memory now (Linux: /proc/self/statm), else its high-water mark."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return _peak_bytes()


def _peak_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # kilobytes on Linux


def one_step(model_name: str, efficient: bool, batch: int, size: int, grads_out: str) -> dict:
    """In this (fresh) process: one training step; the peak memory it added; gradients saved."""
    import cnnzoo

    torch.manual_seed(0)
    model = cnnzoo.create_model(model_name, memory_efficient=efficient).train()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 3, size, size, generator=gen)
    y = torch.randint(0, 10, (batch,), generator=gen)
    before = _rss_bytes()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    peak = _peak_bytes()
    torch.save({k: p.grad for k, p in model.named_parameters()}, grads_out)
    return {"before": before, "peak": peak, "step": peak - before}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="densenet121", help="a DenseNet from the registry")
    p.add_argument("--batch-size", type=int, default=32, help="images in the step")
    p.add_argument("--input-size", type=int, default=224, help="image height and width")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--child", nargs=2, metavar=("EFFICIENT", "GRADS"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        r = one_step(args.model, args.child[0] == "1", args.batch_size, args.input_size, args.child[1])
        print(json.dumps(r))
        return 0

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}; {args.model}, batch {args.batch_size}, "
          f"{args.input_size}x{args.input_size}, one training step per process")
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        for efficient in (False, True):
            grads = os.path.join(tmp, f"g{int(efficient)}.pt")
            cmd = [sys.executable, __file__, "--model", args.model, "--batch-size", str(args.batch_size),
                   "--input-size", str(args.input_size), "--threads", str(args.threads),
                   "--child", str(int(efficient)), grads]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            res[efficient] = json.loads(out.strip().splitlines()[-1])
            res[efficient]["grads"] = torch.load(grads, weights_only=True)
    ga, gb = res[False].pop("grads"), res[True].pop("grads")
    scale = max(g.abs().max().item() for g in ga.values())
    diff = max((ga[k] - gb[k]).abs().max().item() for k in ga)
    for eff in (False, True):
        r = res[eff]
        print(f"  memory_efficient={eff!s:<5}  step {r['step'] / 2**20:8.0f} MiB   "
              f"(resident before {r['before'] / 2**20:.0f} MiB, peak {r['peak'] / 2**20:.0f} MiB)")
    ratio = res[True]["step"] / res[False]["step"]
    print(f"memory_efficient / default = {ratio:.3f} of the step's peak memory "
          f"({'meets' if ratio <= 0.60 else 'ABOVE'} the 60% target); largest gradient difference "
          f"{diff / scale:.1e} of the largest gradient")
    return 0


if __name__ == "__main__":
    sys.exit(main())
