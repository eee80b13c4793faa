"""``cnnzoo predict`` and :mod:`cnnzoo.predict`: images prepared as the run's evaluation data were.

A tiny CIFAR ResNet (depth 8, widths 8/16/32, batch norm) is trained for a few steps on the
embedded digits at 16x16, and on a small generated RGB image folder. The central checks compare
an image file's preparation and probabilities with those of the same image in the run's own
evaluation split, so they hold whatever the (short) training achieved.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnzoo.data import load_data
from cnnzoo.data.sources import IMG_EXTENSIONS
from cnnzoo.predict import Predictor, find_images
from cnnzoo.train import train

from .helpers import tiny_config


def run(out, cache_dir, **kw):
    train(tiny_config(out, cache_dir, **{"iters": 4, **kw}))
    return out


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory, cache_dir):
    return run(tmp_path_factory.mktemp("runs") / "digits", cache_dir)


@pytest.fixture(scope="module")
def digit_pngs(tmp_path_factory, cache_dir):
    """The first 24 test digits as the 8x8 greyscale PNGs they were, in nested folders, with labels."""
    folder = tmp_path_factory.mktemp("digits")
    x, y = load_data("digits", image_size=8, cache_dir=cache_dir)._tensors["test"]
    paths = []
    for i in range(24):
        p = folder / ("odd" if i % 2 else "") / f"{i:02d}.png"
        p.parent.mkdir(exist_ok=True)
        Image.fromarray(x[i, 0].numpy()).save(p)  # 2-D uint8: mode L
        paths.append(p)
    return paths, y[:24]


def main(capsys, *args):
    """``cnnzoo ARGS`` in this process: (exit status, stdout, stderr)."""
    from cnnzoo.cli import main as cli_main

    rc = cli_main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


# --------------------------------------------------------------------------------------------
# The library


def test_images_are_prepared_and_classified_as_the_runs_evaluation(digits_run, digit_pngs, cache_dir):
    paths, labels = digit_pngs
    pred = Predictor(digits_run, device="cpu")
    assert pred.checkpoint == digits_run / "best.pt" and pred.input_size == (1, 16, 16)
    cfg = pred.config
    bundle = load_data("digits", val_size=cfg["val_size"], seed=cfg["seed"], image_size=16,
                       subset=cfg["subset"], cache_dir=cache_dir)
    assert (pred.mean, pred.std) == (bundle.mean, bundle.std)
    x, y = next(iter(bundle.loader("test", 24, train=False)))
    assert torch.equal(y, labels)
    # the 8x8 file, upscaled as the digits were: the very uint8 image of the test split
    mine = torch.stack([pred.load_image(p) for p in paths])
    assert torch.equal(mine, bundle._tensors["test"][0][:24])
    with torch.no_grad():
        ref = pred.model(x).softmax(1)
    # the same batch through the same model: equal but for float32 rounding of the normalization
    probs = pred.probabilities(mine)
    assert torch.allclose(probs, ref, rtol=0, atol=1e-5)
    top = pred.predict(paths, topk=1)
    assert [t.top[0][0] for t in top] == [pred.class_names[i] for i in ref.argmax(1).tolist()]


def test_tta_flip_averages_the_image_and_its_mirror(digits_run, digit_pngs):
    paths, _ = digit_pngs
    plain, flip = Predictor(digits_run, device="cpu"), Predictor(digits_run, device="cpu", tta="flip")
    images = torch.stack([plain.load_image(p) for p in paths])
    mean = (plain.probabilities(images) + plain.probabilities(images.flip(-1))) / 2
    assert not torch.allclose(mean, plain.probabilities(images), atol=1e-4)  # the mirror counts
    torch.testing.assert_close(flip.probabilities(images), mean)
    top = flip.predict(paths, topk=1)
    assert [t.top[0][0] for t in top] == [flip.class_names[i] for i in mean.argmax(1).tolist()]
    with pytest.raises(ValueError, match="tta='crop' is not allowed"):
        Predictor(digits_run, device="cpu", tta="crop")


def test_topk_entries_are_run_classes_in_descending_probability(digits_run, digit_pngs):
    paths, _ = digit_pngs
    pred = Predictor(digits_run, device="cpu")
    for p in pred.predict(paths[:5], topk=3):
        assert p.error is None and len(p.top) == 3
        names, probs = zip(*p.top, strict=True)
        assert set(names) <= set(pred.class_names) and len(set(names)) == 3
        assert list(probs) == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
    everything = pred.predict(paths[:1], topk=50)[0].top   # capped at the 10 classes: they sum to 1
    assert sorted(c for c, _ in everything) == sorted(pred.class_names)
    assert sum(q for _, q in everything) == pytest.approx(1, abs=1e-5)
    with pytest.raises(ValueError, match="topk must be an integer >= 1"):
        pred.predict(paths[:1], topk=0)


def test_colour_image_is_seen_in_greyscale_by_a_one_channel_run(digits_run, digit_pngs, tmp_path):
    paths, _ = digit_pngs
    grey = np.asarray(Image.open(paths[0]))
    Image.fromarray(np.stack([grey] * 3, -1)).save(tmp_path / "rgb.png")
    pred = Predictor(digits_run, device="cpu")
    assert torch.equal(pred.load_image(tmp_path / "rgb.png"), pred.load_image(paths[0]))


def test_checkpoint_file_and_last_pt_are_accepted(digits_run, digit_pngs, tmp_path):
    paths, _ = digit_pngs
    shutil.copy(digits_run / "last.pt", tmp_path / "last.pt")
    for target in (digits_run / "best.pt", tmp_path):
        pred = Predictor(target, device="cpu")
        assert pred.class_names == [str(i) for i in range(10)]
        assert pred.predict(paths[:1])[0].error is None
    assert Predictor(tmp_path, device="cpu").checkpoint == tmp_path / "last.pt"


def test_find_images_walks_folders_and_reports_what_gives_none(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / ".hidden").mkdir()
    for name in ("a/x.PNG", "a/b/y.jpg", "a/notes.txt", "a/.z.png", "a/.hidden/w.png", "empty.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "none").mkdir()
    files, problems = find_images([tmp_path / "a", tmp_path / "empty.txt", tmp_path / "none",
                                   tmp_path / "missing.png"])
    assert files == [str(tmp_path / "a" / "x.PNG"), str(tmp_path / "a" / "b" / "y.jpg"),
                     str(tmp_path / "empty.txt")]
    assert [m.split(": ", 1)[1] for m in problems] == [
        f"no image files ({', '.join(IMG_EXTENSIONS)}) in this folder", "no such file or folder"]


@pytest.fixture(scope="module")
def colour_folder(tmp_path_factory):
    """train/ and test/ of two classes, 8 and 3 RGB images each, of mixed non-square sizes."""
    root = tmp_path_factory.mktemp("colours")
    g = np.random.default_rng(0)
    for split, n in (("train", 8), ("test", 3)):
        for c, tint in (("red", (200, 40, 40)), ("blue", (40, 40, 200))):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                h, w = (96, 80) if i % 2 else (80, 100)
                a = np.clip(g.normal(tint, 40, (h, w, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(a).save(root / split / c / f"{i}.png")
    return root


@pytest.mark.parametrize("streamed", [False, True])
def test_image_folder_runs_resize_as_they_were_trained(colour_folder, tmp_path, cache_dir, monkeypatch,
                                                      streamed):
    """72 px: a cached folder is squashed to 72x72 (Pillow bilinear); a streamed one has its short
    side resized to 82 and the centre 72x72 cropped (torchvision), with ImageNet's mean/std."""
    import cnnzoo.data.bundle as B
    from cnnzoo.data.sources import StreamingFolder

    spec = f"imagefolder:{colour_folder}"
    if streamed:  # every folder is "too large to cache": the run and its reload both stream
        monkeypatch.setattr(B, "CACHE_MAX_BYTES", 0)
    out = run(tmp_path / "run", cache_dir, data=spec, image_size=72, subset=None, val_size=None,
              batch_size=4, iters=1)
    pred = Predictor(out, device="cpu")
    assert pred.streaming is streamed and pred.input_size == (3, 72, 72)
    bundle = load_data(spec, image_size=72, cache_dir=cache_dir, num_workers=0)
    assert (pred.mean, pred.std) == (bundle.mean, bundle.std)
    if streamed:
        index, members = bundle._streams["test"]
        ds = StreamingFolder(index, members, 72, train=False)
        ref = torch.stack([ds[(i, 0)][0] for i in range(len(members))])
        files = [index.where(m) for m, _ in members]
    else:
        ref = bundle._tensors["test"][0]
        files = [str(p) for c in ("blue", "red") for p in sorted((colour_folder / "test" / c).iterdir())]
    assert torch.equal(torch.stack([pred.load_image(f) for f in files]), ref)


# --------------------------------------------------------------------------------------------
# The command


def test_cli_folder_walk_with_a_corrupt_file_gives_one_line_and_classifies_the_rest(
        digits_run, digit_pngs, capsys):
    paths, _ = digit_pngs
    folder = paths[0].parent
    bad, readme = folder / "odd" / "broken.png", folder / "README.txt"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    readme.write_text("no image file name: ignored by the walk")
    try:
        rc, out, err = main(capsys, "predict", digits_run, folder, "--topk", "2", "--device", "cpu")
    finally:
        bad.unlink()
        readme.unlink()
    assert rc == 0
    assert err.splitlines() == [err.strip()] and "broken.png" in err and err.startswith("cnnzoo predict: ")
    rows = [ln for ln in out.splitlines() if ln.endswith("%)")]
    assert len(rows) == len(paths) and out.splitlines()[0].split() == ["image", "top-1", "top-2"]


def test_cli_json_and_topk_beyond_the_classes(digits_run, digit_pngs, capsys):
    paths, _ = digit_pngs
    rc, out, err = main(capsys, "predict", digits_run, *paths[:3], "--format", "json", "--topk", "12")
    assert rc == 0 and "showing all 10" in err
    doc = json.loads(out)
    assert (doc["model"], doc["classes"], doc["topk"], doc["errors"]) == ("cifar_resnet", 10, 10, [])
    assert [d["image"] for d in doc["predictions"]] == [str(p) for p in paths[:3]]
    for d in doc["predictions"]:
        probs = [e["probability"] for e in d["predictions"]]
        assert len(probs) == 10 and probs == sorted(probs, reverse=True)


def test_cli_tta_flip_gives_the_predictors_probabilities(digits_run, digit_pngs, capsys):
    paths = digit_pngs[0][:4]
    rc, out, err = main(capsys, "predict", digits_run, *paths, "--format", "json", "--topk", "2",
                        "--device", "cpu", "--tta", "flip")
    assert rc == 0, err
    want = Predictor(digits_run, device="cpu", tta="flip").predict(paths, topk=2)
    got = [[(e["class"], e["probability"]) for e in d["predictions"]] for d in json.loads(out)["predictions"]]
    assert got == [[tuple(entry) for entry in w.top] for w in want]  # the same computation, to the bit


def test_cli_no_image_classified_is_exit_2(digits_run, tmp_path, capsys):
    (tmp_path / "a.png").write_text("plain text")
    rc, out, err = main(capsys, "predict", digits_run, tmp_path / "a.png", tmp_path / "gone.png")
    lines = err.splitlines()
    assert rc == 2 and out == "" and len(lines) == 3
    assert lines[0] == f"cnnzoo predict: {tmp_path / 'gone.png'}: no such file or folder"
    assert lines[1].startswith(f"cnnzoo predict: cannot decode image {tmp_path / 'a.png'}")
    assert lines[2] == "cnnzoo predict: error: no image was classified"


@pytest.mark.parametrize("args, match", [
    (["--topk", "0"], "--topk must be at least 1"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
])
def test_cli_bad_flags_are_one_line_exit_2(digits_run, digit_pngs, capsys, args, match):
    rc, out, err = main(capsys, "predict", digits_run, digit_pngs[0][0], *args)
    assert rc == 2 and err.strip() == f"cnnzoo predict: error: {match}, got 0"


def test_cli_bad_target_is_one_line_exit_2(tmp_path, capsys):
    rc, _, err = main(capsys, "predict", tmp_path, tmp_path)
    assert rc == 2 and err.startswith("cnnzoo predict: error: ") and "no best.pt or last.pt" in err
    assert len(err.splitlines()) == 1


def test_predict_command_module_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, cnnzoo.commands.predict; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_predict_help_says_every_default_and_the_exit_status(capsys):
    with pytest.raises(SystemExit):
        main(capsys, "predict", "--help")
    flat = " ".join(capsys.readouterr().out.split())
    for text in ("(default 5)", "(default table)", "auto (default", "(default 64)",
                 "exit status: 0 if at least one image was classified; 2 if none was"):
        assert text in flat, text
