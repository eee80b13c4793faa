"""Bad input to cnnzoo, end to end: each case is one line on stderr and a known exit status.

Every row of ``CASES`` gives the command's arguments (built in a temporary folder by a small
function), the exit status and a phrase (a regular expression) of the one stderr line; a row may
also name a path that must be left exactly as it was, or that must not be created. Commands run
in this process through :func:`cnnzoo.cli.main`; the Ctrl-C rows run ``python -m cnnzoo`` in a
subprocess that sends itself SIGINT at a chosen moment. ``API_CASES`` are the Python API's.
Cover a new kind of bad input by adding a row. (Bad datasets: tests/test_bad_inputs_data.py.)
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
TINY = {"depth": 8, "widths": (8, 16, 32), "stem_width": 8}
TINY_OPTS = ["--opt", "depth=8", "--opt", "widths=8,16,32", "--opt", "stem_width=8"]
LOCK = ".lock"  # the lock file a training run holds in its folder


class Ctx:
    """What a case's builder gets: its own folder, the module's shared runs and data, monkeypatch."""

    def __init__(self, tmp: Path, shared: dict, monkeypatch):
        self.tmp, self.shared, self.monkeypatch = tmp, shared, monkeypatch
        self.cache = shared["cache"]
        self.held = []  # lock files held open by the case, closed by the runner

    def train_args(self, *extra) -> list:
        """A tiny digits run (2 steps) with these extra arguments."""
        return ["train", "cifar_resnet", *TINY_OPTS, "--data", "digits", "--image-size", 16, "--subset", 256,
                "--val-size", 32, "--cache-dir", self.cache, "--iters", 2, "--batch-size", 32,
                "--device", "cpu", *extra]

    def digits_run(self) -> Path:
        """A copy of a finished tiny digits run."""
        dst = self.tmp / "run"
        shutil.copytree(self.shared["digits_run"], dst)
        return dst

    def image_run(self) -> tuple[Path, Path]:
        """A tiny image folder (classes a, b; 8x8 PNGs) and a finished 2-step run on it."""
        from cnnzoo.train import resolve_config, train

        data = image_folder(self.tmp / "data")
        train(resolve_config({"model": "cifar_resnet", "model_opts": dict(TINY),
                              "data": f"imagefolder:{data}", "cache_dir": self.cache,
                              "out": str(self.tmp / "run"), "iters": 2, "batch_size": 8, "device": "cpu"}))
        return data, self.tmp / "run"

    def hold_lock(self, folder: Path) -> None:
        """Lock ``folder`` as a training process in it would (flock on an open file description of
        its own, so this process's own lock attempt is refused too)."""
        folder.mkdir(parents=True, exist_ok=True)
        f = open(folder / LOCK, "a+")  # closed by the runner
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.held.append(f)

    def read_only(self, folder: Path) -> Path:
        """A folder no file can be created in (root ignores permission bits: then mkdir is refused
        as the kernel would refuse it to anyone else)."""
        folder.mkdir()
        folder.chmod(0o555)
        if os.geteuid() == 0:
            real = os.mkdir

            def mkdir(path, *a, **kw):
                if str(path).startswith(str(folder) + os.sep):
                    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
                return real(path, *a, **kw)

            self.monkeypatch.setattr(os, "mkdir", mkdir)
        return folder


def image_folder(root: Path, classes=("a", "b"), n_train=16, n_test=4, size=8) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
                    root / split / c / f"{i:03d}.png")
    return root


def yaml_file(ctx: Ctx, text: str) -> Path:
    p = ctx.tmp / "c.yaml"
    p.write_text(text)
    return p


def a_file(ctx: Ctx, name: str = "file") -> Path:
    p = ctx.tmp / name
    p.write_text("not a folder\n")
    return p


# --------------------------------------------------------------------------------------------
# Builders of the cases that need more than one line


def _not_empty(ctx: Ctx) -> list:
    out = ctx.tmp / "out"
    out.mkdir()
    (out / "notes.txt").write_text("my notes\n")
    return ctx.train_args("--out", out)


def _finished_without_last(ctx: Ctx) -> list:
    run = ctx.digits_run()
    (run / "last.pt").unlink()  # results.json and best.pt remain: they must not be overwritten
    return ctx.train_args("--out", run)


def _resume_locked(ctx: Ctx) -> list:
    run = ctx.digits_run()
    ctx.hold_lock(run)
    return ["train", "--resume", run]


def _new_run_locked(ctx: Ctx) -> list:
    ctx.hold_lock(ctx.tmp / "out")
    return ctx.train_args("--out", ctx.tmp / "out")


def _more_images(ctx: Ctx) -> list:
    data, run = ctx.image_run()
    for i in range(16, 20):
        shutil.copy(data / "train" / "a" / "000.png", data / "train" / "a" / f"{i:03d}.png")
    return ["train", "--resume", run]


def _other_classes(ctx: Ctx) -> list:
    data, run = ctx.image_run()
    for split in ("train", "test"):
        (data / split / "b").rename(data / split / "c")
    return ["train", "--resume", run]


def _other_size(ctx: Ctx) -> list:
    data, run = ctx.image_run()
    for p in data.rglob("*.png"):
        Image.open(p).resize((10, 10)).save(p)
    return ["train", "--resume", run]


def _changed_accepted(ctx: Ctx) -> list:
    return [*_more_images(ctx), "--allow-data-change"]


def _eval_other_classes(ctx: Ctx) -> list:
    _, run = ctx.image_run()
    other = image_folder(ctx.tmp / "other", classes=("x", "y"))
    return ["eval", run, "--data", f"imagefolder:{other}", "--cache-dir", ctx.cache]


def _eval_other_classes_accepted(ctx: Ctx) -> list:
    return [*_eval_other_classes(ctx), "--allow-other-classes"]


def _eval_plot_under_file(ctx: Ctx) -> list:
    return ["eval", ctx.digits_run(), "--cache-dir", ctx.cache, "--plot", a_file(ctx) / "c.png"]


# --------------------------------------------------------------------------------------------
# Ctrl-C: a subprocess that interrupts itself at a chosen moment

_INTERRUPT_IMPORT = """
import os, signal, sys
class Hook:  # Ctrl-C while the module {module!r} is being imported
    def find_spec(self, name, path=None, target=None):
        if name == {module!r}:
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)
sys.meta_path.insert(0, Hook())
"""

_INTERRUPT_SAVE = """
import io, os, signal, torch
from cnnzoo.train.report import Reporter
steps = [0]
update = Reporter.update
def interrupt_at_step_2(self, *a):  # the first Ctrl-C: stop and save
    steps[0] += 1
    if steps[0] == 2:
        os.kill(os.getpid(), signal.SIGINT)
    return update(self, *a)
Reporter.update = interrupt_at_step_2
class Writer(io.RawIOBase):  # the second Ctrl-C, in the middle of writing that checkpoint
    def __init__(self, f):
        self.f, self.writes = f, 0
    def writable(self):
        return True
    def write(self, b):
        self.writes += 1
        if self.writes == 3 and steps[0] >= 2:
            os.kill(os.getpid(), signal.SIGINT)
        return self.f.write(b)
save = torch.save
torch.save = lambda obj, f, *a, **kw: save(obj, Writer(f), *a, **kw)
"""


def subprocess_with(prelude: str) -> Callable[[list], tuple[int, str, str]]:
    """Run ``python -m cnnzoo ARGS`` after ``prelude`` (Python code) in a fresh interpreter."""
    def run(args: list) -> tuple[int, str, str]:
        # Ctrl-C as a terminal delivers it: a shell that starts jobs in the background without job
        # control (`cmd &`, nohup) hands its children SIGINT ignored, and Python keeps it ignored.
        code = ("import signal\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n" + prelude
                + "\nimport runpy, sys\nsys.argv = ['cnnzoo', *sys.argv[1:]]\n"
                "runpy.run_module('cnnzoo', run_name='__main__', alter_sys=True)\n")
        r = subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=ROOT, capture_output=True,
                           text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
        return r.returncode, r.stdout, r.stderr
    return run


# --------------------------------------------------------------------------------------------
# The table


@dataclass(frozen=True)
class Case:
    id: str
    args: Callable[[Ctx], list]  # builds what the case needs under ctx.tmp; returns the arguments
    status: int                  # expected exit status
    phrase: str                  # regex: in the one stderr line (status 2, 130), in the output (status 0)
    unchanged: str | None = None  # a path under ctx.tmp that must be left exactly as it was
    absent: str | None = None     # a path under ctx.tmp that must not exist afterwards
    launch: Callable[[list], tuple[int, str, str]] | None = None  # default: cnnzoo.cli.main in-process


CASES = [
    # A run folder belongs to one run.
    Case("out-not-empty", _not_empty, 2, r"out is not empty", unchanged="out"),
    Case("out-finished-run-without-last.pt", _finished_without_last, 2, r"is not empty", unchanged="run"),
    Case("out-holds-a-run", lambda c: c.train_args("--out", c.digits_run()), 2, r"--resume .*run",
         unchanged="run"),
    Case("resume-locked", _resume_locked, 2, r"another process( \(pid \d+\))? is using it", unchanged="run"),
    Case("new-run-in-locked-folder", _new_run_locked, 2, r"another process( \(pid \d+\))? is using it"),
    Case("resume-more-images", _more_images, 2, r"data changed .*train images 29 -> 32.*--allow-data-change",
         unchanged="run"),
    Case("resume-other-class-names", _other_classes, 2, r"data changed .*class names a, b -> a, c",
         unchanged="run"),
    Case("resume-other-image-size", _other_size, 2, r"data changed .*image size 3x8x8 -> 3x10x10",
         unchanged="run"),
    Case("resume-data-change-accepted", _changed_accepted, 0, r"warning: the data changed .*train images"),
    Case("allow-data-change-without-resume", lambda c: c.train_args("--allow-data-change"), 2,
         r"--allow-data-change .*--resume"),
    Case("eval-other-class-names", _eval_other_classes, 2, r"class names .*--allow-other-classes"),
    Case("eval-other-class-names-accepted", _eval_other_classes_accepted, 0, r"warning: .*class names"),
    # Options decided by the data; config values of the wrong type.
    Case("opt-num-classes", lambda c: c.train_args("--opt", "num_classes=5", "--out", c.tmp / "o"), 2,
         r"num_classes .*decided by the data", absent="o"),
    Case("opt-in-chans-yaml", lambda c: c.train_args("--config", yaml_file(c, "opt: {in_chans: 3}\n")), 2,
         r"in_chans .*decided by the data"),
    Case("yaml-text-for-number", lambda c: c.train_args("--config", yaml_file(c, "lr: fast\n")), 2,
         r"c.yaml: lr must be a number, got 'fast'"),
    Case("yaml-number-for-list", lambda c: c.train_args("--config", yaml_file(c, "milestones: 0.5\n")), 2,
         r"c.yaml: milestones must be a list of numbers, got 0.5"),
    Case("yaml-text-for-int", lambda c: c.train_args("--config", yaml_file(c, "seed: one\n")), 2,
         r"seed must be an integer.*got 'one'"),
    Case("yaml-number-for-bool", lambda c: c.train_args("--config", yaml_file(c, "nesterov: 2\n")), 2,
         r"c.yaml: nesterov must be true or false, got 2"),
    Case("yaml-list-for-mapping", lambda c: c.train_args("--config", yaml_file(c, "model_opts: [1, 2]\n")),
         2, r"c.yaml: model_opts must be a mapping"),
    Case("yaml-number-for-opt", lambda c: c.train_args("--config", yaml_file(c, "opt: 3\n")), 2,
         r"c.yaml: opt must be a mapping"),
    Case("yaml-list-for-text", lambda c: c.train_args("--config", yaml_file(c, "out: [a, b]\n")), 2,
         r"c.yaml: out must be a string or none, got \['a', 'b'\]"),
    # Output paths: one line for every OS error, in every command.
    Case("out-is-a-file", lambda c: c.train_args("--out", a_file(c)), 2, r"file.* not a folder",
         unchanged="file"),
    Case("out-under-a-file", lambda c: c.train_args("--out", a_file(c) / "run"), 2, r"Not a directory"),
    Case("out-in-read-only-folder", lambda c: c.train_args("--out", c.read_only(c.tmp / "ro") / "run"), 2,
         r"Permission denied: .*ro/run"),
    Case("config-is-a-folder", lambda c: c.train_args("--config", c.tmp), 2, r"Is a directory"),
    Case("cache-dir-under-a-file", lambda c: c.train_args("--cache-dir", a_file(c) / "cache"), 2,
         r"Not a directory"),
    Case("eval-plot-under-a-file", _eval_plot_under_file, 2, r"Not a directory: .*file"),
    Case("eval-unknown-tta", lambda c: ["eval", c.digits_run(), "--cache-dir", c.cache, "--tta", "crop"], 2,
         r"tta='crop' is not allowed; choose none or flip"),
    Case("compare-plot-under-a-file", lambda c: ["compare", "resnet20", "--plot", a_file(c) / "x.png"], 2,
         r"(Not a directory|File exists): .*file"),
    # Found before the run folder is created.
    Case("input-too-small", lambda c: ["train", "googlenet", "--data", "digits", "--image-size", 8,
                                       "--cache-dir", c.cache, "--device", "cpu", "--out", c.tmp / "o"], 2,
         r"input 1x8x8 is too small: the output of .* collapses to zero size", absent="o"),
    Case("diverged-before-any-checkpoint", lambda c: c.train_args("--lr", "1e30", "--iters", 6,
                                                                  "--out", c.tmp / "o"), 2,
         r"loss became .* no checkpoint"),
    # Ctrl-C.
    Case("ctrl-c-importing-a-command", lambda c: ["list"], 130, r"^cnnzoo: interrupted$",
         launch=subprocess_with(_INTERRUPT_IMPORT.format(module="cnnzoo.commands.train"))),
    Case("ctrl-c-importing-torch", lambda c: ["summary", "resnet20"], 130, r"^cnnzoo summary: interrupted$",
         launch=subprocess_with(_INTERRUPT_IMPORT.format(module="torch"))),
    Case("second-ctrl-c-during-the-save", lambda c: c.train_args("--iters", 50, "--out", c.tmp / "o"), 130,
         r"interrupted again while saving: .*last.pt was not written",
         launch=subprocess_with(_INTERRUPT_SAVE)),
]


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    from cnnzoo.train import resolve_config, train

    cache = str(tmp_path_factory.mktemp("cache"))
    run = tmp_path_factory.mktemp("runs") / "digits"
    train(resolve_config({"model": "cifar_resnet", "model_opts": dict(TINY), "data": "digits",
                          "image_size": 16, "subset": 256, "val_size": 32, "cache_dir": cache,
                          "out": str(run), "iters": 2, "batch_size": 32, "device": "cpu"}))
    return {"cache": cache, "digits_run": run}


def _snapshot(path: Path) -> dict:
    if path.is_file():
        return {".": path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() if p.is_file() else None
            for p in sorted(path.rglob("*"))}


def _in_process(args: list, capsys) -> tuple[int, str, str]:
    from cnnzoo.cli import main

    try:
        rc = main([str(a) for a in args])
    except SystemExit as e:  # argparse
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case, tmp_path, shared, monkeypatch, capsys):
    ctx = Ctx(tmp_path, shared, monkeypatch)
    args = [str(a) for a in case.args(ctx)]
    before = _snapshot(tmp_path / case.unchanged) if case.unchanged else None
    try:
        rc, out, err = case.launch(args) if case.launch else _in_process(args, capsys)
    finally:
        for f in ctx.held:
            f.close()
    assert rc == case.status, f"exit status {rc}, expected {case.status}; stderr:\n{err[-3000:]}"
    if case.status == 0:
        assert re.search(case.phrase, out + err), out + err
    else:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and re.search(case.phrase, lines[0]), f"stderr:\n{err[-3000:]}"
    if before is not None:
        assert _snapshot(tmp_path / case.unchanged) == before, f"{case.unchanged} was changed"
    if case.absent:
        assert not (tmp_path / case.absent).exists(), f"{case.absent} was created"


# --------------------------------------------------------------------------------------------
# The Python API: wrong types and values say what was expected


def _profile_a_name():
    from cnnzoo.analysis import profile

    return profile("resnet20", (3, 32, 32))


def _latency_of_a_name():
    from cnnzoo.analysis import measure_latency

    return measure_latency("resnet20", (3, 32, 32))


def _load_a_list():
    import cnnzoo
    from cnnzoo.interop import load_external

    return load_external(cnnzoo.create_model("resnet18"), [1, 2], "torchvision")


def _config_of_wrong_type():
    from cnnzoo.train import TrainConfig, train

    return train(TrainConfig(model="resnet20", lr="0.1", epochs=1))


def _create(*args, **kw):
    import cnnzoo

    return lambda: cnnzoo.create_model(*args, **kw)


API_CASES = [
    ("create_model-123", _create(123), TypeError, r"model name must be a string .*got 123"),
    ("create_model-num_classes-True", _create("resnet20", num_classes=True), ValueError,
     r"num_classes must be a non-negative int .*got True"),
    ("create_model-num_classes--1", _create("resnet20", num_classes=-1), ValueError,
     r"num_classes must be a non-negative int.*got -1"),
    ("create_model-in_chans-2.5", _create("resnet20", in_chans=2.5), ValueError,
     r"in_chans must be a positive int, got 2.5"),
    ("list_models-5", lambda: __import__("cnnzoo").list_models(5), TypeError,
     r"pattern must be a string .*got 5"),
    ("profile-a-name", _profile_a_name, TypeError, r"profile\(\) takes a model .*create_model\('resnet20'\)"),
    ("latency-of-a-name", _latency_of_a_name, TypeError, r"takes a model .*create_model\('resnet20'\)"),
    ("load_external-a-list", _load_a_list, TypeError, r"state_dict must be a mapping .*got a list"),
    ("train-config-text-for-number", _config_of_wrong_type, ValueError, r"lr must be a number, got '0.1'"),
]


@pytest.mark.parametrize("call, error, phrase", [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES])
def test_bad_api_call(call, error, phrase):
    with pytest.raises(error, match=phrase) as e:
        call()
    assert len(str(e.value).splitlines()) == 1
