"""``load_data(spec)``: a dataset, split into train/val/test, ready to hand out batch loaders."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .._registry import IMAGENET_MEAN, IMAGENET_STD
from ._common import DataError, check_int, generator
from .cache import cached, cached_rows, default_cache_dir
from .loaders import PAD, StreamLoader, TensorLoader
from .sources import (
    Decoded,
    FolderIndex,
    StreamingFolder,
    cifar_fingerprint,
    decode_folder,
    digits_fingerprint,
    ensure_cifar,
    image_sizes,
    read_cifar,
    read_digits,
    scan_imagefolder,
    subset_indices,
)

log = logging.getLogger("cnnzoo.data")

SPECS = ("digits", "cifar10", "cifar100", "imagefolder:PATH")
SPLITS = ("train", "val", "test")
CIFAR_VAL = 5000  # held out of CIFAR's 50,000 training images, as in the ResNet paper
# An image folder whose decoded uint8 tensors would exceed this streams instead of being cached.
CACHE_MAX_BYTES = int(float(os.environ.get("CNNZOO_CACHE_MAX_GB", "4")) * 2**30)


def _val_count(val_size, n: int, default: int) -> int:
    if val_size is None:
        v = default
    elif isinstance(val_size, float) and not isinstance(val_size, bool):
        if not 0.0 <= val_size < 1.0:
            raise DataError(f"val_size as a fraction must be in [0, 1), got {val_size}")
        v = round(val_size * n)
    elif isinstance(val_size, int) and not isinstance(val_size, bool):
        v = val_size
    else:
        raise DataError(f"val_size must be an integer count, a fraction in [0, 1) or None, got {val_size!r}")
    if not 0 <= v < n:
        raise DataError(f"val_size {val_size} leaves no training images: the training pool has {n} "
                        f"images; use 0 <= val_size < {n}")
    return v


def split_train_val(n: int, v: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted (train, val) indices of a pool of ``n``: a function of ``(n, v, seed)`` only."""
    perm = torch.randperm(n, generator=generator("val-split", seed, n, v))
    return perm[v:].sort().values, perm[:v].sort().values


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and std of a uint8 (N, C, H, W) tensor, as fractions of 255.

    From a 256-bin histogram per channel: exact, and no float copy of the data.
    """
    if len(x) == 0:
        raise DataError("cannot compute normalization statistics of an empty training split")
    means, stds = [], []
    levels = torch.arange(256, dtype=torch.float64) / 255.0
    for c in range(x.shape[1]):
        hist = torch.bincount(x[:, c].reshape(-1), minlength=256).double()
        total = hist.sum()
        m = (hist * levels).sum() / total
        var = (hist * (levels - m) ** 2).sum() / total
        means.append(round(float(m), 6))
        stds.append(round(max(float(var.sqrt()), 1e-6), 6))
    return tuple(means), tuple(stds)


class DataBundle:
    """A dataset split into ``train``/``val``/``test``, handing out batch loaders.

    Attributes: ``num_classes``, ``class_names``, ``input_size`` (C, H, W), ``mean``/``std``
    (per channel, of the train split; ImageNet's for streamed folders), ``sizes`` (images per
    split), ``info`` (source, cache file, cache hit, streaming, seconds; for an image folder
    without ``image_size``, ``distinct_sizes`` and, when that is over one, ``size_note``: the
    line saying what everything was resized to. JSON-ready).
    """

    def __init__(self, spec: str, class_names: Sequence[str], input_size: tuple[int, int, int],
                 mean: Sequence[float], std: Sequence[float], info: dict, *,
                 tensors: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
                 streams: dict[str, tuple[FolderIndex, list[tuple[str, int]]]] | None = None,
                 num_workers: int = 0):
        self.spec = spec
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        self.input_size = tuple(input_size)
        self.mean, self.std = tuple(mean), tuple(std)
        self.info = info
        self._tensors, self._streams = tensors, streams
        self._num_workers = num_workers
        self._on_device: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}
        source = tensors if tensors is not None else streams
        self.sizes = {s: (len(source[s][1]) if s in source else 0) for s in SPLITS}

    def __repr__(self) -> str:
        c, h, w = self.input_size
        return (f"DataBundle({self.spec!r}: {self.sizes['train']} train / {self.sizes['val']} val / "
                f"{self.sizes['test']} test, {c}x{h}x{w}, {self.num_classes} classes)")

    def describe(self) -> str:
        """One line for logs: sizes, shape, classes, and where the data came from."""
        how = ("streamed" if self.info["streaming"] else
               f"cache {'hit' if self.info['cache_hit'] else 'built'} in {self.info['seconds']:.2f} s")
        return f"{self!r}"[len("DataBundle("):-1] + f" ({how})"

    def labels(self, split: str) -> torch.Tensor:
        """The int64 labels of ``split``, in loader order for ``train=False`` (CPU)."""
        self._check_split(split)
        if self._tensors is not None:
            return self._tensors[split][1] if split in self._tensors else torch.zeros(0, dtype=torch.int64)
        return torch.tensor([c for _, c in self._streams.get(split, (None, []))[1]], dtype=torch.int64)

    def _check_split(self, split: str) -> None:
        if split not in SPLITS:
            raise DataError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")

    def loader(self, split: str, batch_size: int, *, train: bool, device: torch.device | str = "cpu",
               seed: int = 0, epoch: int = 0, start_batch: int = 0, rank: int = 0, world_size: int = 1,
               channels_last: bool = False) -> TensorLoader | StreamLoader:
        """Batches ``(x, y)`` of ``split`` for this rank: float32 normalized and int64, on ``device``.

        ``train=True``: shuffled (the permutation is a function of ``(seed, epoch)``), augmented
        (random crop with 4-pixel padding, horizontal flip), last partial global batch dropped.
        ``train=False``: in order, no augmentation, last partial batch kept; a contiguous shard
        per rank when ``world_size > 1``. ``start_batch`` skips that many batches (resume).
        ``batch_size`` is per rank. See :mod:`cnnzoo.data.loaders` for the full contract.
        """
        self._check_split(split)
        device = torch.device(device)
        kw = dict(train=train, device=device, mean=self.mean, std=self.std, seed=seed, epoch=epoch,
                  start_batch=start_batch, rank=rank, world_size=world_size, channels_last=channels_last)
        if self._tensors is not None:
            store = lambda: self._device_tensors(split, device)  # noqa: E731
            return TensorLoader(store, self.sizes[split], batch_size, **kw)
        index, members = self._streams.get(split, (None, []))
        ds = StreamingFolder(index, members, self.input_size[1], train) if index is not None else []
        return StreamLoader(ds, batch_size, num_workers=self._num_workers, **kw)

    def _device_tensors(self, split: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if split not in self._tensors:
            c, h, w = self.input_size
            return torch.zeros(0, c, h + 2 * PAD, w + 2 * PAD, dtype=torch.uint8, device=device), torch.zeros(
                0, dtype=torch.int64, device=device)
        key = (split, str(device))
        if key not in self._on_device:  # uploaded once per split and device, as padded uint8
            x, y = self._tensors[split]
            self._on_device[key] = (F.pad(x.to(device), (PAD,) * 4), y.to(device))
        return self._on_device[key]


def _parse(spec: str) -> tuple[str, str | None]:
    if not isinstance(spec, str):
        raise DataError(f"data spec must be a string, one of {', '.join(SPECS)}; got {spec!r}")
    if spec in ("digits", "cifar10", "cifar100"):
        return spec, None
    if spec.startswith("imagefolder:") and len(spec) > len("imagefolder:"):
        return "imagefolder", spec[len("imagefolder:"):]
    raise DataError(f"unknown data {spec!r}; use one of {', '.join(SPECS)} (PATH: a directory or .zip "
                    f"with train/ and val/ or test/ class folders)")


def load_data(spec: str, data_dir: str = "./data", download: bool = False,
              val_size: int | float | None = None, seed: int = 0, image_size: int | None = None,
              subset: int | None = None, cache_dir: str | None = None, *, stream: bool | None = None,
              num_workers: int | None = None) -> DataBundle:
    """Load a dataset and split it deterministically into train/val/test.

    Args:
        spec: ``"digits"`` (scikit-learn's 1,797 8x8 digits, 1 channel, embedded), ``"cifar10"``,
            ``"cifar100"`` (python-pickle files under ``data_dir``), or ``"imagefolder:PATH"``
            (a directory or ``.zip`` with ``train/`` and ``val/`` and/or ``test/`` of class folders).
        data_dir: where the CIFAR files are, or are downloaded to. They are read with a
            restricted unpickler that builds only arrays, lists and strings.
        download: fetch CIFAR when it is missing (needs network).
        val_size: images (int) or fraction (float) of the training pool held out for validation;
            ``None``: 5,000 for full CIFAR, 10% otherwise; 0 allowed. An image folder with both
            ``val/`` and ``test/`` uses its own ``val/`` and ignores this; with only one of them,
            that one is the test split and validation is carved from ``train/``.
        seed: the train/val split is a function of (source, val_size, seed); the test split and
            ``subset`` never depend on the seed.
        image_size: square resize target at decode time; ``None``: native (32 for CIFAR and
            digits; for folders the most common size of their images, with a warning naming it
            when sizes differ).
        subset: keep at most this many images of each split the source ships (the training
            pool, the test split, and a folder's own ``val/``): a fixed random choice that does
            not depend on ``seed``, for quick tests; validation carved from the training pool
            comes from the kept images.
        cache_dir: uint8 cache folder (default ``$CNNZOO_CACHE`` or ``~/.cache/cnnzoo``).
        stream: image folders only: ``True`` decodes on the fly with DataLoader workers,
            ``False`` caches; ``None`` streams when the decoded set would exceed
            ``CNNZOO_CACHE_MAX_GB`` (default 4 GiB).
        num_workers: DataLoader workers when streaming (default: CPU count, at most 8).

    Raises:
        DataError: missing or corrupt data, an unreadable image or zip member (naming it), an
            image folder with fewer than two classes or an empty class folder in ``train/``, a
            CIFAR file that names anything beyond arrays, lists and strings, bad arguments.
    """
    kind, path = _parse(spec)
    check_int("image_size", image_size, 1, allow_none=True)
    check_int("subset", subset, 1, allow_none=True)
    check_int("seed", seed, 0)
    check_int("num_workers", num_workers, 0, allow_none=True)
    cache_dir = cache_dir or default_cache_dir()
    t0 = time.perf_counter()
    info: dict = {"spec": spec, "subset": subset, "seed": seed, "streaming": False}

    if stream is not None and kind != "imagefolder":
        raise DataError(f"stream applies to image folders only; {spec} is always cached")
    if kind == "imagefolder":
        index = scan_imagefolder(path)
        info["source"] = index.path
        size = (image_size, image_size) if image_size else _common_size(index, cache_dir, info)
        n_kept = sum(min(len(m), subset or len(m)) for m in index.members.values())
        too_big = n_kept * 3 * size[0] * size[1] > CACHE_MAX_BYTES
        if stream or (stream is None and too_big):
            return _streaming_bundle(spec, index, min(size), val_size, seed, subset, num_workers, info, t0)
        identity = f"imagefolder|{index.path}|{size}|{subset}"

        def build() -> Decoded:
            log.info("decoding %d images of %s once into the uint8 cache", n_kept, index.path)
            return decode_folder(index, size, subset)

        decoded, info["cache_file"], info["cache_hit"] = cached(
            cache_dir, "imagefolder", identity, index.fingerprint, build)
        default_val = None
    elif kind == "digits":
        size = image_size or 32
        info["source"] = "sklearn.datasets.load_digits"
        decoded, info["cache_file"], info["cache_hit"] = cached(
            cache_dir, "digits", f"digits|{size}", digits_fingerprint(), lambda: read_digits(size))
        decoded = _take_subset(decoded, subset)
        default_val = None
    else:
        size = image_size or 32
        data_dir = os.path.expanduser(data_dir)
        files = ensure_cifar(kind, data_dir, download)
        info["source"] = os.path.dirname(os.path.abspath(files[0]))
        decoded, info["cache_file"], info["cache_hit"] = cached(
            cache_dir, kind, f"{kind}|{info['source']}|{size}", cifar_fingerprint(files),
            lambda: read_cifar(kind, data_dir, size))
        decoded = _take_subset(decoded, subset)
        default_val = CIFAR_VAL if len(decoded.splits["train"][1]) == 50000 else None

    splits = dict(decoded.splits)
    if "val" not in splits:
        pool_x, pool_y = splits.pop("train")
        n = len(pool_y)
        v = _val_count(val_size, n, default_val if default_val is not None else round(0.1 * n))
        tr, va = split_train_val(n, v, seed)
        splits["train"], splits["val"] = (pool_x[tr], pool_y[tr]), (pool_x[va], pool_y[va])
        info["val_from"] = "train"
    else:
        info["val_from"] = "val folder"
    x = splits["train"][0]
    mean, std = channel_stats(x)
    info["seconds"] = round(time.perf_counter() - t0, 3)
    return DataBundle(spec, decoded.class_names, tuple(x.shape[1:]), mean, std, info, tensors=splits)


def _common_size(index: FolderIndex, cache_dir: str, info: dict) -> tuple[int, int]:
    """The (H, W) every image of a folder is resized to when no ``image_size`` is given: the most
    common size (ties: the larger), over every image of every split, whatever ``subset`` keeps.

    Reading every header costs a pass over the folder (about 2 s for 60,000 small JPEGs in a
    zip), so the counts are cached beside the decoded data, keyed by the folder's content.
    When sizes differ, one warning says what was chosen (the first image's size used to win
    silently), and ``info["size_note"]`` keeps the same line.
    """
    rows = cached_rows(cache_dir, "imagefolder-sizes", f"sizes|{index.path}", index.fingerprint,
                       lambda: sorted([h, w, n] for (h, w), n in image_sizes(index).items()))
    counts = {(h, w): n for h, w, n in rows}
    h, w = max(counts, key=lambda s: (counts[s], s[0] * s[1], s))
    info["distinct_sizes"] = len(counts)
    if len(counts) > 1:
        info["size_note"] = (f"images have {len(counts)} different sizes; resizing all to {h}x{w} (the most "
                             f"common; set image_size / --image-size to choose)")
        log.warning("%s: %s", index.path, info["size_note"])
    return h, w


def _take_subset(d: Decoded, subset: int | None) -> Decoded:
    if subset is None:
        return d
    out = {}
    for s, (x, y) in d.splits.items():
        keep = subset_indices(len(y), subset)
        out[s] = (x[keep], y[keep])
    return Decoded(out, d.class_names)


def _streaming_bundle(spec: str, index: FolderIndex, size: int, val_size, seed: int, subset: int | None,
                      num_workers: int | None, info: dict, t0: float) -> DataBundle:
    members = {s: [m[i] for i in subset_indices(len(m), subset).tolist()] for s, m in index.members.items()}
    if "val" not in members:
        pool = members.pop("train")
        v = _val_count(val_size, len(pool), round(0.1 * len(pool)))
        tr, va = split_train_val(len(pool), v, seed)
        members["train"] = [pool[i] for i in tr.tolist()]
        members["val"] = [pool[i] for i in va.tolist()]
        info["val_from"] = "train"
    else:
        info["val_from"] = "val folder"
    if num_workers is None:
        num_workers = min(8, os.cpu_count() or 1)
    info.update(streaming=True, cache_file=None, cache_hit=False, num_workers=num_workers,
                seconds=round(time.perf_counter() - t0, 3))
    # Normalization statistics of a large set would need a pass over it: ImageNet's are used.
    return DataBundle(spec, index.class_names, (3, size, size), IMAGENET_MEAN, IMAGENET_STD, info,
                      streams={s: (index, m) for s, m in members.items()}, num_workers=num_workers)


__all__ = ["DataBundle", "DataError", "load_data"]
