"""Every row of docs/performance.md's tables: ``cnnzoo bench`` once per row, JSON kept per row.

Each row is one ``cnnzoo bench ... --format json`` process (the command docs/performance.md
gives for it), so a torch.compile cache or an allocator state never carries from one row to the
next. Results go to ``--out`` (one JSON file per row, named after its flags); a row whose file
exists is not run again, so an interrupted suite resumes. At the end the tables are printed
in markdown from whatever files are there.

    python benchmarks/bench_suite.py                     # everything (about half an hour on 2 cores)
    python benchmarks/bench_suite.py --only train-cifar  # one group: infer, train, train-cifar
    python benchmarks/bench_suite.py --tables            # print the tables, run nothing
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import subprocess
import sys
from pathlib import Path

INFER_MODELS = ("resnet18", "resnet50", "vgg16", "googlenet_tv", "densenet121", "se_resnet50")
INFER_SETUPS = {"eager": [], "eager-cl": ["--channels-last"], "fast": ["--fast"],
                "fast-bf16": ["--fast", "--amp", "bf16"], "fast-compile": ["--fast", "--compile"]}
TRAIN_MODELS = INFER_MODELS
CIFAR_TRAIN = {"resnet20": 128, "resnet56": 128, "densenet_bc_100_12": 64}


def rows(iters: int) -> dict[str, dict[str, list[str]]]:
    """group -> row name -> ``cnnzoo bench`` arguments."""
    common = ["--iters", str(iters)]
    infer = {f"{m}.{s}": [m, "--threads", "2", "--batch-size", "16", *common, *flags]
             for m in INFER_MODELS for s, flags in INFER_SETUPS.items()}
    train = {f"{m}.train.{s}": [m, "--mode", "train", "--threads", "2", "--batch-size", "8",
                                "--warmup", "2", *common, *flags]
             for m in TRAIN_MODELS for s, flags in (("eager", []), ("eager-cl", ["--channels-last"]))}
    cifar = {f"{m}.train.t{t}.{s}": [m, "--mode", "train", "--threads", str(t), "--batch-size", str(b),
                                     *common, *flags]
             for m, b in CIFAR_TRAIN.items() for t in (1, 2)
             for s, flags in (("nchw", []), ("cl", ["--channels-last"]), ("compile", ["--compile"]),
                              ("cl-compile", ["--channels-last", "--compile"]))
             if t == 2 or "compile" not in s}  # compiled: at 2 threads only (each compiles for minutes)
    return {"infer": infer, "train": train, "train-cifar": cifar}


def run_rows(out: Path, groups: dict[str, dict[str, list[str]]]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for group, named in groups.items():
        for name, args in named.items():
            path = out / f"{name}.json"
            if path.exists():
                continue
            cmd = [sys.executable, "-m", "cnnzoo", "bench", *args, "--format", "json"]
            print(f"[{group}] cnnzoo bench {' '.join(args)}", flush=True)
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                print(f"  failed: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}")
                continue
            data = json.loads(r.stdout)
            data["command"] = "cnnzoo bench " + " ".join(args)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(data, indent=1))
            os.replace(tmp, path)
            ratio = "" if data["ratio"] is None else f"ratio {data['ratio']:.3f}, "
            print(f"  {ratio}{data['cnnzoo']['images_per_s']:.1f} img/s, "
                  f"{100 * data['peak_fraction']:.1f}% of peak", flush=True)


def _load(out: Path, name: str) -> dict | None:
    path = out / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def tables(out: Path) -> str:
    lines = []
    first = next(iter(sorted(out.glob("*.json"))), None)
    if first is not None:
        m = json.loads(first.read_text())["machine"]
        lines += [f"Machine: {m['cpu']} ({m['isa']}, {m['logical_cpus']} logical CPUs), "
                  f"torch {m['torch']}.", ""]
    lines += ["| model (against) | eager, NCHW | eager, channels-last (both) | fast | fast, % of peak "
              "| fast bf16 | fast compiled |", "|---|---|---|---|---|---|---|"]
    for m in INFER_MODELS:
        cells = []
        for s in INFER_SETUPS:
            d = _load(out, f"{m}.{s}")
            cells.append("-" if d is None or d["ratio"] is None else f"{d['ratio']:.2f}x")
            if s == "fast":
                cells.append("-" if d is None else f"{100 * d['peak_fraction']:.0f}%")
        other = (_load(out, f"{m}.eager") or {}).get("other") or {}
        lines.append(f"| {m} ({other.get('library', '-')}) | " + " | ".join(cells) + " |")
    lines += ["", "| model (against), training, batch 8 | eager, NCHW | eager, channels-last (both) "
              "| cnnzoo img/s (NCHW) | % of peak (NCHW) |", "|---|---|---|---|---|"]
    for m in TRAIN_MODELS:
        a, b = _load(out, f"{m}.train.eager"), _load(out, f"{m}.train.eager-cl")
        cell = [("-" if d is None or d["ratio"] is None else f"{d['ratio']:.2f}x") for d in (a, b)]
        ips = "-" if a is None else f"{a['cnnzoo']['images_per_s']:.1f}"
        peak = "-" if a is None else f"{100 * a['peak_fraction']:.0f}%"
        lib = ((a or {}).get("other") or {}).get("library", "-")
        lines.append(f"| {m} ({lib}) | {cell[0]} | {cell[1]} | {ips} | {peak} |")
    lines += ["", "| model, training (img/s) | threads | NCHW | channels-last | compiled | channels-last, "
              "compiled | % of peak (best) |", "|---|---|---|---|---|---|---|"]
    for m, b in CIFAR_TRAIN.items():
        for t in (1, 2):
            ds = [_load(out, f"{m}.train.t{t}.{s}") for s in ("nchw", "cl", "compile", "cl-compile")]
            cells = ["-" if d is None else f"{d['cnnzoo']['images_per_s']:.0f}" for d in ds]
            best = max((d for d in ds if d), key=lambda d: d["cnnzoo"]["images_per_s"], default=None)
            peak = "-" if best is None else f"{100 * best['peak_fraction']:.0f}%"
            lines.append(f"| {m} (batch {b}) | {t} | " + " | ".join(cells) + f" | {peak} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="bench", help="folder of the per-row JSON files")
    p.add_argument("--iters", type=int, default=10, help="timed calls of each side per row")
    p.add_argument("--only", choices=("infer", "train", "train-cifar"), action="append",
                   help="run only this group (repeatable)")
    p.add_argument("--rows", default="*", help="run only the rows whose name matches this glob, "
                   "e.g. 'resnet20.train.t2.*' (names: the JSON files' stems)")
    p.add_argument("--tables", action="store_true", help="only print the tables from --out")
    args = p.parse_args(argv)
    out = Path(args.out)
    if not args.tables:
        groups = rows(args.iters)
        run_rows(out, {g: {n: a for n, a in r.items() if fnmatch.fnmatchcase(n, args.rows)}
                       for g, r in groups.items() if not args.only or g in args.only})
    print(tables(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
