"""Training engine: config, artifacts, eval, aux losses, NaN, bad input, exact resume.

Everything runs on the embedded digits at 16x16 with a tiny CIFAR ResNet (depth 8, widths
8/16/32) so the whole file stays fast on two CPU cores. Multi-process and CIFAR tests live in
test_train_ddp.py and test_train_cifar.py.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from cnnzoo.train import (
    RECIPES,
    CheckpointError,
    Trainer,
    TrainingDiverged,
    compute_loss,
    load_checkpoint,
    lr_factor,
    resolve_config,
    train,
)
from cnnzoo.train.checkpoint import atomic_save

from .helpers import TINY, tiny_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


def main(capsys, *args):
    """``cnnzoo ARGS`` in this process: (exit status, stdout, stderr)."""
    from cnnzoo.cli import main as cli_main

    rc = cli_main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def cli(*args, env=None, timeout=300):
    """``python -m cnnzoo ARGS`` in a subprocess with one thread (the machine is shared)."""
    e = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "cnnzoo", *map(str, args)], cwd=ROOT, env=e,
                          capture_output=True, text=True, timeout=timeout)


# --------------------------------------------------------------------------------------------
# Config and recipes


def test_recipe_resnet_cifar_is_the_papers_schedule():
    cfg = resolve_config({"model": "resnet110", "recipe": "resnet-cifar"})
    assert (cfg.iters, cfg.epochs, cfg.batch_size, cfg.lr, cfg.momentum, cfg.weight_decay) == \
        (64_000, None, 128, 0.1, 0.9, 1e-4)
    lr = [cfg.lr * lr_factor(s, cfg.iters, cfg, depth=110) for s in (0, 399, 400, 31_999, 32_000, 48_000)]
    assert lr == pytest.approx([0.01, 0.01, 0.1, 0.1, 0.01, 0.001])
    # the 0.01 warm-up is only for 110 layers and deeper; depth is counted from the network
    assert cfg.lr * lr_factor(0, cfg.iters, cfg, depth=56) == pytest.approx(0.1)
    import cnnzoo
    from cnnzoo.train.engine import network_depth

    with torch.device("meta"):
        assert [network_depth(cnnzoo.create_model(n)) for n in ("resnet56", "resnet110")] == [56, 110]


def test_config_layers_flags_over_yaml_over_recipe(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("recipe: wrn-cifar\nlr: 0.05\nbatch_size: 32\nopt: {attn: se}\n")
    from cnnzoo.train import load_yaml

    cfg = resolve_config({"model": "resnet20", "lr": 0.02, "iters": 100}, load_yaml(str(y)))
    assert (cfg.recipe, cfg.lr, cfg.batch_size, cfg.weight_decay, cfg.nesterov) == \
        ("wrn-cifar", 0.02, 32, 5e-4, True)
    assert (cfg.iters, cfg.epochs) == (100, None)  # --iters replaces the recipe's 200 epochs
    assert cfg.model_opts == {"attn": "se"}


@pytest.mark.parametrize("flags, match", [
    ({"recipe": "nope"}, "resnet-cifar, densenet-cifar, wrn-cifar, vgg-cifar, fast"),
    ({"epochs": 2, "iters": 5}, "either epochs or iters"),
    ({"amp": "fp8"}, "amp='fp8' is not allowed"),
    ({"milestones": [0.8, 0.5]}, "milestones"),
    ({"bogus": 1}, "unknown key"),
])
def test_bad_config_raises(flags, match):
    with pytest.raises(ValueError, match=match):
        resolve_config({"model": "resnet20", **flags})


def test_every_recipe_resolves():
    for name in RECIPES:
        cfg = resolve_config({"model": "resnet20", "recipe": name})
        assert cfg.recipe == name and (cfg.epochs or cfg.iters)


# --------------------------------------------------------------------------------------------
# Aux losses


class AuxNet(nn.Module):
    """A stand-in for GoogLeNet: (logits, aux1, aux2) in train mode, logits in eval mode."""

    def __init__(self, in_chans=1, num_classes=10):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(in_chans, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                  nn.Flatten())
        self.fc = nn.Linear(8, num_classes)
        self.aux1 = nn.Linear(8, num_classes)
        self.aux2 = nn.Linear(8, num_classes)

    def forward(self, x):
        h = self.body(x)
        if self.training:
            return self.fc(h), self.aux1(h), self.aux2(h)
        return self.fc(h)


def test_compute_loss_adds_aux_losses_with_weight():
    torch.manual_seed(0)
    y = torch.randint(0, 10, (16,))
    main, a1, a2 = (torch.randn(16, 10) for _ in range(3))
    ce = nn.CrossEntropyLoss()
    expect = ce(main, y) + 0.3 * ce(a1, y) + 0.3 * ce(a2, y)
    assert torch.allclose(compute_loss((main, a1, a2), y, ce, 0.3), expect)
    assert torch.allclose(compute_loss(main, y, ce, 0.3), ce(main, y))


def test_engine_trains_aux_heads(tmp_path, cache_dir):
    cfg = tiny_config(tmp_path / "run", cache_dir, model="aux_standin", model_opts={}, iters=2, subset=256)
    torch.manual_seed(0)
    model = AuxNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = Trainer(cfg, model=model).run()
    # the aux heads only get gradient from the aux losses: they moved, so the engine used them
    for k in ("aux1.weight", "aux2.weight", "fc.weight"):
        assert not torch.equal(before[k], model.state_dict()[k]), k
    assert res["test_top1"] is not None


# --------------------------------------------------------------------------------------------
# One epoch: every artifact; eval reproduces it


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, cache_dir):
    out = tmp_path_factory.mktemp("runs") / "one"
    cfg = tiny_config(out, cache_dir, epochs=4, lr=0.2, subset=None, val_size=None)
    return out, train(cfg)


def test_short_run_writes_every_artifact(finished_run):
    out, res = finished_run
    for name in ("config.yaml", "metrics.csv", "last.pt", "best.pt", "curves.png", "results.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert any((out / "tb").rglob("events.out.tfevents.*"))
    saved = json.loads((out / "results.json").read_text())
    for key in ("val_top1", "test_top1", "test_top5", "params", "macs", "epochs", "seconds", "seed",
                "config", "versions"):
        assert key in saved, key
    import cnnzoo

    tiny = cnnzoo.create_model("cifar_resnet", num_classes=10, in_chans=1, **TINY)
    assert saved["params"] == sum(p.numel() for p in tiny.parameters())
    assert saved["macs"] > 0
    assert saved["epochs"] == 4 and saved["config"]["model_opts"]["depth"] == 8
    import yaml

    assert yaml.safe_load((out / "config.yaml").read_text()) == saved["config"]  # the resolved config
    rows = (out / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 5 and rows[0].startswith("epoch,step,lr")
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    # four epochs (80 steps) of a tiny ResNet on the digits beat chance (10%) by far
    assert saved["test_top1"] > 0.3


def test_eval_of_a_finished_run_reproduces_its_test_accuracy(finished_run, cache_dir, capsys):
    out, res = finished_run
    rc, stdout, err = main(capsys, "eval", out, "--format", "json", "--cache-dir", cache_dir)
    assert rc == 0, err
    ev = json.loads(stdout)
    assert ev["top1"] == res["test_top1"] and ev["top5"] == res["test_top5"]
    assert len(ev["per_class"]) == 10
    assert Path(ev["confusion_png"]).read_bytes()[:4] == b"\x89PNG"
    rc, stdout, err = main(capsys, "eval", out, "--split", "val", "--cache-dir", cache_dir)
    assert rc == 0, err
    assert "top-1" in stdout and "accuracy" in stdout


def test_checkpoint_for_other_options_gives_clear_error(finished_run, capsys):
    out, _ = finished_run
    rc, _, err = main(capsys, "train", "cifar_resnet", "--opt", "depth=14", "--resume", out)
    assert rc == 2
    assert "depth=8" in err and "depth=14" in err and len(err.strip().splitlines()) == 1
    # a checkpoint never runs code: a pickled object is refused, not executed
    bad = out.parent / "evil.pt"
    torch.save({"format": "cnnzoo-checkpoint/1", "x": nn.Linear(2, 2)}, bad)
    with pytest.raises(CheckpointError, match=r"refusing to load .*pickled Python objects \(torch\.nn"):
        load_checkpoint(bad)


# --------------------------------------------------------------------------------------------
# Bad input: one line, exit 2, nothing written


@pytest.mark.parametrize("args, match", [
    (["--amp", "fp16", "--device", "cpu"], "--amp fp16 needs a CUDA GPU"),
    (["--epochs", "1", "--iters", "3"], "either epochs or iters"),
    (["--recipe", "bogus"], "choose one of resnet-cifar"),
    (["--sync-bn", "--device", "cpu"], "--sync-bn"),
])
def test_cli_bad_input_is_one_line_exit_2(tmp_path, capsys, args, match):
    out = tmp_path / "run"
    rc, _, err = main(capsys, "train", "resnet20", "--data", "digits", "--out", out, *args)
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and match in lines[0], err
    assert not out.exists() or not any(out.iterdir())


# --------------------------------------------------------------------------------------------
# NaN loss: stop, keep the last good checkpoint


class NanAfter(nn.Module):
    """Produces NaN logits from the given training step on."""

    def __init__(self, at: int):
        super().__init__()
        self.at = at
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4, 10)
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def forward(self, x):
        if self.training:
            self.calls += 1
        y = self.fc(self.conv(x).mean((2, 3)))
        return y * float("nan") if self.training and self.calls > self.at else y


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, cache_dir):
    out = tmp_path / "run"
    cfg = tiny_config(out, cache_dir, model="nan_standin", model_opts={}, iters=8, checkpoint_every=2)
    with pytest.raises(TrainingDiverged, match="loss became nan at step 6"):
        Trainer(cfg, model=NanAfter(at=5)).run()
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["step"] == 4
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


# --------------------------------------------------------------------------------------------
# Atomic writes


def test_atomic_save_leaves_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "x.pt"
    atomic_save({"a": torch.ones(2)}, path)

    class Boom:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        atomic_save({"a": Boom()}, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]  # no temp file left behind


# --------------------------------------------------------------------------------------------
# SIGKILL mid-epoch, resume: bit-identical weights


def test_resume_after_sigkill_mid_epoch_is_bit_identical(tmp_path, cache_dir):
    # Dropout, stochastic depth, EMA and mixup make every RNG and every state matter.
    kw = dict(model_opts={**TINY, "drop_rate": 0.2, "drop_path_rate": 0.1}, subset=256, val_size=32,
              batch_size=32, iters=12, checkpoint_every=3, ema_decay=0.9, mixup=0.4)
    # 224 training images / 32 = 7 steps per epoch; the kill at step 10 is mid-epoch 2, after the
    # checkpoint of step 9, so the resumed run replays step 9 of epoch 2 from its saved position.
    ref = train(tiny_config(tmp_path / "ref", cache_dir, **kw))

    cfg = tiny_config(tmp_path / "killed", cache_dir, **kw)
    args = ["train", "cifar_resnet", "--data", "digits", "--image-size", 16, "--subset", 256,
            "--val-size", 32, "--cache-dir", cache_dir, "--out", tmp_path / "killed", "--batch-size", 32,
            "--iters", 12, "--checkpoint-every", 3, "--ema", 0.9, "--mixup", 0.4, "--lr", cfg.lr,
            "--device", "cpu", "--channels-last", "off"]
    for k, v in cfg.model_opts.items():
        args += ["--opt", f"{k}={v}".replace(" ", "")]
    r = cli(*args, env={"CNNZOO_KILL_AT_STEP": "10"})
    assert r.returncode == -9, r.stderr  # SIGKILL
    assert load_checkpoint(tmp_path / "killed" / "last.pt")["step"] == 9
    assert not (tmp_path / "killed" / "results.json").exists()

    resumed = train(resume=tmp_path / "killed")
    a = load_checkpoint(tmp_path / "ref" / "last.pt")
    b = load_checkpoint(tmp_path / "killed" / "last.pt")
    assert a["step"] == b["step"] == 12
    for key in ("model", "ema"):
        for k, v in a[key].items():
            assert torch.equal(v, b[key][k]), f"{key}.{k} differs after resume"
    assert [r["train_loss"] for r in a["history"]] == [r["train_loss"] for r in b["history"]]
    assert resumed["test_top1"] == ref["test_top1"]


# --------------------------------------------------------------------------------------------
# Ctrl-C: save and exit cleanly; the README's main command through python -m cnnzoo


def test_ctrl_c_saves_and_exits_cleanly(tmp_path, cache_dir):
    import signal
    import time

    out = tmp_path / "run"
    args = [sys.executable, "-m", "cnnzoo", "train", "cifar_resnet", "--data", "digits", "--image-size",
            "16", "--cache-dir", cache_dir, "--out", out, "--iters", "2000", "--batch-size", "32",
            "--device", "cpu"]
    for k, v in TINY.items():
        args += ["--opt", f"{k}={v}".replace(" ", "")]
    p = subprocess.Popen(list(map(str, args)), cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "last.pt").exists() and time.time() < deadline and p.poll() is None:
        time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    stdout, stderr = p.communicate(timeout=120)
    assert p.returncode == 130, stderr
    assert "saved" in stdout and "--resume" in stdout
    ckpt = load_checkpoint(out / "last.pt")
    assert 0 < ckpt["step"] < 2000 and not (out / "results.json").exists()


def _readme_main_command() -> list[str]:
    """The cnnzoo arguments of the README's main job (the line after '# main job:')."""
    lines = (ROOT / "README.md").read_text().splitlines()
    line = lines[next(i for i, s in enumerate(lines) if s.startswith("# main job:")) + 1]
    return shlex.split(line.rsplit(".venv/bin/cnnzoo ", 1)[1])


def test_readme_command_runs_via_python_m(tmp_path, cache_dir):
    # The README's main command, read from the README, cut to 3 steps.
    args = _readme_main_command()
    assert args[:4] == ["train", "resnet20", "--data", "digits"]
    r = cli(*args, "--iters", "3", "--cache-dir", cache_dir, "--out", tmp_path / "run")
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["model"] == "resnet20" and res["iters"] == 3 and res["test_top1"] is not None
    assert res["params"] == 269_434  # resnet20 with 1 input channel (digits)


@pytest.mark.parametrize("kw", [
    dict(amp="bf16", channels_last=True, clip_grad=1.0, cutmix=1.0, optimizer="adamw", lr=1e-3),
    dict(recipe="resnet-cifar", iters=3, mixup=0.2, cutmix=0.2, ema_decay=0.99, nesterov=True),
])
def test_option_paths_train(tmp_path, cache_dir, kw):
    kw = {"iters": 3, **kw}
    res = train(tiny_config(tmp_path / "run", cache_dir, subset=256, **kw))
    assert res["iters"] == 3 and res["test_top1"] is not None
    state = load_checkpoint(tmp_path / "run" / "last.pt")["model"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
