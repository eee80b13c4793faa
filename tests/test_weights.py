"""Weights files: pretrained=, save_weights, class and channel adaptation, safety, bad input."""

from __future__ import annotations

import os
import pickle
import urllib.error
import warnings

import pytest
import torch
import torch.nn as nn

import cnnzoo
from cnnzoo.weights import adapt_input_conv, load_weights, read_state_dict, save_weights

from .helpers import randomize_


def _x(c=3, size=32, n=2):
    return torch.randn(n, c, size, size, generator=torch.Generator().manual_seed(3))


def _same(a: nn.Module, b: nn.Module, x: torch.Tensor) -> bool:
    a.eval(), b.eval()
    with torch.no_grad():
        return torch.equal(a(x), b(x))


@pytest.fixture(scope="module")
def r20():
    return randomize_(cnnzoo.create_model("resnet20")).eval()


# --------------------------------------------------------------------------------------------
# Local files.


@pytest.mark.parametrize("wrap,prefix", [(None, ""), ("state_dict", "module."), ("model", "")])
def test_pytorch_file_of_cnnzoo_weights(tmp_path, r20, wrap, prefix):
    state = {prefix + k: v for k, v in r20.state_dict().items()}
    torch.save({wrap: state, "epoch": 1} if wrap else state, tmp_path / "w.pth")
    model = cnnzoo.create_model("resnet20", pretrained=tmp_path / "w.pth")
    assert _same(model, r20, _x())
    assert model.model_opts == {}


def test_pretrained_state_dict_in_memory(tmp_path, r20):
    # e.g. a wrapper read_weights does not know: torch.load(f, weights_only=True)["net"]
    torch.save({"net": r20.state_dict(), "acc": 91.0}, tmp_path / "ckpt.pth")
    state = torch.load(tmp_path / "ckpt.pth", weights_only=True)["net"]
    assert _same(cnnzoo.create_model("resnet20", pretrained=state), r20, _x())
    with pytest.raises(ValueError, match="pretrained must be 'torchvision', 'timm', a path or a state dict"):
        cnnzoo.create_model("resnet20", pretrained=42)


def test_save_weights_then_create_model_from_the_file(tmp_path):
    ours = randomize_(cnnzoo.create_model("resnet20", attn="se", num_classes=7, in_chans=1)).eval()
    path = tmp_path / "se20.safetensors"
    cnnzoo.save_weights(ours, path)
    assert cnnzoo.save_weights is save_weights
    state, meta = read_state_dict(path)
    assert meta["model"] == "resnet20" and meta["format"] == "cnnzoo-weights/1"
    back = cnnzoo.create_model(str(path))
    assert back.meta.name == "resnet20" and back.num_classes == 7
    assert back.model_opts == {"attn": "se", "num_classes": 7, "in_chans": 1}
    assert _same(back, ours, _x(1))
    # the file also loads by name, and options given win over the recorded ones (here: 3 classes)
    with pytest.warns(UserWarning, match="re-initialised.*7 classes.*has 3"):
        three = cnnzoo.create_model("resnet20", pretrained=path, num_classes=3)
    assert three.head.fc.out_features == 3 and three.model_opts["attn"] == "se"


def test_save_weights_refuses_options_it_cannot_record(tmp_path):
    model = cnnzoo.create_model("resnet20", act_layer=nn.SiLU)
    with pytest.raises(ValueError, match="cannot record option act_layer"):
        save_weights(model, tmp_path / "w.safetensors")
    assert not (tmp_path / "w.safetensors").exists()


def test_create_model_from_a_file_without_metadata_says_how(tmp_path, r20):
    torch.save(r20.state_dict(), tmp_path / "plain.pth")
    with pytest.raises(ValueError, match=r"does not say which model.*pretrained="):
        cnnzoo.create_model(str(tmp_path / "plain.pth"))
    with pytest.raises(ValueError, match="source= names the layout"):
        cnnzoo.create_model("resnet20", source="akamaster")


def test_checkpoint_classes_and_channels_are_read_from_the_file(tmp_path):
    theirs = randomize_(cnnzoo.create_model("resnet20", num_classes=100, in_chans=1)).eval()
    torch.save(theirs.state_dict(), tmp_path / "w.pt")
    ours = cnnzoo.create_model("resnet20", pretrained=tmp_path / "w.pt")
    assert ours.model_opts == {"num_classes": 100, "in_chans": 1}
    assert _same(ours, theirs, _x(1))


# --------------------------------------------------------------------------------------------
# Another number of classes, other input channels.


def test_other_num_classes_reinitialises_the_classifier_with_a_warning(tmp_path, r20):
    torch.save(r20.state_dict(), tmp_path / "w.pt")
    with pytest.warns(UserWarning, match=r"classifier \(head.fc\) is re-initialised.*10 classes.*has 5"):
        model = cnnzoo.create_model("resnet20", pretrained=tmp_path / "w.pt", num_classes=5).eval()
    assert model.head.fc.weight.shape == (5, 64)
    with torch.no_grad():  # everything before the classifier is the checkpoint's
        torch.testing.assert_close(model.forward_features(_x()), r20.forward_features(_x()), rtol=0, atol=0)


def test_in_chans_adapts_the_first_conv(tmp_path, r20):
    torch.save(r20.state_dict(), tmp_path / "w.pt")
    x = _x(1)
    grey = cnnzoo.create_model("resnet20", pretrained=tmp_path / "w.pt", in_chans=1).eval()
    with torch.no_grad():  # summed weights: a grey image is R = G = B for the 3-channel model
        torch.testing.assert_close(grey(x), r20(x.repeat(1, 3, 1, 1)), rtol=1e-5, atol=1e-5)
    six = cnnzoo.create_model("resnet20", pretrained=tmp_path / "w.pt", in_chans=6).eval()
    with torch.no_grad():  # repeated and scaled by 3/6: the same response to a repeated image
        torch.testing.assert_close(six(x.repeat(1, 6, 1, 1)), r20(x.repeat(1, 3, 1, 1)), rtol=1e-5, atol=1e-5)
    w = torch.randn(4, 3, 3, 3)
    assert torch.equal(adapt_input_conv(w, 3), w)
    assert torch.allclose(adapt_input_conv(w, 1), w.sum(1, keepdim=True))
    assert torch.allclose(adapt_input_conv(w, 4), torch.cat([w, w[:, :1]], 1) * 0.75)


# --------------------------------------------------------------------------------------------
# torchvision / timm through their own loaders (no network here: the download is mocked).


def test_pretrained_torchvision_uses_its_url_and_loads_exactly(monkeypatch):
    import torchvision

    tv = randomize_(torchvision.models.resnet18()).eval()
    seen = {}

    def fake(url, **kw):
        seen.update(url=url, **kw)
        return tv.state_dict()

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fake)
    model = cnnzoo.create_model("resnet18", pretrained="torchvision")
    assert seen["url"] == torchvision.models.ResNet18_Weights.DEFAULT.url and seen["weights_only"] is True
    assert _same(model, tv, _x(size=64))


@pytest.mark.parametrize("library,name", [("torchvision", "resnet18"), ("torchvision", "googlenet_tv"),
                                          ("timm", "se_resnet18"), ("timm", "se_resnet50")])
def test_pretrained_offline_says_how_to_pass_a_local_file(monkeypatch, library, name):
    pytest.importorskip("timm")
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    def offline(*a, **k):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    def hub_offline(*a, **k):
        raise LocalEntryNotFoundError("cannot reach the Hub and the file is not in the local cache")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hub_offline)
    with pytest.raises(ValueError) as e:
        cnnzoo.create_model(name, pretrained=library)
    msg = str(e.value)
    assert "\n" not in msg and f"cannot download {library}'s" in msg
    assert "pretrained='path/to/file'" in msg and "https://" in msg


def test_pretrained_timm_names_another_timm_model(monkeypatch):
    timm = pytest.importorskip("timm")
    legacy = randomize_(timm.create_model("legacy_seresnet50")).eval()
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", lambda url, **kw: legacy.state_dict())
    model = cnnzoo.create_model("se_resnet50", pretrained="timm:legacy_seresnet50")
    assert model.model_opts == {"stem_pool": "ceil", "stride_on": "1x1"}
    with torch.no_grad():
        x = _x(size=64)
        assert (model.eval()(x) - legacy(x)).abs().max() <= 1e-5 * max(1.0, legacy(x).abs().max())
    with pytest.raises(ValueError, match="no timm weights known for plain20"):
        cnnzoo.create_model("plain20", pretrained="timm")
    with pytest.raises(ValueError, match="torchvision has no weights for resnet20"):
        cnnzoo.create_model("resnet20", pretrained="torchvision")


# --------------------------------------------------------------------------------------------
# Safety: no load path executes code.


class _Payload:
    """Unpickling this creates a file: the proof that code ran."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


def _loaders(model_name="resnet20"):
    return {
        "read_state_dict": lambda p: read_state_dict(p),
        "create_model(pretrained=)": lambda p: cnnzoo.create_model(model_name, pretrained=p),
        "create_model(path)": lambda p: cnnzoo.create_model(str(p)),
        "load_weights": lambda p: load_weights(cnnzoo.create_model(model_name), p),
    }


@pytest.mark.parametrize("fmt", ["zip", "legacy", "raw pickle"])
@pytest.mark.parametrize("loader", list(_loaders()))
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, fmt, loader):
    target = tmp_path / "pwned"
    evil = {"state_dict": {"conv.weight": torch.zeros(1)}, "x": _Payload(target)}
    path = tmp_path / "evil.pth"
    if fmt == "raw pickle":
        path.write_bytes(pickle.dumps(evil, protocol=2))
    else:
        torch.save(evil, path, _use_new_zipfile_serialization=fmt == "zip")
    assert not target.exists()
    with pytest.raises(ValueError) as e:
        _loaders()[loader](path)
    msg = str(e.value)
    assert not target.exists(), "unpickling ran the payload"
    assert "\n" not in msg and msg.startswith(f"refusing to load {path}")
    assert "weights_only" not in msg and "arbitrary code" not in msg
    if fmt == "zip":
        assert "io.open" in msg  # names what the file wanted to run


@pytest.mark.parametrize("command", ["eval", "predict", "train --init-from", "export --opt pretrained"])
def test_every_command_refuses_a_malicious_pickle(tmp_path, capsys, command):
    from PIL import Image

    from cnnzoo.cli import main

    target = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": "cnnzoo-checkpoint/1", "model": {"conv.weight": torch.zeros(1)},
                "x": _Payload(target)}, path)
    Image.new("L", (8, 8)).save(tmp_path / "img.png")
    argv = {
        "eval": ["eval", path],
        "predict": ["predict", path, tmp_path / "img.png"],
        "train --init-from": ["train", "resnet20", "--data", "digits", "--iters", "1", "--init-from", path,
                              "--out", tmp_path / "run", "--cache-dir", tmp_path / "cache"],
        "export --opt pretrained": ["export", "resnet20", "--opt", f"pretrained={path}",
                                    "--out", tmp_path / "m.onnx"],
    }[command]
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert rc == 2 and not target.exists(), err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and f"refusing to load {path}" in lines[0], err
    assert "weights_only" not in err and not (tmp_path / "run").exists()





def _one_line_error(match, fn, *args):
    with pytest.raises(ValueError, match=match) as e:
        fn(*args)
    assert "\n" not in str(e.value) and "Traceback" not in str(e.value)
    return str(e.value)


def test_missing_file(tmp_path):
    for loader in _loaders().values():
        _one_line_error("no weights file at .*nope.pth", loader, tmp_path / "nope.pth")


@pytest.mark.parametrize("kind", ["zip", "legacy", "safetensors"])
def test_truncated_file(tmp_path, r20, kind):
    path = tmp_path / ("w.safetensors" if kind == "safetensors" else "w.pth")
    if kind == "safetensors":
        save_weights(r20, path)
    else:
        torch.save(r20.state_dict(), path, _use_new_zipfile_serialization=kind == "zip")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    for loader in _loaders().values():
        _one_line_error("cannot read .*: truncated or corrupted", loader, path)


@pytest.mark.parametrize("content,found", [
    (b"", "an empty file"),
    (b"name,accuracy\nresnet20,0.91\n", "text"),
    (b"\x89PNG\r\n\x1a\n" + bytes(64), "unrecognised bytes"),
])
def test_wrong_format(tmp_path, content, found):
    path = tmp_path / "w.pth"
    path.write_bytes(content)
    for loader in _loaders().values():
        _one_line_error(f"is not a weights file: .* found {found}", loader, path)


def test_a_file_without_tensors(tmp_path):
    torch.save({"epoch": 3, "acc": 0.9}, tmp_path / "w.pth")
    _one_line_error("no state dict", cnnzoo.create_model, "resnet20", tmp_path / "w.pth")


def test_weights_for_another_architecture_name_the_first_differences(tmp_path):
    torch.save(cnnzoo.create_model("resnet32").state_dict(), tmp_path / "r32.pth")
    create = cnnzoo.create_model
    msg = _one_line_error(r"r32.pth \(cnnzoo layout\) do not fit resnet20: 72 unused "
                          r"\(first: stages.0.3.body", create, "resnet20", tmp_path / "r32.pth")
    assert "missing" not in msg
    torch.save(cnnzoo.create_model("cifar_vgg11").state_dict(), tmp_path / "vgg.pth")
    _one_line_error(r"do not fit resnet20: .*missing \(first: stem.conv.weight.*"
                    r"unused \(first: features.0.weight", create, "resnet20", tmp_path / "vgg.pth")
    torch.save(cnnzoo.create_model("resnet20", widths=(16, 32, 48)).state_dict(), tmp_path / "w.pth")
    _one_line_error(r"shape mismatch in \d+ \(first: stages.2.0.body.conv1.weight \(48, 32, 3, 3\) -> "
                    r"stages.2.0.body.conv1.weight \(64, 32, 3, 3\)", create, "resnet20", tmp_path / "w.pth")


def test_load_weights_accepts_a_state_dict_or_model_and_rejects_other_things(r20):
    model = load_weights(cnnzoo.create_model("resnet20"), r20)
    assert _same(model, r20, _x())
    _one_line_error("weights must be a path", load_weights, cnnzoo.create_model("resnet20"), 42)


def test_read_state_dict_of_a_run_folder_reads_its_best_weights(tmp_path, r20):
    (tmp_path / "run").mkdir()
    torch.save({"model": r20.state_dict(), "format": "cnnzoo-checkpoint/1"}, tmp_path / "run" / "best.pt")
    state, meta = read_state_dict(tmp_path / "run")
    assert meta == {} and state.keys() == r20.state_dict().keys()


def test_nothing_is_left_behind_by_a_refused_save(tmp_path):
    model = cnnzoo.create_model("resnet20", act_layer=nn.SiLU)
    with pytest.raises(ValueError):
        save_weights(model, tmp_path / "w.safetensors")
    assert os.listdir(tmp_path) == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        save_weights(cnnzoo.create_model("resnet20"), tmp_path / "w.safetensors")
    assert os.listdir(tmp_path) == ["w.safetensors"]


def test_eval_rebuilds_a_saved_weights_file(tmp_path, capsys):
    import json

    from cnnzoo.cli import main
    from cnnzoo.train import train

    from .helpers import tiny_config

    cache = str(tmp_path / "cache")
    train(tiny_config(tmp_path / "run", cache, iters=3, subset=None, image_size=None, val_size=0))
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "run"), "--format", "json"]) == 0
    ref = json.loads(capsys.readouterr().out)
    from cnnzoo.train.checkpoint import load_checkpoint, model_from_checkpoint

    model = model_from_checkpoint(load_checkpoint(tmp_path / "run" / "best.pt"), "best.pt")
    save_weights(model, tmp_path / "w.safetensors")
    assert main(["eval", str(tmp_path / "w.safetensors"), "--format", "json"]) == 2
    assert "give the data to evaluate on" in capsys.readouterr().err
    args = ["eval", str(tmp_path / "w.safetensors"), "--data", "digits", "--cache-dir", cache,
            "--format", "json", "--plot", str(tmp_path / "c.png")]
    assert main(args) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["model"] == "cifar_resnet" and got["top1"] == ref["top1"] and got["n"] == ref["n"]


@pytest.mark.parametrize("wrap", ["net", "params"])
def test_cifar_repo_wrappers_are_unwrapped(tmp_path, r20, wrap):
    state = r20.state_dict()
    if wrap == "params":  # szagoruyko keeps BN statistics apart
        stats = {k: v for k, v in state.items() if "running" in k or "num_batches" in k}
        obj = {"params": {k: v for k, v in state.items() if k not in stats}, "stats": stats, "epoch": 3}
    else:
        obj = {"net": state, "acc": 91.0, "epoch": 3}
    torch.save(obj, tmp_path / "ckpt.pth")
    assert _same(cnnzoo.create_model("resnet20", pretrained=tmp_path / "ckpt.pth"), r20, _x())
