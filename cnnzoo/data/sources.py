"""Readers: each turns one kind of source into uint8 image tensors, and says what identifies it.

A reader returns a :class:`Decoded`: per split, an ``(N, C, H, W)`` uint8 tensor and an int64
label tensor, plus the class names. The ``"train"`` split is the training *pool* (the validation
split is carved out of it later, by the bundle) unless the source ships its own ``"val"``.

Every source also has a *fingerprint*, a sha256 of what its content is made of, which keys the
uint8 cache (see :mod:`cnnzoo.data.cache`):

* digits: the bytes of scikit-learn's bundled arrays (tiny, hashed in full);
* CIFAR: the bytes of the python-pickle batch files (about 180 MB, hashed in well under a second);
* a ``.zip`` image folder: its central directory, i.e. every member's name, size and CRC-32. The
  CRCs are checksums of the members' *content* that the zip already stores, so reading the
  directory (milliseconds, whatever the archive's size) detects any change to any image,
  renamed or not, without reading the image bytes; a touched but unchanged zip is not rebuilt;
* a directory image folder: every image file's relative path, size and modification time
  (reading every byte of a large tree on each start would cost as much as decoding it). An edit
  that keeps both size and mtime is the one change this misses; delete the cache file then.

Unreadable images fail: a :class:`DataError` names the file (and the zip holding it). Skipping
them silently would change the dataset behind the user's back; fix or delete the file instead.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import threading
import zipfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ._common import DataError, generator

# torchvision's ImageFolder extensions; other files (README, .DS_Store, ...) are ignored.
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
HELD_OUT = ("val", "test")


@dataclass
class Decoded:
    """Decoded splits: name -> (uint8 images (N, C, H, W), int64 labels (N,)), and class names."""

    splits: dict[str, tuple[torch.Tensor, torch.Tensor]]
    class_names: list[str]


def subset_indices(n: int, subset: int | None) -> torch.Tensor:
    """The ``subset`` images kept out of ``n``: a fixed (seed-independent) random choice, sorted.

    Fixed so that runs with different seeds see the same images; random so that a source stored
    class by class (image folders) still gives every class.
    """
    if subset is None or subset >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=generator("subset", n))[:subset].sort().values


def resize_u8(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of a uint8 (N, C, H, W) batch, antialiased when shrinking, back to uint8."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    out = []
    for chunk in x.split(4096):  # bounded float memory for big sets
        y = F.interpolate(chunk.float(), size=size, mode="bilinear", align_corners=False, antialias=True)
        out.append(y.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out)


def _sha256(chunks: Iterator[bytes] | Sequence[bytes]) -> str:
    h = hashlib.sha256()
    for c in chunks:
        h.update(c)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# digits: scikit-learn's bundled 1,797 8x8 handwritten digits (values 0..16).

DIGITS_TEST = 360  # about 20%, fixed: the test split never depends on the seed


def _load_digits():
    from sklearn.datasets import load_digits  # imported here: scikit-learn is slow to import

    return load_digits()


def digits_fingerprint() -> str:
    """sha256 of scikit-learn's bundled ``digits.csv.gz``, found without importing scikit-learn
    (about 2 s of imports saved on every cache hit); of the loaded arrays if the file moved."""
    spec = importlib.util.find_spec("sklearn")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(folder, "datasets", "data", "digits.csv.gz")
        if os.path.isfile(path):
            with open(path, "rb") as f:
                return _sha256([f.read()])
    d = _load_digits()
    return _sha256([np.ascontiguousarray(d.images).tobytes(), np.ascontiguousarray(d.target).tobytes()])


def read_digits(image_size: int) -> Decoded:
    """1 channel, values 0..16 scaled to 0..255, resized (bilinear) to ``image_size`` squared.

    The test split is a fixed 360 images (a permutation with a constant seed); the other 1,437
    form the training pool.
    """
    d = _load_digits()
    x = torch.from_numpy(np.round(d.images * (255.0 / 16.0)).astype(np.uint8)).unsqueeze(1)
    x = resize_u8(x, (image_size, image_size))
    y = torch.from_numpy(d.target.astype(np.int64))
    perm = torch.randperm(len(y), generator=generator("digits-test"))
    test = perm[:DIGITS_TEST].sort().values
    train = perm[DIGITS_TEST:].sort().values
    return Decoded({"train": (x[train], y[train]), "test": (x[test], y[test])},
                   [str(i) for i in range(10)])


# --------------------------------------------------------------------------------------------
# CIFAR-10/100: the python-pickle format, read with torchvision's dataset classes.

CIFAR_DIRS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}


def _cifar_class(name: str):
    from torchvision.datasets import CIFAR10, CIFAR100

    base = CIFAR10 if name == "cifar10" else CIFAR100

    # torchvision md5-checks every file on every load; the cache key below already hashes the
    # files' bytes, so only their presence is checked here (download still verifies the archive).
    class _Reader(base):
        train_list = [[f, None] for f, _ in base.train_list]
        test_list = [[f, None] for f, _ in base.test_list]
        meta = {**base.meta, "md5": None}

    return _Reader


def cifar_files(name: str, data_dir: str) -> list[str]:
    cls = _cifar_class(name)
    folder = os.path.join(data_dir, CIFAR_DIRS[name])
    names = [f for f, _ in cls.train_list] + [f for f, _ in cls.test_list] + [cls.meta["filename"]]
    return [os.path.join(folder, f) for f in names]


def _cifar_missing_message(name: str, data_dir: str) -> str:
    folder = os.path.join(os.path.abspath(data_dir), CIFAR_DIRS[name])
    cls = _cifar_class(name)
    first = ", ".join(f for f, _ in cls.train_list)
    return (f"{name} not found: expected the python-version files ({first}, ...) in {folder}; "
            f"extract {cls.filename} ({cls.url}) into {os.path.abspath(data_dir)} "
            f"or pass --download when online")


def ensure_cifar(name: str, data_dir: str, download: bool) -> list[str]:
    """The CIFAR files, downloaded first if asked; a clear :class:`DataError` when absent."""
    files = cifar_files(name, data_dir)
    if download and not all(os.path.isfile(f) for f in files):
        try:
            _cifar_class(name)(root=data_dir, train=True, download=True)
        except Exception as e:  # no network, disk full, bad archive: one clear line
            why = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise DataError(f"{name}: download into {os.path.abspath(data_dir)} failed "
                            f"({type(e).__name__}: {why}); "
                            f"{_cifar_missing_message(name, data_dir)}") from None
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise DataError(_cifar_missing_message(name, data_dir))
    return files


def cifar_fingerprint(files: Sequence[str]) -> str:
    def chunks():
        for f in files:
            yield os.path.basename(f).encode() + b"\0"
            with open(f, "rb") as fh:
                while block := fh.read(1 << 22):
                    yield block

    return _sha256(chunks())


def read_cifar(name: str, data_dir: str, image_size: int) -> Decoded:
    cls = _cifar_class(name)
    splits = {}
    for split, train in (("train", True), ("test", False)):
        try:
            ds = cls(root=data_dir, train=train, download=False)
        except Exception as e:  # truncated/corrupt pickle, wrong format
            raise DataError(f"{name}: cannot read the files in "
                            f"{os.path.join(os.path.abspath(data_dir), CIFAR_DIRS[name])} "
                            f"({type(e).__name__}: {e}); delete them and extract the archive again") from None
        x = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
        y = torch.as_tensor(ds.targets, dtype=torch.int64)
        if x.ndim != 4 or x.shape[1] != 3 or len(x) != len(y):
            raise DataError(f"{name}: unexpected array shapes {tuple(x.shape)} / {tuple(y.shape)} in "
                            f"{os.path.abspath(data_dir)}")
        splits[split] = (resize_u8(x, (image_size, image_size)), y)
    return Decoded(splits, list(ds.classes))


# --------------------------------------------------------------------------------------------
# Image folders: a directory or a .zip with train/ and val/ and/or test/ of class folders.


@dataclass
class FolderIndex:
    """What an image folder holds, before decoding: per split, (member, label) lists."""

    path: str                   # absolute path of the directory or .zip
    is_zip: bool
    prefix: str                 # inside the zip/dir: "" or "top/" when the layout is wrapped
    class_names: list[str]
    members: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    fingerprint: str = ""
    native_size: tuple[int, int] = (0, 0)  # (H, W) of the first training image

    def where(self, member: str) -> str:
        """A human-readable location of one member, for error messages."""
        return f"{member} in {self.path}" if self.is_zip else os.path.join(self.path, member)


def _is_image(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return not base.startswith(".") and base.lower().endswith(IMG_EXTENSIONS)


def _group(names: Sequence[str], prefix: str, path: str
           ) -> tuple[list[str], dict[str, list[tuple[str, str]]]]:
    """Group relative image names ``split/class/.../file`` -> split -> [(name, class)]."""
    by_split: dict[str, list[tuple[str, str]]] = {}
    for n in names:
        rel = n[len(prefix):]
        parts = rel.split("/")
        if len(parts) < 3 or parts[0] not in ("train",) + HELD_OUT or any(q.startswith(".") for q in parts):
            continue  # not split/class/file, or inside a hidden folder (.ipynb_checkpoints, ...)
        by_split.setdefault(parts[0], []).append((n, parts[1]))
    if "train" not in by_split:
        raise DataError(f"no images under train/<class>/ in {path}: an image folder needs train/ and val/ "
                        f"or test/, each with one sub-folder per class")
    if not any(s in by_split for s in HELD_OUT):
        raise DataError(f"no images under val/<class>/ or test/<class>/ in {path}: an image folder needs "
                        f"train/ and val/ or test/, each with one sub-folder per class")
    if "test" not in by_split:  # train/ + val/ only (ImageNet style): val/ is the held-out test
        by_split["test"] = by_split.pop("val")
    classes = sorted({c for _, c in by_split["train"]})
    for split in HELD_OUT:
        extra = sorted({c for _, c in by_split.get(split, [])} - set(classes))
        if extra:
            raise DataError(f"{split}/ has classes that train/ lacks ({', '.join(extra[:5])}) in {path}")
    return classes, by_split


def scan_imagefolder(path: str) -> FolderIndex:
    """List an image folder (directory or .zip) without decoding it; computes its fingerprint."""
    path = os.path.abspath(os.path.expanduser(path))
    if not os.path.exists(path):
        raise DataError(f"image folder not found: {path} (give a directory or a .zip with train/ and "
                        f"val/ or test/ sub-folders of class folders)")
    zf = None
    if os.path.isdir(path):
        names, stats = [], []
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for f in sorted(files):
                full = os.path.join(root, f)
                rel = os.path.relpath(full, path).replace(os.sep, "/")
                if _is_image(rel):
                    st = os.stat(full)
                    names.append(rel)
                    stats.append(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        is_zip, fingerprint = False, _sha256(stats)
    else:
        try:
            zf = zipfile.ZipFile(path)
            infos = [i for i in zf.infolist() if not i.is_dir()]
        except (zipfile.BadZipFile, OSError) as e:
            raise DataError(f"cannot read {path} as a zip archive ({e})") from None
        names = sorted(i.filename for i in infos if _is_image(i.filename))
        is_zip = True
        fingerprint = _sha256(sorted(f"{i.filename}\0{i.file_size}\0{i.CRC:08x}\n".encode() for i in infos))
    try:
        prefix = ""
        tops = {n.split("/", 1)[0] for n in names}
        if "train" not in tops and len(tops) == 1:  # a layout wrapped in one top folder
            prefix = tops.pop() + "/"
        classes, by_split = _group(names, prefix, path)
        label = {c: i for i, c in enumerate(classes)}
        members = {s: [(n, label[c]) for n, c in sorted(v)] for s, v in by_split.items()}
        index = FolderIndex(path, is_zip, prefix, classes, members, fingerprint)
        first = members["train"][0][0]
        data = _Reader(index, zf).read(first)
        index.native_size = tuple(decode_image(data, index.where(first), None).shape[:2])
        return index
    finally:
        if zf is not None:
            zf.close()


def decode_image(data: bytes, where: str, size: tuple[int, int] | None) -> np.ndarray:
    """Encoded image bytes -> (H, W, 3) uint8, resized (bilinear) to ``size`` = (H, W) if given."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            im = im.convert("RGB")
            if size is not None and im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8)
    except Exception as e:  # PIL raises many types for bad files
        raise DataError(f"cannot decode image {where} ({type(e).__name__}: {e}); fix or remove the "
                        f"file") from None


class _Reader:
    """Reads members' bytes from a directory or a zip; a zip is opened once per process.

    Threads may share one reader: ``ZipFile`` is not documented as thread-safe (its handle
    reference count is updated without a lock), so zip reads are serialized here; decoding,
    the expensive part, runs outside the lock.
    """

    def __init__(self, index: FolderIndex, zf: zipfile.ZipFile | None = None):
        self.index = index
        self._zip = zf
        self._pid = os.getpid() if zf is not None else -1
        self._lock = threading.Lock()

    def read(self, member: str) -> bytes:
        try:
            if not self.index.is_zip:
                with open(os.path.join(self.index.path, member), "rb") as f:
                    return f.read()
            with self._lock:
                if self._zip is None or self._pid != os.getpid():  # a zip handle must not cross a fork
                    self._zip = zipfile.ZipFile(self.index.path)
                    self._pid = os.getpid()
                return self._zip.read(member)
        except (OSError, zipfile.BadZipFile, KeyError) as e:
            raise DataError(f"cannot read {self.index.where(member)} ({type(e).__name__}: {e})") from None

    def close(self) -> None:
        if self._zip is not None and self._pid == os.getpid():
            self._zip.close()
        self._zip = None

    def __getstate__(self):  # picklable for DataLoader workers: the zip is reopened there
        return {"index": self.index}

    def __setstate__(self, state):
        self.__init__(state["index"])


def decode_folder(index: FolderIndex, size: tuple[int, int], subset: int | None) -> Decoded:
    """Decode every (kept) image of an image folder into uint8 tensors of shape (3, *size)."""
    reader = _Reader(index)
    splits = {}
    # PIL decodes without the GIL: a few threads keep the cores busy on small JPEGs without
    # the start-up and copying costs of processes.
    try:
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
            for split, members in index.members.items():
                chosen = [members[i] for i in subset_indices(len(members), subset).tolist()]
                x = np.empty((len(chosen), size[0], size[1], 3), dtype=np.uint8)

                def work(lo: int, chosen=chosen, x=x) -> None:
                    for i in range(lo, min(lo + 256, len(chosen))):
                        member = chosen[i][0]
                        x[i] = decode_image(reader.read(member), index.where(member), size)

                try:
                    list(pool.map(work, range(0, len(chosen), 256)))  # re-raises the first error
                except BaseException:
                    pool.shutdown(cancel_futures=True)  # fail now, not after decoding the rest
                    raise
                y = torch.tensor([c for _, c in chosen], dtype=torch.int64)
                splits[split] = (torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), y)
    finally:
        reader.close()
    return Decoded(splits, list(index.class_names))


class StreamingFolder(torch.utils.data.Dataset):
    """One split of an image folder decoded on the fly (for folders too large to cache).

    Items are requested as ``(index, sample_seed)`` pairs (see :class:`~cnnzoo.data.loaders.StreamLoader`);
    with ``train=True`` the transform runs under a forked RNG seeded with ``sample_seed``.
    Images come out as uint8 (3, S, S) tensors; normalization happens on the device.

    Transforms (torchvision): for ``S <= 64`` (CIFAR-like), resize to S x S, then in training a
    random crop with 4-pixel padding and a flip; for larger S (ImageNet-like), training uses
    ``RandomResizedCrop(S)`` and a flip, evaluation resizes the short side to ``S / 0.875`` and
    takes the center S x S crop.
    """

    def __init__(self, index: FolderIndex, members: Sequence[tuple[str, int]], image_size: int, train: bool):
        from torchvision.transforms import v2

        self.reader = _Reader(index)
        self.index, self.members = index, list(members)
        S = image_size
        if S <= 64:
            steps = [v2.Resize((S, S), antialias=True)]
            if train:
                steps += [v2.RandomCrop(S, padding=4), v2.RandomHorizontalFlip()]
        elif train:
            steps = [v2.RandomResizedCrop(S, antialias=True), v2.RandomHorizontalFlip()]
        else:
            steps = [v2.Resize(round(S / 0.875), antialias=True), v2.CenterCrop(S)]
        self.transform = v2.Compose([v2.PILToTensor(), *steps])
        self.train = train

    def __len__(self) -> int:
        return len(self.members)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, int]:
        from PIL import Image

        i, seed = item
        member, label = self.members[i]
        where = self.index.where(member)
        try:
            with Image.open(io.BytesIO(self.reader.read(member))) as im:
                im = im.convert("RGB")
        except DataError:
            raise
        except Exception as e:
            raise DataError(f"cannot decode image {where} ({type(e).__name__}: {e}); fix or remove the "
                            f"file") from None
        if not self.train:
            return self.transform(im), label
        with torch.random.fork_rng(devices=[]):
            # the CPU generator only: torch.manual_seed would also queue lazy seeding of every
            # accelerator backend, recording a traceback per call (most of the per-image cost)
            torch.default_generator.manual_seed(seed)
            return self.transform(im), label
