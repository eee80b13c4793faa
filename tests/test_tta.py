"""Test-time augmentation in evaluation: ``tta="flip"`` averages the probabilities of an image and
its mirror (cnnzoo.train.evaluate.eval_logits), in the API and in ``cnnzoo eval --tta``."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

from cnnzoo.cli import main
from cnnzoo.train.evaluate import eval_logits, evaluate


class LeftRight(nn.Module):
    """Logits from the mean of the left and of the right half of the image: a mirror swaps them."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 3)

    def forward(self, x):
        w = x.shape[-1] // 2
        return self.fc(torch.stack([x[..., :w].mean((1, 2, 3)), x[..., w:].mean((1, 2, 3))], 1))


def batches(x, y, size=4):
    return [(x[i:i + size], y[i:i + size]) for i in range(0, len(x), size)]


def test_flip_is_the_mean_probability_of_the_image_and_its_mirror():
    torch.manual_seed(0)
    model, x = LeftRight().eval(), torch.randn(6, 3, 4, 8)
    with torch.no_grad():
        p = model(x).softmax(1)
        p_mirror = model(x.flip(-1)).softmax(1)
        out = eval_logits(model, x, tta="flip")
    assert not torch.allclose(p, p_mirror, atol=1e-3)  # the mirror does change this model's answer
    torch.testing.assert_close(out.exp(), (p + p_mirror) / 2)
    torch.testing.assert_close(eval_logits(model, x), model(x).detach())  # none: the model's own logits


def test_flip_changes_nothing_on_mirror_symmetric_images_and_something_otherwise():
    torch.manual_seed(1)
    model = LeftRight()
    x, y = torch.randn(16, 3, 4, 8), torch.randint(0, 3, (16,))
    sym = (x + x.flip(-1)) / 2
    plain, flip = evaluate(model, batches(sym, y), 3), evaluate(model, batches(sym, y), 3, tta="flip")
    assert flip.top1 == plain.top1 and flip.n == plain.n == 16
    assert torch.equal(flip.confusion, plain.confusion)
    # log(mean(p, p)) = log p: only rounding (a few ulps of the loss) may differ
    assert flip.loss == pytest.approx(plain.loss, rel=8 * torch.finfo(torch.float32).eps)
    mirrored, unmirrored = evaluate(model, batches(x, y), 3, tta="flip"), evaluate(model, batches(x, y), 3)
    assert mirrored.loss != pytest.approx(unmirrored.loss)


def test_unknown_tta_is_refused():
    with pytest.raises(ValueError, match="tta='crop' is not allowed; choose none or flip"):
        eval_logits(LeftRight(), torch.zeros(1, 3, 4, 8), tta="crop")


def test_eval_tta_flip_reports_itself_and_keeps_the_plain_picture(tiny_run, capsys):
    from cnnzoo.train import evaluate_checkpoint

    out, cache = tiny_run
    assert main(["eval", str(out), "--format", "json", "--cache-dir", cache]) == 0
    plain = json.loads(capsys.readouterr().out)
    drawn = (out / "confusion_test.png").read_bytes()
    assert main(["eval", str(out), "--format", "json", "--cache-dir", cache, "--tta", "flip"]) == 0
    flip = json.loads(capsys.readouterr().out)
    assert (plain["tta"], flip["tta"]) == ("none", "flip")
    assert flip["confusion_png"] == str(out / "confusion_test_tta-flip.png")
    assert (out / "confusion_test_tta-flip.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "confusion_test.png").read_bytes() == drawn  # the plain evaluation's picture untouched
    assert flip["n"] == plain["n"] and flip["loss"] != plain["loss"]  # the digits are not mirror-symmetric
    api, _, _ = evaluate_checkpoint(out, cache_dir=cache, tta="flip")
    assert (api.top1, api.loss) == (flip["top1"], flip["loss"])

    assert main(["eval", str(out), "--cache-dir", cache, "--tta", "flip"]) == 0
    assert f"(test, tta flip, {plain['n']} images): top-1 {flip['top1']:.2%}" in capsys.readouterr().out
