"""A new user's first hour: starting from trained weights, extending a run, what a run says and
writes (header line, notes, file modes, folder names), and the bf16 warning.

Tiny CIFAR ResNet on 16x16 digits, as in test_train.py, so the file stays fast.
"""

from __future__ import annotations

import os
import stat

import pytest
import torch

import cnnzoo
from cnnzoo.train import CheckpointError, load_checkpoint, resolve_config, train
from cnnzoo.train import engine as E
from cnnzoo.train.checkpoint import load_init_weights

from .helpers import TINY
from .helpers import tiny_config as tiny


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, cache_dir):
    out = tmp_path_factory.mktemp("runs") / "one"
    old = os.umask(0o022)
    try:
        train(tiny(out, cache_dir, epochs=1))
    finally:
        os.umask(old)
    return out


def test_run_files_follow_the_umask(run_dir):
    for name in ("last.pt", "best.pt", "results.json", "config.yaml", "metrics.csv", "curves.png"):
        assert stat.S_IMODE((run_dir / name).stat().st_mode) == 0o644, name


def test_header_is_a_readable_line(run_dir, cache_dir, tmp_path, capsys):
    train(tiny(tmp_path / "run", cache_dir, iters=1))
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("training cifar_resnet (")
    assert "M parameters) on digits: " in first and "images of 1x16x16" in first
    assert "{" not in first and "batch 64" in first and "recipe fast" in first


def test_step_log_is_saved_and_plotted(run_dir):
    ckpt = load_checkpoint(run_dir / "last.pt")
    log = ckpt["step_log"]
    assert [r["step"] for r in log] == list(range(1, ckpt["step"] + 1))  # short run: every step
    assert all(r["lr"] > 0 and 0 <= r["top1"] <= 1 and r["loss"] > 0 for r in log)


def test_init_from_a_run_starts_from_its_weights(run_dir, cache_dir, tmp_path, capsys):
    # a learning rate of ~0 for one step: the new run's conv weights are the old run's best ones
    train(tiny(tmp_path / "ft", cache_dir, iters=1, lr=1e-12, init_from=str(run_dir)))
    out = capsys.readouterr().out
    assert f"starting from the weights in {run_dir / 'best.pt'}" in out
    src = load_checkpoint(run_dir / "best.pt")["model"]
    new = load_checkpoint(tmp_path / "ft" / "last.pt")["model"]
    assert load_checkpoint(tmp_path / "ft" / "last.pt")["config"]["init_from"] == str(run_dir)
    for k, v in src.items():
        if k.endswith("conv.weight") or k.startswith("head.fc"):
            torch.testing.assert_close(new[k], v, rtol=1e-6, atol=1e-9, msg=k)


def test_init_from_reinitialises_a_classifier_of_other_classes(run_dir):
    torch.manual_seed(1)
    model = cnnzoo.create_model("cifar_resnet", num_classes=3, in_chans=1, **TINY)
    fresh_fc = model.get_classifier().weight.detach().clone()
    notes = load_init_weights(model, run_dir)
    assert any("classifier (head.fc) is re-initialised: the weights are for 10 classes, this run has 3" in n
               for n in notes)
    src = load_checkpoint(run_dir / "best.pt")["model"]
    assert torch.equal(model.state_dict()["stem.conv.weight"], src["stem.conv.weight"])
    assert torch.equal(model.get_classifier().weight, fresh_fc)


def test_init_from_plain_state_dicts_and_bad_files(run_dir, tmp_path):
    src = load_checkpoint(run_dir / "best.pt")["model"]
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.items()}}, wrapped)
    model = cnnzoo.create_model("cifar_resnet", num_classes=10, in_chans=1, **TINY)
    load_init_weights(model, wrapped)
    assert torch.equal(model.state_dict()["stem.conv.weight"], src["stem.conv.weight"])
    other = cnnzoo.create_model("cifar_resnet", num_classes=10, in_chans=1, depth=14, widths=(8, 16, 32),
                                stem_width=8)
    with pytest.raises(CheckpointError, match="does not fit the model: .* missing"):
        load_init_weights(other, wrapped)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read weights"):
        load_init_weights(model, tmp_path / "junk.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="holds no state dict"):
        load_init_weights(model, tmp_path / "list.pt")


def test_resume_with_more_epochs_extends_a_finished_run(run_dir, tmp_path, capsys):
    import shutil

    run = tmp_path / "ext"
    shutil.copytree(run_dir, run)
    steps = load_checkpoint(run / "last.pt")["step"]
    with pytest.raises(ValueError, match="planned for 1 epochs; to extend it give more than that"):
        train(resume=run, epochs=1)
    res = train(resume=run, epochs=2)
    out = capsys.readouterr().out
    assert f"extending the run from {steps:,} to {2 * steps:,} steps" in out
    assert res["epochs"] == 2 and res["iters"] == 2 * steps and res["config"]["epochs"] == 2
    lrs = [r["lr"] for r in load_checkpoint(run / "last.pt")["step_log"]]
    # the linear schedule of the 1-epoch run ended at 0; the 2-epoch one continues from mid-way
    assert len(lrs) == 2 * steps and lrs[steps] > 0


def test_extending_needs_resume():
    with pytest.raises(ValueError, match="extend a resumed run"):
        train(resolve_config({"model": "resnet20"}), epochs=3)


def test_bf16_without_native_support_warns(monkeypatch, cache_dir, tmp_path, capsys):
    monkeypatch.setattr(E, "cpu_native_bf16", lambda: False)
    train(tiny(tmp_path / "bf", cache_dir, iters=1, amp="bf16"))
    assert "this CPU has no bf16 instructions" in capsys.readouterr().out
    monkeypatch.setattr(E, "cpu_native_bf16", lambda: True)
    train(tiny(tmp_path / "bf2", cache_dir, iters=1, amp="bf16"))
    assert "bf16 instructions" not in capsys.readouterr().out


@pytest.mark.parametrize("spec, label", [
    ("digits", "digits"), ("cifar10", "cifar10"),
    ("imagefolder:/data/sets/cifar10-jpeg75.zip", "cifar10-jpeg75"),
    ("imagefolder:../shared/data/flowers/", "flowers"),
    ("imagefolder:C:\\data\\my set", "C-data-my-set"),
])
def test_run_folder_names_are_short(spec, label):
    assert E.data_label(spec) == label


def test_default_out_never_reuses_a_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = resolve_config({"model": "resnet20", "data": "imagefolder:/x/cifar10-jpeg75.zip"})
    first = E.default_out(cfg)
    assert first.startswith(os.path.join("runs", "resnet20-cifar10-jpeg75-"))
    os.makedirs(first)
    second = E.default_out(cfg)
    assert second != first and (second == first + "-2" or not second.startswith(first))


def test_threads_flag_sets_torch_threads(cache_dir, tmp_path):
    before = torch.get_num_threads()
    try:
        res = train(tiny(tmp_path / "t", cache_dir, iters=1, threads=2))
        assert res["hardware"]["threads"] == 2
    finally:
        torch.set_num_threads(before)


# --------------------------------------------------------------------------------------------
# The default recipe learns at any length.


def test_default_recipe_learns_in_three_epochs_on_digits(tmp_path):
    # `cnnzoo train resnet20 --data digits --epochs 3`: 15.6% test top-1 (chance) before the
    # recipe kept 64 steps per epoch on small data and recomputed BN statistics (precise BN).
    res = train(resolve_config({"model": "resnet20", "data": "digits", "epochs": 3,
                                "cache_dir": str(tmp_path / "cache"), "out": str(tmp_path / "run")}))
    assert res["config"]["batch_size"] == 16 and res["test_top1"] > 0.85, res["test_top1"]
    assert all(r["val_loss"] < 3 for r in load_checkpoint(tmp_path / "run" / "last.pt")["history"])


def test_small_data_gets_a_smaller_batch_unless_one_is_given(cache_dir, tmp_path, capsys):
    flags = dict(model="cifar_resnet", model_opts=dict(TINY), data="digits", image_size=16, subset=512,
                 val_size=64, cache_dir=cache_dir, iters=1, device="cpu")
    res = train(resolve_config({**flags, "out": str(tmp_path / "a")}))
    # 448 training images: 128 -> 64 -> 32 -> 16 -> 8 (56 steps, the floor), lr 0.2 * sqrt(8/128)
    assert res["config"]["batch_size"] == 8 and res["config"]["lr"] == pytest.approx(0.05)
    assert "batch 8 and lr 0.05 instead of 128 and 0.2: 448 training images" in capsys.readouterr().out
    res = train(resolve_config({**flags, "out": str(tmp_path / "b"), "batch_size": 128}))
    assert res["config"]["batch_size"] == 128 and res["config"]["lr"] == 0.2
    assert "instead of" not in capsys.readouterr().out


def test_recompute_bn_stats_is_the_plain_average_over_batches():
    bn = torch.nn.BatchNorm2d(3, momentum=0.1)
    model = torch.nn.Sequential(bn, torch.nn.Dropout(0.5)).eval()
    xs = [torch.randn(4, 3, 5, 5) * (i + 1) + i for i in range(3)]
    assert E.recompute_bn_stats(model, iter(xs)) == 3
    means = torch.stack([x.mean((0, 2, 3)) for x in xs])
    varis = torch.stack([x.transpose(0, 1).reshape(3, -1).var(1) for x in xs])
    torch.testing.assert_close(bn.running_mean, means.mean(0))
    torch.testing.assert_close(bn.running_var, varis.mean(0))
    assert bn.momentum == 0.1 and not model.training and int(bn.num_batches_tracked) == 3
    assert E.recompute_bn_stats(torch.nn.Linear(2, 2), iter(xs)) == 0  # no BN: nothing to do


def test_best_epoch_breaks_a_top1_tie_by_validation_loss(monkeypatch, cache_dir, tmp_path):
    from cnnzoo.train.evaluate import EvalResult

    scores = iter([(0.5, 1.0), (0.8, 0.9), (0.8, 0.5), (0.8, 0.7)])  # (top-1, loss) per epoch

    def fake_val(self, split):
        top1, loss = next(scores)
        return EvalResult(loss=loss, top1=top1, top5=1.0, per_class=[top1] * 10,
                          confusion=torch.zeros(10, 10, dtype=torch.int64), n=100)

    monkeypatch.setattr(E.Trainer, "_evaluate", fake_val)
    res = train(tiny(tmp_path / "tie", cache_dir, epochs=4))
    assert res["best_epoch"] == 3 and res["val_top1"] == 0.8


def test_eval_fast_path_gives_the_same_accuracy(run_dir):
    from cnnzoo.train import evaluate_checkpoint

    plain, _, _ = evaluate_checkpoint(run_dir, cache_dir=None)
    fast, _, _ = evaluate_checkpoint(run_dir, fast=True)
    # for_inference equals the model to float32 rounding (tests/test_optimize.py); at most a
    # prediction whose two top logits are that close may flip
    assert abs(fast.top1 - plain.top1) * plain.n <= 1 and fast.n == plain.n


def test_compile_time_is_left_out_of_images_per_s(monkeypatch, cache_dir, tmp_path, capsys):
    import time as _time

    class SlowFirstCall(torch.nn.Module):  # stands in for torch.compile: the first call "compiles"
        def __init__(self, m):
            super().__init__()
            self.m, self.calls = m, 0

        def forward(self, x):
            self.calls += 1
            if self.calls == 1:
                _time.sleep(5)
            return self.m(x)

    monkeypatch.setattr(torch, "compile", SlowFirstCall)
    res = train(tiny(tmp_path / "c", cache_dir, epochs=1, compile=True))
    assert "torch.compile: the first step took 5." in capsys.readouterr().out
    row = load_checkpoint(tmp_path / "c" / "last.pt")["history"][0]
    # 448 images in 7 steps: with the 5 s inside, images/s could not exceed 448 / 5 = 90
    assert row["images_per_s"] > 448 / 5 and res["seconds"] > 5
