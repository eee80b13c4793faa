"""A run folder belongs to one run, and to one process at a time.

Two trainings started on one folder at once: exactly one finishes, and what it wrote is its own.
A process killed with SIGKILL leaves its lock file and half-written temporaries, neither of which
blocks or survives the resume. Tiny CIFAR ResNets on the embedded digits keep each test fast.
(Refusals, one line each, are rows of tests/test_bad_inputs.py.)
"""

from __future__ import annotations

import csv
import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cnnzoo.train import load_checkpoint, resolve_config, train
from cnnzoo.train.checkpoint import LOCK_FILE

ROOT = Path(__file__).resolve().parents[1]
TINY = {"depth": 8, "widths": (8, 16, 32), "stem_width": 8}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


def cli_args(out, cache_dir, *extra) -> list[str]:
    args = ["train", "cifar_resnet", "--data", "digits", "--image-size", "16", "--subset", "256",
            "--val-size", "32", "--cache-dir", cache_dir, "--batch-size", "32", "--device", "cpu",
            "--recipe", "resnet-cifar", "--out", str(out), *map(str, extra)]
    for k, v in TINY.items():
        args += ["--opt", f"{k}={v}".replace(" ", "")]
    return args


def start(args, env=None) -> subprocess.Popen:
    """``python -m cnnzoo ARGS`` in the background, one thread (the machine is shared)."""
    return subprocess.Popen([sys.executable, "-m", "cnnzoo", *args], cwd=ROOT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def tiny(out, cache_dir, **kw):
    return resolve_config({"model": "cifar_resnet", "model_opts": dict(TINY), "data": "digits",
                           "image_size": 16, "subset": 256, "val_size": 32, "cache_dir": cache_dir,
                           "out": str(out), "batch_size": 32, "device": "cpu", "recipe": "resnet-cifar",
                           **kw})


def test_two_trainings_on_one_folder_one_finishes_intact(tmp_path, cache_dir, capsys):
    out = tmp_path / "run"
    train(tiny(tmp_path / "warm", cache_dir, iters=1))  # the data cache exists: both start as fast
    # Different seeds, so the folder's content tells whose it is.
    procs = {seed: start(cli_args(out, cache_dir, "--iters", 20, "--checkpoint-every", 5, "--seed", seed))
             for seed in (1, 2)}
    results = {seed: (p.wait(timeout=300), *p.communicate()) for seed, p in procs.items()}
    codes = sorted(rc for rc, _, _ in results.values())
    assert codes == [0, 2], {s: (rc, err[-2000:]) for s, (rc, _, err) in results.items()}
    winner = next(s for s, (rc, _, _) in results.items() if rc == 0)
    loser_err = next(err for rc, _, err in results.values() if rc == 2)
    assert len(loser_err.strip().splitlines()) == 1
    assert "another process" in loser_err or "already holds a run" in loser_err, loser_err

    res = json.loads((out / "results.json").read_text())
    assert res["seed"] == res["config"]["seed"] == winner and res["iters"] == 20
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["config"]["seed"] == winner and ckpt["step"] == 20
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == res["epochs"] and [int(r["epoch"]) for r in rows] == list(range(1, len(rows) + 1))
    assert [int(r["step"]) for r in rows] == [int(h["step"]) for h in ckpt["history"]]
    # and the weights left in the folder are the ones that scored the reported test accuracy
    from cnnzoo.cli import main

    capsys.readouterr()
    assert main(["eval", str(out), "--format", "json", "--cache-dir", cache_dir]) == 0
    assert json.loads(capsys.readouterr().out)["top1"] == res["test_top1"]


def test_a_killed_run_leaves_nothing_that_blocks_its_resume(tmp_path, cache_dir):
    out = tmp_path / "run"
    p = start(cli_args(out, cache_dir, "--iters", 12, "--checkpoint-every", 3),
              env={"CNNZOO_KILL_AT_STEP": "5"})
    p.communicate(timeout=300)
    assert p.returncode == -9  # SIGKILL
    assert load_checkpoint(out / "last.pt")["step"] == 3
    assert (out / LOCK_FILE).read_text().strip() == str(p.pid)  # the lock file stays; the lock does not
    stale = [out / ".last.pt.k1ll3d_x.tmp", out / ".results.json.abcd1234.tmp"]  # writes cut short
    for t in stale:
        t.write_bytes(b"half a file")
    (out / "notes.txt").write_text("kept\n")  # anything else is the user's

    res = train(resume=out)
    assert res["iters"] == 12 and load_checkpoint(out / "last.pt")["step"] == 12
    assert not any(t.exists() for t in stale)
    assert (out / "notes.txt").read_text() == "kept\n"


def test_the_lock_is_held_while_training_and_released_after(tmp_path, cache_dir):
    out = tmp_path / "run"
    p = start(cli_args(out, cache_dir, "--iters", 400, "--checkpoint-every", 2))
    deadline = time.time() + 120
    while not (out / "last.pt").exists() and p.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    try:
        with open(out / LOCK_FILE) as f, pytest.raises(BlockingIOError):
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert (out / LOCK_FILE).read_text().strip() == str(p.pid)
    finally:
        p.kill()
        p.communicate()
    # In-process: the lock ends with the run, so the next call can take it.
    res = train(tiny(tmp_path / "two", cache_dir, iters=2))
    with open(tmp_path / "two" / LOCK_FILE) as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises if the run still held it
    assert res["iters"] == 2


def test_a_new_run_may_use_an_empty_folder_and_records_its_data(tmp_path, cache_dir):
    out = tmp_path / "empty"
    out.mkdir()
    train(tiny(out, cache_dir, iters=2))
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["data_sizes"] == {"train": 224, "val": 32, "test": 256}
    assert load_checkpoint(out / "best.pt")["data_sizes"] == ckpt["data_sizes"]
    # resuming on the same data is not a change
    assert train(resume=out)["iters"] == 2


def test_under_torchrun_a_locked_folder_stops_every_rank(tmp_path, cache_dir):
    out = tmp_path / "run"
    train(tiny(out, cache_dir, iters=2))
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    with open(out / LOCK_FILE, "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        r = subprocess.run([*torchrun, "-m", "cnnzoo", "train", "--resume", str(out)], cwd=ROOT,
                           env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                           timeout=120)  # a hang (a rank waiting for rank 0) would time out
    assert r.returncode != 0
    # rank 0 tried the lock; rank 1 was told, and both stopped with the same one line
    assert r.stderr.count("another process (pid") == 2, r.stderr[-3000:]
