"""Data-pipeline throughput: how many training images/s ``cnnzoo.data`` hands to the model.

The number that matters is the ratio to the model's own training speed (target: the pipeline at
least 20x faster than resnet20 training, so it is never the bottleneck). ``bench_train.py``
imports :func:`pipeline_throughput` to print that ratio next to the training figures; run alone,
this script prints the pipeline figures and a bare resnet20 training step for the same ratio.

    python benchmarks/bench_data.py                       # CIFAR-10 (JPEG q75) zip from ../shared/data
    python benchmarks/bench_data.py --data digits --device cuda
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

DEFAULT_ZIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg75.zip"


def data_parser(doc: str, *, subset: bool = True) -> argparse.ArgumentParser:
    """An argument parser for a benchmark on real data: ``--data``, ``--subset`` (unless
    ``subset=False``), ``--cache-dir`` and ``--threads`` (see :func:`set_threads`)."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default=f"imagefolder:{DEFAULT_ZIP}",
                   help="dataset spec: digits, cifar10, cifar100 or imagefolder:PATH")
    if subset:
        p.add_argument("--subset", type=int, default=5000, help="training images to load (0: all)")
    p.add_argument("--cache-dir", default=None,
                   help="uint8 tensor cache; None: $CNNZOO_CACHE or ~/.cache/cnnzoo")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    return p


def set_threads(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)


def load_or_exit(prog: str, spec: str, **kwargs):
    """``load_data(spec, **kwargs)``, or one line on stderr and exit status 2 when the data is not
    there (in a fresh clone the default CIFAR zip is absent: pass ``--data``)."""
    from cnnzoo.data import load_data

    path = spec.split(":", 1)[1] if spec.startswith("imagefolder:") else None
    try:
        if path is not None and not os.path.exists(path):
            raise FileNotFoundError(f"{path} not found; pass --data (e.g. --data digits)")
        return load_data(spec, **kwargs)
    except (ValueError, FileNotFoundError) as e:
        print(f"{prog}: error: {str(e).strip().splitlines()[0]}", file=sys.stderr)
        sys.exit(2)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def pipeline_throughput(bundle, batch_size: int = 128, n_batches: int = 100,
                        device: torch.device | str = "cpu", *, split: str = "train",
                        train: bool = True) -> float:
    """Images/s of ``bundle.loader(split, batch_size, train=train)`` on ``device``, in steady state.

    Includes everything the training loop waits for: indexing, augmentation, normalization and,
    when streaming, decoding. The first batch (uploading the uint8 set to the device, starting
    workers) is excluded; epochs are chained when ``n_batches`` exceeds one.
    """
    device = torch.device(device)
    epoch, done, seen, start = 0, -1, 0, 0.0
    while done < n_batches:
        loader = bundle.loader(split, batch_size, train=train, device=device, epoch=epoch)
        if len(loader) == 0:
            raise ValueError(f"the {split} split has no batch of {batch_size}")
        for x, _ in loader:
            if done == -1:  # warm-up batch
                _sync(device)
                start = time.perf_counter()
            else:
                seen += len(x)
            done += 1
            if done >= n_batches:
                break
        epoch += 1
    _sync(device)
    return seen / (time.perf_counter() - start)


def train_step_throughput(model_name: str, bundle, batch_size: int = 128, n_batches: int = 10,
                          device: torch.device | str = "cpu") -> float:
    """Images/s of a bare training step (forward, cross-entropy, backward, SGD) on fixed batches."""
    import cnnzoo

    device = torch.device(device)
    model = cnnzoo.create_model(model_name, num_classes=bundle.num_classes,
                                in_chans=bundle.input_size[0]).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = next(iter(bundle.loader("train", batch_size, train=True, device=device)))

    def step():
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(n_batches):
        step()
    _sync(device)
    return n_batches * batch_size / (time.perf_counter() - start)


def main(argv=None) -> int:
    from cnnzoo.data import load_data

    p = data_parser(__doc__, subset=False)
    p.add_argument("--batch-size", type=int, default=128, help="images per batch")
    p.add_argument("--batches", type=int, default=200, help="timed batches per figure")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="where batches are augmented and the model runs")
    p.add_argument("--model", default="resnet20", help="model for the training-step comparison ('' to skip)")
    p.add_argument("--stream-subset", type=int, default=5000,
                   help="images for the streaming-path figure (0 to skip)")
    args = p.parse_args(argv)
    set_threads(args)
    t = time.perf_counter()
    bundle = load_or_exit("bench_data", args.data, cache_dir=args.cache_dir)
    print(f"torch {torch.__version__}, device {args.device}, {torch.get_num_threads()} CPU threads, "
          f"batch {args.batch_size}")
    print(f"load_data: {bundle.describe()}  [{time.perf_counter() - t:.2f} s]")
    t = time.perf_counter()
    load_data(args.data, cache_dir=args.cache_dir)
    print(f"load_data again (cache hit): {time.perf_counter() - t:.2f} s")
    train = pipeline_throughput(bundle, args.batch_size, args.batches, args.device)
    evals = pipeline_throughput(bundle, args.batch_size, args.batches, args.device, split="test", train=False)
    print(f"pipeline, cached uint8, train (crop+flip+normalize): {train:12,.0f} images/s")
    print(f"pipeline, cached uint8, eval (normalize):           {evals:12,.0f} images/s")
    if args.stream_subset and args.data.startswith("imagefolder:"):
        s = load_data(args.data, subset=args.stream_subset, stream=True)
        n = min(args.batches, len(s.loader("train", args.batch_size, train=True)))
        w = s.info["num_workers"]
        rate = pipeline_throughput(s, args.batch_size, max(1, n - 1), args.device)
        print(f"pipeline, streaming ({w} workers, JPEG decode):   {rate:12,.0f} images/s")
    if args.model:
        model = train_step_throughput(args.model, bundle, args.batch_size, device=args.device)
        print(f"{args.model} bare training step:                    {model:12,.0f} images/s")
        print(f"ratio pipeline/training: {train / model:,.0f}x (target >= 20x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
