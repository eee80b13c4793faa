"""Export a model to ONNX or TorchScript, and check the file against PyTorch.

::

    source = load_source("resnet56")            # or a run folder, or a weights file
    result = export_model(source.model, "resnet56.onnx", "onnx", source.input_size, dynamic_batch=True)
    result.max_error, result.ok                 # |file - PyTorch| on a random batch, within bound

The model is exported in eval mode: BN uses its running statistics, dropout is off, and
GoogLeNet's auxiliary heads, which only run in training mode, are not in the file. The file
takes a float32 ``input`` of shape (N, C, H, W) and gives ``logits`` (N, classes); N is fixed
(``batch_size``) unless ``dynamic_batch``, H and W always are.

* **ONNX**: ``torch.onnx.export``'s torch.export-based exporter (needs the ``onnx`` and
  ``onnxscript`` packages: ``pip install 'cnnzoo[export]'``), one self-contained file. The check
  runs it in onnxruntime.
* **TorchScript**: ``torch.jit.trace`` of the eval-mode model, then ``torch.jit.freeze``, which
  drops what the traced forward does not use (GoogLeNet's auxiliary heads). The check reloads it
  with ``torch.jit.load``.

The check feeds the file and the model one random batch (of another size than the traced one
when the batch is dynamic) and reports the largest absolute difference of the logits.
"""

from __future__ import annotations

import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .train.checkpoint import atomic_write

FORMATS = ("onnx", "torchscript")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript"}  # default file name endings
# The check's bound on |file - PyTorch| (issue 12's 1e-4), relative to the largest logit (absolute
# below 1): onnxruntime's float32 kernels sum in another order than PyTorch's and differ in the
# last bits, growing with depth: measured up to 1.7e-5 on that scale (docs/export.md).
TOLERANCE = 1e-4
WEIGHT_SUFFIXES = (".pt", ".pth", ".th", ".safetensors")  # a source ending so is a file, not a name

__all__ = ["FORMATS", "TOLERANCE", "ExportResult", "ExportSource", "check_output_path", "export_model",
           "load_source", "run_exported"]


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_model` wrote, and how closely the file reproduces the model.

    ``max_error``: largest |file - PyTorch| over the logits of ``check_batch`` random images;
    ``max_logit``: the largest |logit| there (the error's scale); ``None`` without a check.
    """

    path: Path
    format: str
    input_shape: tuple[int, ...]  # the traced input (N, C, H, W)
    dynamic_batch: bool
    check_batch: int | None = None
    max_error: float | None = None
    max_logit: float | None = None

    @property
    def ok(self) -> bool | None:
        """Whether the file matches the model within :data:`TOLERANCE` (``None``: not checked)."""
        if self.max_error is None:
            return None
        return self.max_error <= TOLERANCE * max(1.0, self.max_logit)


# --------------------------------------------------------------------------------------------
# What to export: a registered model, a training run, or a weights file.


@dataclass(frozen=True)
class ExportSource:
    """A model to export: the model, its input size (C, H, W), its name, and the file its weights
    came from (a run's checkpoint, a weights file; ``None`` for a freshly built model)."""

    model: nn.Module
    input_size: tuple[int, int, int]
    name: str
    file: Path | None = None

    def default_output(self, format: str) -> Path:
        """``NAME.onnx`` (``.torchscript``) in the current folder, or beside the weights' file
        (``RUN_DIR/best.onnx``)."""
        if self.file is None:
            return Path(self.name + SUFFIXES[format])
        return self.file.with_suffix(SUFFIXES[format])


def load_source(source: str | os.PathLike, model_opts: dict[str, Any] | None = None) -> ExportSource:
    """The model named by ``source``, at its input size.

    ``source`` is a run folder (its ``best.pt``, else ``last.pt``) or a checkpoint written by
    ``cnnzoo train``: the model is rebuilt from the run's config and loaded with its weights, at
    the run's input size. Any other file is a weights file for ``cnnzoo.create_model(path)`` (one
    written by ``cnnzoo.save_weights``, which names its model and options). Otherwise ``source``
    is a registered model name, at its registered input size, randomly initialised unless
    ``model_opts`` gives ``pretrained=`` (weights of any layout :mod:`cnnzoo.weights` reads);
    ``model_opts`` are its options (only for a name: a run or weights file records its own).
    """
    import cnnzoo

    from .train.checkpoint import CheckpointError, load_checkpoint
    from .train.evaluate import resolve_checkpoint

    path = Path(source)
    if path.exists():
        if model_opts:
            raise ValueError(f"model options ({', '.join(model_opts)}) apply to a model name; {path} "
                             f"records its own")
        ckpt_path = resolve_checkpoint(path)
        try:
            return _from_checkpoint(load_checkpoint(ckpt_path), ckpt_path)
        except CheckpointError:
            if path.is_dir():
                raise
        model = cnnzoo.create_model(str(path))  # not a training checkpoint: cnnzoo.weights reads it
        return ExportSource(model, _registered_input_size(model), model.meta.name, path)
    if "/" in str(source) or os.sep in str(source) or path.suffix in WEIGHT_SUFFIXES:
        raise ValueError(f"{source}: no such file or folder")
    model = cnnzoo.create_model(str(source), **(model_opts or {}))
    return ExportSource(model, _registered_input_size(model), str(source))


def _registered_input_size(model: nn.Module) -> tuple[int, int, int]:
    """The model's input channels (its first conv's) at its registered size (else 224x224)."""
    c = next(m for m in model.modules() if isinstance(m, nn.Conv2d)).in_channels
    size = getattr(getattr(model, "meta", None), "input_size", (3, 224, 224))
    return (c, size[1], size[2])


def _from_checkpoint(ckpt: dict[str, Any], ckpt_path: Path) -> ExportSource:
    """A training run's model with its weights, rebuilt as ``cnnzoo eval`` rebuilds it."""
    import cnnzoo

    from .train.checkpoint import load_model_state

    cfg, input_size = ckpt["config"], tuple(ckpt["input_size"])
    model = cnnzoo.create_model(cfg["model"], num_classes=ckpt["num_classes"], in_chans=input_size[0],
                                **cfg["model_opts"])
    load_model_state(model, ckpt["model"], str(ckpt_path))
    return ExportSource(model, input_size, cfg["model"], ckpt_path)


# --------------------------------------------------------------------------------------------
# Writing the file.


def check_output_path(path: str | os.PathLike) -> Path:
    """``path`` as a file that can be written (its folder exists and is writable), else ``ValueError``."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder; give a file name")
    folder = path.parent
    if not folder.is_dir():
        raise ValueError(f"cannot write {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ValueError(f"cannot write {path}: permission denied")
    return path


def _check_input(input_size, batch_size: int) -> tuple[int, int, int, int]:
    if (not isinstance(input_size, (tuple, list)) or len(input_size) != 3
            or any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in input_size)):
        raise ValueError(f"input_size must be three positive ints (C, H, W), got {input_size!r}")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    return (batch_size, *input_size)


def _needs(*packages: str) -> None:
    """Raise a one-line ``ValueError`` naming the missing packages of the ``export`` extra."""
    import importlib.util

    missing = [p for p in packages if importlib.util.find_spec(p) is None]
    if missing:
        raise ValueError(f"ONNX export needs {', '.join(missing)}: pip install 'cnnzoo[export]'")


def _write_onnx(model: nn.Module, x: torch.Tensor, path: Path, dynamic_batch: bool) -> None:
    _needs("onnx", "onnxscript")
    shapes = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on its own internals
        program = torch.onnx.export(model, (x,), dynamo=True, input_names=["input"],
                                    output_names=["logits"], dynamic_shapes=shapes, verbose=False)
    # One self-contained file (protobuf's 2 GB limit is far above the largest cnnzoo model).
    atomic_write(path, lambda f: f.write(program.model_proto.SerializeToString()))


def _write_torchscript(model: nn.Module, x: torch.Tensor, path: Path) -> None:
    with _no_jit_deprecation(), torch.no_grad():
        # freeze: parameters become constants and what the forward does not use is dropped;
        # optimize_numerics=False keeps every op as traced (no conv-BN folding).
        traced = torch.jit.freeze(torch.jit.trace(model, x), optimize_numerics=False)
        atomic_write(path, lambda f: torch.jit.save(traced, f))


@contextmanager
def _no_jit_deprecation():
    """Recent PyTorch marks ``torch.jit`` deprecated in favour of ``torch.export``; TorchScript is
    still what C++ (libtorch) loads, so those warnings are not news to whoever asked for it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit")
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=r".*torch\.jit")
        yield


def run_exported(path: str | os.PathLike, format: str, x: torch.Tensor) -> torch.Tensor:
    """The logits the exported file gives for ``x`` (onnxruntime on the CPU, or ``torch.jit.load``)."""
    if format == "onnx":
        _needs("onnxruntime")
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return torch.from_numpy(session.run(None, {"input": x.numpy()})[0])
    with _no_jit_deprecation(), torch.no_grad():
        return torch.jit.load(str(path), map_location="cpu")(x)


def export_model(model: nn.Module, path: str | os.PathLike, format: str = "onnx",
                 input_size: tuple[int, int, int] = (3, 224, 224), dynamic_batch: bool = False,
                 batch_size: int = 1, check: bool = True, seed: int = 0) -> ExportResult:
    """Write ``model`` (in eval mode, on the CPU) to ``path`` as ``format`` and check the file.

    The file is traced at ``batch_size`` images of ``input_size``; with ``dynamic_batch`` any
    batch size works (the ONNX exporter needs an example batch of at least 2: ``batch_size`` 1
    is traced as 2). ``check`` runs the file on ``seed``'s random batch (of ``batch_size + 1``
    images when dynamic) and reports the largest difference from PyTorch's logits. Needs
    ``onnx``, ``onnxscript`` (and ``onnxruntime`` to check) for ONNX; bad arguments raise
    ``ValueError``. The model is left in eval mode on the CPU.
    """
    if format not in FORMATS:
        raise ValueError(f"format={format!r} is not allowed; choose one of {', '.join(FORMATS)}")
    if not isinstance(dynamic_batch, bool):
        raise ValueError(f"dynamic_batch must be True or False, got {dynamic_batch!r}")
    path = check_output_path(path)
    if dynamic_batch and format == "onnx":
        batch_size = max(batch_size, 2) if isinstance(batch_size, int) else batch_size
    shape = _check_input(input_size, batch_size)
    model = model.cpu().eval()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g)
    try:
        with torch.no_grad():
            model(x)
    except RuntimeError as e:  # e.g. an input too small for the model's pools
        raise ValueError(f"the model cannot run on an input of {tuple(shape)}: "
                         f"{str(e).strip().splitlines()[0]}") from None
    if format == "onnx":
        _write_onnx(model, x, path, dynamic_batch)
    else:
        _write_torchscript(model, x, path)
    result = ExportResult(path, format, shape, dynamic_batch)
    if not check:
        return result
    n = shape[0] + 1 if dynamic_batch else shape[0]
    x = torch.randn((n, *shape[1:]), generator=g)
    with torch.no_grad():
        expected = model(x)
    got = run_exported(path, format, x)
    return ExportResult(path, format, shape, dynamic_batch, check_batch=n,
                        max_error=(got - expected).abs().max().item(), max_logit=expected.abs().max().item())
