"""Classify image files with a trained run: ``Predictor(run_dir).predict(paths, topk=5)``.

A run folder means its ``best.pt`` (else ``last.pt``); a ``.pt`` file written by the training
engine is used as is. The model is rebuilt from the checkpoint's own config, class names and
input size, and every image is prepared the way the run's evaluation split was:

* **channels**: a 1-channel run (the digits) sees the image in greyscale (Pillow's ``L``),
  a 3-channel run in RGB;
* **size**: resized to the run's input size exactly as its data were: the torch bilinear
  resize of :func:`cnnzoo.data.sources.resize_u8` for digits and CIFAR, Pillow's bilinear
  resize of :func:`~cnnzoo.data.sources.decode_image` for a cached image folder, and the
  evaluation transform of :class:`~cnnzoo.data.sources.StreamingFolder` (short side to
  ``S / 0.875``, centre crop, for ``S > 64``) for a streamed one. The aspect ratio is not kept
  except in that last case, as in training;
* **normalization**: ``(x / 255 - mean) / std`` with the run's per-channel statistics (those of
  its training split; ImageNet's for a streamed folder). A checkpoint that records ``mean`` and
  ``std`` gives them directly; otherwise the run's data are loaded again (from the uint8 cache)
  to recompute them, which needs the data to be there (always true of the embedded digits).

The digits were drawn light on a dark background (0 = background, 255 = ink) at 8x8 pixels: a
dark digit on white paper must be inverted first to look like them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data._common import DataError
from .data.loaders import _Normalize
from .data.sources import IMG_EXTENSIONS, StreamingFolder, decode_image, resize_u8
from .train.checkpoint import load_checkpoint, model_from_checkpoint
from .train.distributed import resolve_device
from .train.evaluate import AMP_DTYPES, check_tta, eval_logits, resolve_checkpoint

TENSOR_SOURCES = ("digits", "cifar10", "cifar100")  # decoded to arrays, resized with resize_u8


@dataclass
class Prediction:
    """The top-k classes of one image, most probable first; ``error`` says why there are none."""

    path: str
    top: list[tuple[str, float]] = field(default_factory=list)  # (class name, probability)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.error is not None:
            return {"image": self.path, "error": self.error}
        return {"image": self.path, "predictions": [{"class": c, "probability": p} for c, p in self.top]}


def find_images(inputs: Sequence[str | os.PathLike]) -> tuple[list[str], list[str]]:
    """Image files of ``inputs``, in order, and one message per input that gives none.

    A folder is walked recursively (sorted; hidden files and folders skipped) for files with
    an image extension (:data:`~cnnzoo.data.sources.IMG_EXTENSIONS`); other files in it are
    ignored. A file named explicitly is kept whatever its extension (if it is no image,
    decoding it says so). A missing path, or a folder without images, gives a message.
    """
    files, problems = [], []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = []
            for root, dirs, names in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                found += [os.path.join(root, n) for n in sorted(names)
                          if not n.startswith(".") and n.lower().endswith(IMG_EXTENSIONS)]
            if not found:
                problems.append(f"{p}: no image files ({', '.join(IMG_EXTENSIONS)}) in this folder")
            files += found
        elif p.is_file():
            files.append(str(p))
        else:
            problems.append(f"{p}: no such file or folder")
    return files, problems


class Predictor:
    """A trained run's model and the preprocessing of its evaluation data.

    Attributes: ``checkpoint`` (the file used), ``config`` (the run's), ``class_names``,
    ``input_size`` (C, H, W), ``mean``/``std``, ``streaming`` (the run streamed an image
    folder), ``device``, ``model`` (in eval mode) and ``tta``: ``"flip"`` averages each image's
    probabilities with its horizontal mirror's, as ``cnnzoo eval --tta flip`` does.
    """

    def __init__(self, target: str | os.PathLike, device: str = "auto", cache_dir: str | None = None,
                 tta: str = "none"):
        check_tta(tta)
        self.tta = tta
        self.checkpoint = resolve_checkpoint(target)
        ckpt = load_checkpoint(self.checkpoint)
        self.config: dict[str, Any] = ckpt["config"]
        self.class_names = list(ckpt["class_names"])
        self.input_size = tuple(ckpt["input_size"])
        self.mean, self.std, self.streaming = self._normalization(ckpt, cache_dir)
        self.device = resolve_device(device)
        self.model = model_from_checkpoint(ckpt, str(self.checkpoint)).to(self.device).eval()
        self.amp_dtype = AMP_DTYPES.get(self.config.get("amp", "none"))
        self._normalize = _Normalize(self.mean, self.std, self.device)  # the loaders' own
        self._transform = (StreamingFolder(None, [], self.input_size[1], train=False).transform
                           if self.streaming else None)

    def _normalization(self, ckpt: dict[str, Any], cache_dir: str | None
                       ) -> tuple[tuple[float, ...], tuple[float, ...], bool]:
        """The run's (mean, std, streaming): from the checkpoint, else from its data, loaded again."""
        if "mean" in ckpt and "std" in ckpt:
            return tuple(ckpt["mean"]), tuple(ckpt["std"]), bool(ckpt.get("streaming", False))
        from .data import load_data

        cfg = self.config
        try:
            bundle = load_data(cfg["data"], data_dir=cfg["data_dir"], download=False,
                               val_size=cfg["val_size"], seed=cfg["seed"], image_size=cfg["image_size"],
                               subset=cfg["subset"], cache_dir=cache_dir or cfg["cache_dir"])
        except DataError as e:
            raise ValueError(f"{self.checkpoint} does not record its input normalization, and its training "
                             f"data {cfg['data']} cannot be loaded to recompute it: {e}") from None
        if tuple(bundle.input_size) != self.input_size:
            raise ValueError(f"{self.checkpoint} was trained at input {self.input_size}, but {cfg['data']} "
                             f"now loads at {tuple(bundle.input_size)}: its normalization cannot be "
                             f"recomputed")
        return bundle.mean, bundle.std, bool(bundle.info["streaming"])

    def load_image(self, path: str | os.PathLike) -> torch.Tensor:
        """One image file as the run's evaluation saw its images: uint8 (C, H, W), not normalized.

        Raises :class:`~cnnzoo.data.DataError` (one line, naming the file) if it cannot be read.
        """
        from PIL import Image

        try:
            data = Path(path).read_bytes()
        except OSError as e:
            raise DataError(f"cannot read {path} ({e.strerror or type(e).__name__})") from None
        c, h, w = self.input_size
        if self._transform is not None:  # a streamed image folder: torchvision's evaluation transform
            return self._transform(Image.fromarray(decode_image(data, str(path), None)))
        if self.config["data"] not in TENSOR_SOURCES:  # a cached image folder
            return torch.from_numpy(decode_image(data, str(path), (h, w)).transpose(2, 0, 1).copy())
        rgb = decode_image(data, str(path), None)
        # Pillow's ITU-R 601 luma; a greyscale file comes back exactly as it was stored
        a = np.array(Image.fromarray(rgb).convert("L"))[None] if c == 1 else rgb.transpose(2, 0, 1).copy()
        return resize_u8(torch.from_numpy(a)[None], (h, w))[0]

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """Class probabilities (N, classes) of a uint8 (N, C, H, W) batch from :meth:`load_image`."""
        x = self._normalize(images.to(self.device), bool(self.config.get("channels_last")))
        return eval_logits(self.model, x, self.amp_dtype, self.tta).softmax(1).cpu()

    def iter_predict(self, paths: Sequence[str | os.PathLike], topk: int = 5,
                     batch_size: int = 64) -> Iterator[Prediction]:
        """:meth:`predict`, one :class:`Prediction` at a time, in the order of ``paths``."""
        k = self._check_topk(topk)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        for lo in range(0, len(paths), batch_size):
            chunk = [str(p) for p in paths[lo:lo + batch_size]]
            images, failed = {}, {}
            for p in chunk:
                try:
                    images[p] = self.load_image(p)
                except DataError as e:
                    failed[p] = str(e)
            top = {}
            if images:
                values, indices = self.probabilities(torch.stack(list(images.values()))).topk(k, 1)
                for p, vs, ids in zip(images, values.tolist(), indices.tolist(), strict=True):
                    top[p] = [(self.class_names[i], v) for v, i in zip(vs, ids, strict=True)]
            for p in chunk:
                yield Prediction(p, error=failed[p]) if p in failed else Prediction(p, top[p])

    def predict(self, paths: Sequence[str | os.PathLike], topk: int = 5, batch_size: int = 64
                ) -> list[Prediction]:
        """The ``topk`` most probable classes of each image file (``topk`` is capped at the number
        of classes). An unreadable file gives a :class:`Prediction` with ``error`` set and no
        classes; the others are classified all the same."""
        return list(self.iter_predict(paths, topk, batch_size))

    def _check_topk(self, topk: int) -> int:
        if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1:
            raise ValueError(f"topk must be an integer >= 1, got {topk!r}")
        return min(topk, len(self.class_names))


def predict(target: str | os.PathLike, images: Sequence[str | os.PathLike], topk: int = 5,
            device: str = "auto", tta: str = "none") -> list[Prediction]:
    """``Predictor(target, device, tta=tta).predict(find_images(images)[0], topk)``: the top-k
    classes of every image file of ``images`` (files, or folders walked recursively)."""
    return Predictor(target, device, tta=tta).predict(find_images(images)[0], topk)


__all__ = ["Prediction", "Predictor", "find_images", "predict"]
