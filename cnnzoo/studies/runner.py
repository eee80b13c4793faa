"""The one runner every study shares: its grid as run folders, then results, table and plots.

``run_study("degradation", "smoke", out="runs/study-degradation-smoke")`` trains each cell of the
grid once per seed through :func:`cnnzoo.train.train`, one run folder each
(``DIR/runs/CELL-sSEED``, its log in ``DIR/logs/``), and writes:

* ``DIR/results.json``: every cell (configuration, seed, resolved config, parameters,
  multiply-adds, seconds, final training error, best validation error, test error, per-epoch and
  per-step curves), the per-configuration summary, the analysis and the verdict;
* ``DIR/table.md``: the claim, mean +- std over seeds per configuration, the analysis tables and
  the verdict with its numbers;
* PNGs: ``errors.png`` for every study, and the study's own plots.

Running the same command again resumes: a cell whose run folder holds ``results.json`` is not
rerun, one holding ``last.pt`` continues from it (``train(resume=...)``), and a folder that an
interruption left without a checkpoint starts over. A cell missing from ``DIR/runs/`` but
recorded in ``DIR/results.json`` (e.g. a committed study) is taken from there. Every reused cell
must have been trained with the values the study sets now, and ``DIR`` must hold the same study,
scale and data (``DIR/study.json``, else ``DIR/results.json``); otherwise ``ValueError``.

``jobs > 1`` trains that many cells side by side, each in its own process with one torch thread.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import get_study
from ._plots import error_chart
from ._study import SCALES, Cell, Results, Scale, mean_std, pct

# Config keys that say where and how a cell ran, not what it trained: a finished cell is reused
# whatever their values.
ENV_KEYS = ("out", "device", "threads", "cache_dir", "data_dir", "download", "checkpoint_every")
MANIFEST = "study.json"


def default_out(name: str, scale: str) -> Path:
    """``runs/study-NAME-SCALE``: the same command finds its own study again and resumes it."""
    return Path("runs") / f"study-{name}-{scale}"


def _plain(value: Any) -> Any:
    """Tuples as lists, so a config compares equal to its JSON/YAML round trip."""
    return json.loads(json.dumps(value))


def cell_flags(scale: Scale, cell: Cell, seed: int, data: str) -> dict[str, Any]:
    """The ``TrainConfig`` values of one cell and seed (without ``out``, ``device``, ``threads``)."""
    return {**scale.train, **cell.train, "model": cell.model, "model_opts": _plain(dict(cell.opts)),
            "data": data, "seed": seed}


def _mismatch(saved: dict[str, Any], flags: dict[str, Any]) -> str | None:
    """The first value of the resolved config (outside :data:`ENV_KEYS`) in which a saved run
    differs from what ``flags`` resolve to now (a changed recipe counts too), as text."""
    from cnnzoo.train.config import resolve_config

    wanted = resolve_config(flags).to_dict()
    for key, value in wanted.items():
        if key in ENV_KEYS:
            continue
        if key == "channels_last" and value == "auto" and isinstance(saved.get(key), bool):
            continue  # "auto": the run recorded the memory format it measured to be faster
        if _plain(saved.get(key)) != _plain(value):
            return f"{key}={saved.get(key)!r} where the study now sets {value!r}"
    return None


# --------------------------------------------------------------------------------------------
# What a finished run folder says.


def _float(text: str) -> float | None:
    return None if text in ("", "None") else float(text)


def _history(run: Path) -> list[dict[str, Any]]:
    """Per-epoch rows of ``metrics.csv`` (what the engine keeps in sync with ``last.pt``)."""
    with open(run / "metrics.csv", newline="") as f:
        return [{k: _float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _error(top1: float | None) -> float | None:
    return None if top1 is None else 1.0 - top1


def read_cell(run: Path, cell: Cell, seed: int, out: Path) -> dict[str, Any]:
    """The study's record of a finished run folder."""
    res = json.loads((run / "results.json").read_text())
    epochs = [{"epoch": int(r["epoch"]), "step": int(r["step"]), "lr": r["lr"], "train_loss": r["train_loss"],
               "train_error": _error(r["train_top1"]), "val_loss": r["val_loss"],
               "val_error": _error(r["val_top1"])} for r in _history(run)]
    steps = []
    if (run / "last.pt").is_file():
        from cnnzoo.train import load_checkpoint

        steps = [{"step": int(s["step"]), "loss": s["loss"], "train_error": 1.0 - s["top1"], "lr": s["lr"]}
                 for s in load_checkpoint(run / "last.pt").get("step_log", [])]
    return {
        "cell": cell.name, "seed": seed, "model": cell.model, "model_opts": _plain(dict(cell.opts)),
        "note": cell.note, "run": os.path.relpath(run, out), "params": res["params"], "macs": res["macs"],
        "train_error": epochs[-1]["train_error"] if epochs else None,
        "val_error": _error(res.get("val_top1")), "best_epoch": res.get("best_epoch"),
        "test_error": _error(res.get("test_top1")), "test_loss": res.get("test_loss"),
        "iters": res.get("iters"), "seconds": res.get("seconds"), "images_per_s": res.get("images_per_s"),
        "data_sizes": res.get("data_sizes"), "config": res["config"], "hardware": res.get("hardware"),
        "versions": res.get("versions"), "epochs": epochs, "steps": steps,
    }


# --------------------------------------------------------------------------------------------
# One cell (in this process or in a worker).


def _execute(task: dict[str, Any]) -> dict[str, Any]:
    """Train (or resume) one cell; return its record, or ``{"error": ...}`` if its loss diverged.
    Its output goes to its log file."""
    from cnnzoo.train import TrainingDiverged, resolve_config, train

    cell = get_study(task["study"]).scales[task["scale"]].cells[task["index"]]
    run, out = Path(task["run"]), Path(task["out"])
    Path(task["log"]).parent.mkdir(parents=True, exist_ok=True)
    with open(task["log"], "a") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        model = cell.build(dict(cell.opts), task["num_classes"], task["in_chans"]) if cell.build else None
        try:
            if task["resume"]:
                train(resume=run, model=model)
            else:
                train(resolve_config(task["flags"]), model=model)
        except TrainingDiverged as e:
            print(f"error: {e}")
            return {"cell": cell.name, "seed": task["seed"], "model": cell.model,
                    "model_opts": _plain(dict(cell.opts)), "note": cell.note,
                    "run": os.path.relpath(run, out), "error": str(e)}
    return read_cell(run, cell, task["seed"], out)


def _clear_unstarted(run: Path) -> None:
    """Remove a run folder that an interruption left without a checkpoint (nothing to resume),
    unless a run holds it (the engine's lock)."""
    from cnnzoo.train.checkpoint import lock_run_folder

    lock = lock_run_folder(run)  # ValueError if a process trains there
    try:
        shutil.rmtree(run)
    finally:
        lock.close()


# --------------------------------------------------------------------------------------------
# The study.


def _identity(out: Path) -> dict[str, Any] | None:
    """The study, scale and data ``out`` holds: its ``study.json``, else its ``results.json`` (a
    committed study without the rest); ``None`` if neither is readable."""
    for name in (MANIFEST, "results.json"):
        try:
            d = json.loads((out / name).read_text())
            return {k: d.get(k) for k in ("study", "scale", "data")}
        except (OSError, ValueError, AttributeError):
            continue
    return None


def _check_manifest(out: Path, name: str, scale: str, data: str) -> None:
    mine = {"study": name, "scale": scale, "data": data}
    theirs = _identity(out)
    if theirs is not None:
        if theirs != mine:
            raise ValueError(f"{out} holds another study ({theirs}); this one is {mine}: "
                             "choose another --out")
    elif out.is_dir() and any(p.name != "logs" for p in out.iterdir()):
        raise ValueError(f"{out} is not empty and holds no study ({MANIFEST} is missing): "
                         "choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    from cnnzoo.train.checkpoint import atomic_write_json

    atomic_write_json(mine, out / MANIFEST)


def _previous(out: Path) -> dict[tuple[str, int], dict[str, Any]]:
    """Cell records of an earlier ``results.json`` (none if it is missing or unreadable)."""
    try:
        cells = json.loads((out / "results.json").read_text()).get("cells", [])
    except (OSError, ValueError, AttributeError):
        return {}
    return {(c["cell"], c["seed"]): c for c in cells if isinstance(c, dict) and "error" not in c
            and "cell" in c and "seed" in c and "config" in c}


def _check_data(data: str, train: dict[str, Any], cache_dir: str | None):
    """Load the data once (building its cache for the cells): ``DataError`` (a ``ValueError``)
    when it is not there."""
    from cnnzoo.data import load_data

    return load_data(data, data_dir=train.get("data_dir", "./data"), val_size=train.get("val_size"), seed=0,
                     image_size=train.get("image_size"), subset=train.get("subset"), cache_dir=cache_dir)


def _data_label(spec: str) -> str:
    from cnnzoo.train.engine import data_label

    return data_label(spec)


def run_study(name: str, scale: str = "smoke", *, data: str | None = None, seeds: int | None = None,
              jobs: int = 1, out: str | os.PathLike | None = None, device: str = "auto",
              cache_dir: str | None = None, echo: Callable[[str], Any] = print) -> dict[str, Any]:
    """Run (or resume) study ``name``; write ``results.json``, ``table.md`` and the PNGs; return the
    results (``results.json``'s content).

    ``data`` defaults to the scale's (``digits`` at smoke scale; the cpu and paper scales need it);
    ``seeds`` to the scale's number of seeds (seeds ``0 .. seeds-1``). ``echo`` receives one line
    per cell. Bad arguments, a missing dataset or a ``DIR`` holding something else: ``ValueError``.
    """
    study = get_study(name)
    if scale not in study.scales:
        choices = ", ".join(s for s in SCALES if s in study.scales)
        raise ValueError(f"unknown scale {scale!r}; choose one of {choices}")
    sc = study.scales[scale]
    data = data or sc.data
    if not data:
        raise ValueError(f"the {scale} scale of study {study.name} needs --data, e.g. --data "
                         "imagefolder:PATH/cifar10-jpeg75.zip or --data cifar10")
    seeds = sc.seeds if seeds is None else seeds
    for what, v in (("seeds", seeds), ("jobs", jobs)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"--{what} must be a positive integer, got {v!r}")
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"--device {device!r} is not allowed; choose auto, cpu or cuda")
    out = Path(out) if out is not None else default_out(study.name, scale)
    started = time.perf_counter()

    bundle = _check_data(data, dict(sc.train), cache_dir)
    _check_manifest(out, study.name, scale, data)
    analysis = study.analyze(sc) if study.analyze else {}

    # seed-major order: every configuration gets its first seed before any gets a second
    previous = _previous(out)
    plan = [(s, i, c) for s in range(seeds) for i, c in enumerate(sc.cells)]
    records: dict[tuple[str, int], dict[str, Any]] = {}
    tasks = []
    for seed, index, cell in plan:
        run = out / "runs" / f"{cell.name}-s{seed}"
        flags = cell_flags(sc, cell, seed, data)
        key = (cell.name, seed)
        saved = None
        if (run / "results.json").is_file():
            saved = json.loads((run / "results.json").read_text())["config"]
        elif (run / "last.pt").is_file():
            from cnnzoo.train import load_checkpoint

            saved = load_checkpoint(run / "last.pt")["config"]
        elif key in previous and not run.exists():
            saved = previous[key]["config"]
        if saved is not None and (why := _mismatch(saved, flags)):
            raise ValueError(f"{run} was trained with {why}: choose another --out")
        if (run / "results.json").is_file():
            records[key] = read_cell(run, cell, seed, out)
        elif key in previous and not run.exists():
            records[key] = previous[key]
        else:
            resume = (run / "last.pt").is_file()
            if run.exists() and not resume:
                _clear_unstarted(run)
            tasks.append({"study": study.name, "scale": scale, "index": index, "seed": seed, "run": str(run),
                          "out": str(out), "log": str(out / "logs" / f"{cell.name}-s{seed}.log"),
                          "resume": resume, "what": "resuming from its checkpoint" if resume else "training",
                          "flags": {**flags, "out": str(run), "device": device, "cache_dir": cache_dir,
                                    "threads": 1 if jobs > 1 else None},
                          "num_classes": bundle.num_classes, "in_chans": bundle.input_size[0]})

    label = _data_label(data)
    total = len(plan)
    echo(f"study {study.name} at {scale} scale on {label}: {total} runs ({len(sc.cells)} configurations x "
         f"{seeds} seed{'s' if seeds > 1 else ''}), {total - len(tasks)} already done, {len(tasks)} to "
         f"train; writing {out}")

    def header() -> dict[str, Any]:
        return {"study": study.name, "title": study.title, "claim": study.claim, "source": study.source,
                "paper": list(study.paper), "notes": list(study.notes), "scale": scale, "about": sc.about,
                "data": data, "data_label": label, "seeds": list(range(seeds)),
                "data_sizes": dict(bundle.sizes), "input_size": list(bundle.input_size)}

    def done(record: dict[str, Any], n: int) -> None:
        key = (record["cell"], record["seed"])
        records[key] = record
        if "error" in record:
            echo(f"[{n}/{len(tasks)}] {key[0]} seed {key[1]}: failed: {record['error']}")
        else:
            echo(f"[{n}/{len(tasks)}] {key[0]} seed {key[1]}: test error {pct(record['test_error'])}, final "
                 f"training error {pct(record['train_error'])} ({record['seconds']:.0f} s)")
        # keep what is done on disk as it comes: an interrupted study still shows its finished cells
        _write_results(out, {**header(), "cells": _ordered(records, plan), "analysis": analysis})

    try:
        _run_tasks(tasks, jobs, done, echo)
    except KeyboardInterrupt:
        finished = sum(1 for r in records.values() if "error" not in r)
        raise KeyboardInterrupt(f"interrupted with {finished} of {total} runs finished; the same command "
                                f"resumes the study in {out}") from None

    cells = _ordered(records, plan)
    res = Results([c for c in cells if "error" not in c], analysis)
    verdict = study.judge(res)
    results = {**header(), "verdict": verdict.to_dict(), "summary": summarize(cells),
               "wall_seconds": round(time.perf_counter() - started, 1), "trained_now": len(tasks),
               "cells": cells, "analysis": analysis}
    _write_results(out, results)
    (out / "table.md").write_text(render_table(results))
    plots = [error_chart(results, out)] + [plot(results, out) for plot in study.plots]
    echo(f"verdict: {verdict.verdict}")
    for part in verdict.parts:
        echo(f"  {part.verdict}: {part.claim}: {part.numbers}")
    echo(f"wrote {out / 'results.json'}, {out / 'table.md'}, " + ", ".join(str(p) for p in plots))
    return results


def _ordered(records: dict, plan: list) -> list[dict[str, Any]]:
    """Records in grid order (configuration-major, then seed), as far as they exist."""
    order = sorted(plan, key=lambda p: (p[1], p[0]))
    return [records[(c.name, s)] for s, _, c in order if (c.name, s) in records]


def _write_results(out: Path, results: dict[str, Any]) -> None:
    from cnnzoo.train.checkpoint import atomic_write_json

    atomic_write_json(results, out / "results.json")


def _run_tasks(tasks: list[dict[str, Any]], jobs: int, done, echo) -> None:
    """Run ``tasks``, one after the other or ``jobs`` at a time; ``done(record, n)`` as each ends."""
    if jobs == 1 or len(tasks) <= 1:
        for n, t in enumerate(tasks, 1):
            echo(f"[{n}/{len(tasks)}] {_name(t)}: {t['what']} (log: {t['log']})")
            done(_execute(t), n)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    workers = min(jobs, len(tasks))
    echo(f"training {len(tasks)} runs, {workers} at a time (logs in {Path(tasks[0]['log']).parent})")
    # spawn, not fork: a forked copy of a process that has run torch may hang in its thread pools
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        futures = [pool.submit(_execute, t) for t in tasks]
        for n, f in enumerate(as_completed(futures), 1):
            done(f.result(), n)
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)  # running runs save their checkpoint first
        raise
    pool.shutdown(wait=True)


def _name(task: dict[str, Any]) -> str:
    return f"{get_study(task['study']).scales[task['scale']].cells[task['index']].name} seed {task['seed']}"


# --------------------------------------------------------------------------------------------
# Summary and table.


def summarize(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per configuration: mean and std over seeds of each error, parameters, MACs, seconds."""
    out = []
    for name in dict.fromkeys(c["cell"] for c in cells):
        mine = [c for c in cells if c["cell"] == name and "error" not in c]
        failed = [c["seed"] for c in cells if c["cell"] == name and "error" in c]
        row: dict[str, Any] = {"cell": name, "seeds": [c["seed"] for c in mine], "failed_seeds": failed}
        first = next(c for c in cells if c["cell"] == name)
        row.update(model=first["model"], model_opts=first["model_opts"], note=first["note"],
                   params=mine[0]["params"] if mine else None, macs=mine[0]["macs"] if mine else None)
        for metric in ("train_error", "val_error", "test_error", "seconds"):
            m, s = mean_std([c[metric] for c in mine if c.get(metric) is not None])
            row[metric] = {"mean": m, "std": s}
        out.append(row)
    return out


def _si(n: int | None) -> str:
    if n is None:
        return "n/a"
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(n)


def _stat(value: dict[str, float | None]) -> str:
    """``{"mean", "std"}`` of an error as percent: ``12.34 +- 0.56``."""
    m, s = value["mean"], value["std"]
    if m is None:
        return "n/a"
    return f"{100 * m:.2f}" if s is None else f"{100 * m:.2f} +- {100 * s:.2f}"


def _md_row(cells: list[Any]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def render_table(results: dict[str, Any]) -> str:
    """``table.md``: the claim, the grid's results (mean +- std over seeds), analysis, verdict."""
    sizes = results["data_sizes"]
    lines = [f"# Study `{results['study']}`: {results['title']}", "",
             f"**Claim** ({results['source']}): {results['claim']}", "",
             f"**Scale** {results['scale']}: {results['about']}.", "",
             f"**Data** `{results['data']}`: {sizes.get('train', 0):,} training, {sizes.get('val', 0):,} "
             f"validation, {sizes.get('test', 0):,} test images of "
             f"{'x'.join(map(str, results['input_size']))}; seeds "
             f"{', '.join(map(str, results['seeds']))}.", "",
             "## Results", "",
             "Errors in %, mean +- std over seeds (the std needs two seeds). Training error: the last "
             "epoch's, on augmented batches; validation: the best epoch's (which selects the tested "
             "weights); test: those weights, once.", "",
             _md_row(["configuration", "model and options", "params", "MACs", "training error",
                      "validation error", "test error", "seeds", "seconds per run"]),
             _md_row(["---", "---", "---:", "---:", "---:", "---:", "---:", "---:", "---:"])]
    for row in results["summary"]:
        opts = " ".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}"
                        for k, v in (row.get("model_opts") or {}).items())
        seeds = str(len(row["seeds"]))
        if row["failed_seeds"]:
            seeds += f" ({len(row['failed_seeds'])} failed)"
        sec = row["seconds"]["mean"]
        errors = [_stat(row[m]) for m in ("train_error", "val_error", "test_error")]
        lines.append(_md_row([row["cell"], f"`{row.get('model', '?')}` {opts}".strip(),
                              _si(row.get("params")), _si(row.get("macs")), *errors, seeds,
                              "n/a" if sec is None else f"{sec:.0f}"]))
    for table in results["analysis"].get("tables", []):
        lines += ["", f"## {table['title']}", "", _md_row(table["header"]),
                  _md_row(["---"] + ["---:"] * (len(table["header"]) - 1))]
        lines += [_md_row(r) for r in table["rows"]]
    v = results["verdict"]
    lines += ["", f"## Verdict: **{v['verdict']}**", "",
              "A difference counts only when it exceeds the larger standard deviation over seeds.", ""]
    lines += [f"- {p['verdict']}: {p['claim']} ({p['numbers']})" for p in v["parts"]]
    lines += ["", "## The paper", ""] + [f"- {p}" for p in results["paper"]]
    if results["notes"]:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in results["notes"]]
    lines += ["", f"Wall time of the invocation that wrote this: {results['wall_seconds']:.0f} s "
              f"({results['trained_now']} runs trained or resumed in it)."]
    return "\n".join(lines) + "\n"

