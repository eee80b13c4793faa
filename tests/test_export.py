"""Export: every family to ONNX (run in onnxruntime) and TorchScript (reloaded), matching PyTorch.

Models get random weights and BN statistics measured on random images (so activations, and the
logits the error is measured on, are of order 1); inputs are small (CIFAR models at 32x32,
ImageNet ones at 64x64, narrow or shallow where the family allows) to keep the exports fast.
The bound is :data:`cnnzoo.export.TOLERANCE` (1e-4, relative to the largest logit above 1).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

import cnnzoo
from cnnzoo.cli import main
from cnnzoo.export import TOLERANCE, export_model, load_source, run_exported
from cnnzoo.models.googlenet import INCEPTION_V1

onnx = pytest.importorskip("onnx")  # the dev extra installs the export extra: CI has both
ort = pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[1]
# Recent PyTorch deprecates torch.jit; this file still tests what TorchScript users load.
pytestmark = pytest.mark.filterwarnings(r"ignore:.*torch\.jit.*:FutureWarning")

# One model per family: name, options, input size. GoogLeNet with its auxiliary heads, which the
# eval-mode export leaves out, and one Inception module per stage and per auxiliary head (3a,
# 4a, 4d, 5a: the export time grows with the modules, all alike); VGG-11 narrow, its FC head
# pooling the 2x2 map up to 7x7; DenseNet with the ImageNet stem, its transitions, and two layers
# per block.
FAMILIES = {
    "resnet": ("se_resnet20", {}, (3, 32, 32)),
    "vgg": ("vgg11_bn", dict(width=0.125, fc_hidden=64), (3, 64, 64)),
    "googlenet": ("googlenet", dict(aux_logits=True, num_classes=7,
                                    rows=[r for r in INCEPTION_V1 if r.name in ("3a", "4a", "4d", "5a")]),
                  (3, 64, 64)),
    "densenet": ("densenet", dict(growth_rate=8, block_config=(2, 2, 2, 2)), (3, 64, 64)),
}


def test_every_registered_family_is_exported():
    assert {cnnzoo.get_model_meta(n).family for n in cnnzoo.list_models()} == set(FAMILIES)


def _model(family: str) -> tuple[nn.Module, tuple[int, int, int]]:
    """The family's test model in eval mode, BN statistics measured on random images."""
    name, opts, size = FAMILIES[family]
    model = cnnzoo.create_model(name, **opts)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the batches below
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(8, *size))
    return model.eval(), size


def _bound(expected: torch.Tensor) -> float:
    return TOLERANCE * max(1.0, expected.abs().max().item())


@pytest.mark.parametrize("family", FAMILIES)
def test_onnx_file_runs_in_onnxruntime_and_matches(family, tmp_path):
    model, size = _model(family)
    result = export_model(model, tmp_path / "m.onnx", "onnx", size, dynamic_batch=True)
    assert result.ok and result.check_batch == 3 and result.input_shape == (2, *size)
    # Run here too, on another batch size than the traced one and the library's check.
    x = torch.randn(5, *size)
    with torch.no_grad():
        expected = model(x)
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(["logits"], {"input": x.numpy()})[0])
    assert got.shape == expected.shape
    err = (got - expected).abs().max().item()
    assert err <= _bound(expected), (family, err)
    graph = onnx.load(str(result.path)).graph
    assert [i.name for i in graph.input] == ["input"] and [o.name for o in graph.output] == ["logits"]
    dims = graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == list(size)
    if family == "googlenet":  # the auxiliary heads' weights are not in the file
        stored = sum(int(np.prod(t.dims)) for t in graph.initializer)
        aux = sum(p.numel() for p in model.aux_heads.parameters())
        assert aux > 0 and stored <= sum(t.numel() for t in model.state_dict().values()) - aux


@pytest.mark.parametrize("family", FAMILIES)
def test_torchscript_file_reloads_and_matches_at_any_batch(family, tmp_path):
    model, size = _model(family)
    result = export_model(model, tmp_path / "m.torchscript", "torchscript", size)
    assert result.ok and result.input_shape == (1, *size)
    x = torch.randn(4, *size)
    with torch.no_grad():
        expected = model(x)
    loaded = torch.jit.load(str(result.path))
    with torch.no_grad():
        got = loaded(x)
    assert (got - expected).abs().max().item() <= _bound(expected)
    assert not hasattr(loaded, "aux_heads")  # frozen: only what the eval-mode forward uses


def test_a_static_batch_is_fixed_in_the_onnx_file(tmp_path):
    model = cnnzoo.create_model("cifar_resnet", depth=8).eval()
    result = export_model(model, tmp_path / "m.onnx", "onnx", (3, 32, 32), batch_size=2)
    assert result.ok and result.input_shape == (2, 3, 32, 32) and result.check_batch == 2
    dims = onnx.load(str(result.path)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [2, 3, 32, 32]
    with pytest.raises(Exception, match="(?i)dimension|shape"):
        run_exported(result.path, "onnx", torch.randn(3, 3, 32, 32))


@pytest.mark.parametrize("kwargs, message", [
    (dict(format="tflite"), "format='tflite' is not allowed; choose one of onnx, torchscript"),
    (dict(path="missing/m.onnx"), "the folder missing does not exist"),
    (dict(path="."), "is a folder"),
    (dict(input_size=(3, 32)), r"input_size must be three positive ints \(C, H, W\)"),
    (dict(batch_size=0), "batch_size must be a positive int"),
    (dict(input_size=(3, 1, 1), format="torchscript"), r"cannot run on an input of \(1, 3, 1, 1\)"),
])
def test_bad_arguments_are_value_errors(kwargs, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = dict(model=cnnzoo.create_model("vgg11", width=0.125, fc_hidden=8), path="m.out", format="onnx",
                input_size=(3, 32, 32))
    with pytest.raises(ValueError, match=message):
        export_model(**{**args, **kwargs})
    assert not list(tmp_path.iterdir())  # nothing written


# --------------------------------------------------------------------------------------------
# The command.


def test_export_a_model_name(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["export", "resnet20", "--format", "torchscript", "--opt", "num_classes=4"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("wrote resnet20.torchscript (torchscript,") and "input 1x3x32x32" in out
    assert "check: torch.jit.load vs PyTorch on 1 random image(s)" in out
    assert torch.jit.load("resnet20.torchscript")(torch.randn(2, 3, 32, 32)).shape == (2, 4)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from cnnzoo.train import resolve_config, train

    out = tmp_path_factory.mktemp("runs") / "tiny"
    train(resolve_config(dict(
        model="cifar_resnet", model_opts={"depth": 8, "widths": (8, 16, 32), "stem_width": 8}, data="digits",
        image_size=16, subset=256, val_size=64, cache_dir=str(tmp_path_factory.mktemp("cache")), out=str(out),
        iters=2, batch_size=64, device="cpu")))
    return out


def test_export_a_run_folder(tiny_run, capsys):
    from cnnzoo.predict import Predictor

    assert main(["export", str(tiny_run), "--dynamic-batch"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"wrote {tiny_run / 'best.onnx'} (onnx,") and "input Nx1x16x16" in out
    model = Predictor(tiny_run, device="cpu").model  # the run's model, as cnnzoo predict loads it
    x = torch.randn(3, 1, 16, 16)
    with torch.no_grad():
        expected = model(x)
    got = run_exported(tiny_run / "best.onnx", "onnx", x)
    assert got.shape == (3, 10) and (got - expected).abs().max().item() <= _bound(expected)
    source = load_source(tiny_run / "last.pt")
    assert source.name == "cifar_resnet" and source.input_size == (1, 16, 16)
    assert source.default_output("torchscript") == tiny_run / "last.torchscript"


def test_export_a_weights_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    model = cnnzoo.create_model("resnet20", attn="se", num_classes=5)
    cnnzoo.save_weights(model, "w.safetensors")
    assert main(["export", "w.safetensors", "--format", "torchscript"]) == 0
    assert capsys.readouterr().out.startswith("wrote w.torchscript (torchscript,")
    # Weights without cnnzoo's metadata: the model named, the file as pretrained=.
    torch.save(model.state_dict(), "plain.pth")
    assert main(["export", "resnet20", "--opt", "attn=se", "--opt", "pretrained=plain.pth",
                 "--format", "torchscript", "--out", "plain.torchscript"]) == 0
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model.eval()(x)
    for f in ("w.torchscript", "plain.torchscript"):
        got = run_exported(f, "torchscript", x)
        assert (got - expected).abs().max().item() <= _bound(expected), f


@pytest.mark.parametrize("argv, message", [
    (["resnet2"], "unknown model 'resnet2'; closest: "),
    (["runs/nothing"], "runs/nothing: no such file or folder"),
    (["resnet20", "--out", "missing/m.onnx"], "cannot write missing/m.onnx: the folder missing does not"),
    (["resnet20", "--format", "tflite"], "--format 'tflite' is not allowed; choose one of onnx, torchscript"),
    (["resnet20", "--opt", "colour=red"], "unknown option(s) colour"),
    (["resnet20", "--input-size", "3", "0", "32"], "input_size must be three positive ints"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["export", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"cnnzoo export: error: {message}") and err.count("\n") == 1
    assert not list(tmp_path.iterdir())


def test_a_run_is_not_overwritten_nor_given_options(tiny_run, capsys):
    best = (tiny_run / "best.pt").read_bytes()
    assert main(["export", str(tiny_run), "--out", str(tiny_run / "best.pt")]) == 2
    assert "is the file the weights come from" in capsys.readouterr().err
    assert main(["export", str(tiny_run), "--opt", "attn=se"]) == 2
    assert "model options (attn) apply to a model name" in capsys.readouterr().err
    assert (tiny_run / "best.pt").read_bytes() == best


def test_help_does_not_import_torch_and_formats_agree():
    from cnnzoo.commands.export import FORMATS
    from cnnzoo.export import FORMATS as LIBRARY_FORMATS

    assert FORMATS == LIBRARY_FORMATS
    code = ("import sys\nfrom cnnzoo.cli import main\ntry:\n    main(['export', '--help'])\n"
            "except SystemExit:\n    pass\nprint('torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       check=True)
    assert "MODEL|RUN_DIR|WEIGHTS" in r.stdout and r.stdout.splitlines()[-1] == "False"
