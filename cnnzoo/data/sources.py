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

Unreadable images fail: a :class:`DataError` names the file (and the zip holding it), whether
the image cannot be decoded, its zip member cannot be read (corrupt compressed data, encryption,
a compression method Python lacks) or its pixel mode has no faithful 8-bit form. Skipping them
silently would change the dataset behind the user's back; fix or delete the file instead.

What is trusted: images are decoded by Pillow and zips read by ``zipfile``, neither of which
runs code from the data. CIFAR's pickles go through :class:`_CifarUnpickler`, which builds only
dicts, lists, strings, numbers and numpy uint8 arrays and refuses any other global a file names,
so a poisoned file in ``data_dir`` cannot run code.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import pickle
import threading
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
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
# CIFAR-10/100: the python-version pickle files, read with a restricted unpickler.


@dataclass(frozen=True)
class CifarLayout:
    """Where a CIFAR release keeps what (as extracted from its python-version archive)."""

    folder: str
    train: tuple[str, ...]
    test: str
    meta: str
    label_key: str   # in every batch: the class of each image
    names_key: str   # in the meta file: the class names
    archive: str
    url: str
    md5: str         # of the archive, checked by torchvision's downloader

    def files(self) -> list[str]:
        return [*self.train, self.test, self.meta]


CIFAR = {
    "cifar10": CifarLayout("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch",
                           "batches.meta", "labels", "label_names", "cifar-10-python.tar.gz",
                           "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                           "c58f30108f718f92721af3b95e74349a"),
    "cifar100": CifarLayout("cifar-100-python", ("train",), "test", "meta", "fine_labels",
                            "fine_label_names", "cifar-100-python.tar.gz",
                            "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                            "eb9058c3a382ffc7106e4002c42a8d85"),
}


class RefusedPickle(pickle.UnpicklingError):
    """A pickle names a global that a CIFAR file never holds."""


def _latin1(text: str, encoding: str = "latin1") -> bytes:
    # what Python 3 pickles bytes as under protocol 2: _codecs.encode(text, "latin1"); any other
    # codec (zlib, base64, ...) has no business in a CIFAR file
    if encoding.replace("-", "").replace("_", "").lower() not in ("latin1", "iso88591"):
        raise RefusedPickle(f"it encodes text as {encoding!r}")
    return text.encode("latin1")


def _cifar_globals() -> dict[tuple[str, str], object]:
    """The only globals a CIFAR batch may name: numpy's array and dtype reconstruction (under its
    numpy 1 and numpy 2 module names, and both pickle paths: protocol <= 4 and 5) and the latin-1
    encoding of bytes. The functions are taken from numpy's own ``__reduce_ex__``, so no private
    module is imported (``numpy.core`` warns under numpy 2)."""
    a = np.zeros(1, np.uint8)
    reconstruct, frombuffer = a.__reduce_ex__(2)[0], a.__reduce_ex__(5)[0]
    allowed: dict[tuple[str, str], object] = {
        ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype, ("_codecs", "encode"): _latin1}
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{core}.numeric", "_frombuffer")] = frombuffer
    return allowed


class _CifarUnpickler(pickle.Unpickler):
    """Builds dicts, lists, strings, numbers and numpy arrays; refuses every other global, so a
    poisoned file cannot call anything (``pickle.load`` would call whatever the file names)."""

    allowed = _cifar_globals()

    def find_class(self, module: str, name: str):
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise RefusedPickle(f"it names {module}.{name}") from None


def _str_keys(obj: object) -> object:
    """Python 2's pickles give ``str`` keys under ``encoding="latin1"``; files written by Python 3
    with ``bytes`` keys (``b"data"``) are read alike."""
    if isinstance(obj, dict):
        return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}
    return obj


def load_cifar_pickle(path: str) -> dict:
    """One CIFAR python-version file -> its dict, through the restricted unpickler."""
    with open(path, "rb") as f:
        obj = _CifarUnpickler(f, encoding="latin1").load()
    if not isinstance(obj, dict):
        raise pickle.UnpicklingError(f"it holds a {type(obj).__name__}, not a dict")
    return _str_keys(obj)


def cifar_files(name: str, data_dir: str) -> list[str]:
    layout = CIFAR[name]
    return [os.path.join(data_dir, layout.folder, f) for f in layout.files()]


def _cifar_missing_message(name: str, data_dir: str) -> str:
    layout = CIFAR[name]
    folder = os.path.join(os.path.abspath(data_dir), layout.folder)
    return (f"{name} not found: expected the python-version files ({', '.join(layout.train)}, ...) in "
            f"{folder}; extract {layout.archive} ({layout.url}) into {os.path.abspath(data_dir)}, "
            f"or pass download=True (cnnzoo train --download) when online")


def ensure_cifar(name: str, data_dir: str, download: bool) -> list[str]:
    """The CIFAR files, downloaded first if asked; a clear :class:`DataError` when absent.

    The download goes through torchvision's downloader, which checks the archive's md5; nothing
    is unpickled on the way.
    """
    files = cifar_files(name, data_dir)
    if download and not all(os.path.isfile(f) for f in files):
        from torchvision.datasets.utils import download_and_extract_archive

        layout = CIFAR[name]
        try:
            download_and_extract_archive(layout.url, data_dir, filename=layout.archive, md5=layout.md5)
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


def _read_cifar_file(name: str, path: str) -> dict:
    """A :func:`load_cifar_pickle` whose failures are one-line :class:`DataError` naming the file."""
    try:
        return load_cifar_pickle(path)
    except RefusedPickle as e:
        raise DataError(f"{name}: refusing to load {path}: {e}, and a CIFAR file holds only arrays, "
                        f"lists and strings; delete it and extract the archive again") from None
    except Exception as e:  # truncated or not a pickle at all
        why = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise DataError(f"{name}: cannot read {path} ({type(e).__name__}: {why}); delete the files and "
                        f"extract the archive again") from None


def read_cifar(name: str, data_dir: str, image_size: int) -> Decoded:
    """The python-version files -> uint8 (N, 3, 32, 32) images, resized to ``image_size``.

    Every file is checked: a ``data`` uint8 array of N x 3072, N labels among the meta file's
    class names.
    """
    layout = CIFAR[name]
    folder = os.path.join(os.path.abspath(data_dir), layout.folder)
    meta_path = os.path.join(folder, layout.meta)
    names = _read_cifar_file(name, meta_path).get(layout.names_key)
    if not isinstance(names, list) or not all(isinstance(c, (str, bytes)) for c in names) or len(names) < 2:
        raise DataError(f"{name}: {meta_path} has no list of class names under {layout.names_key!r}; "
                        f"delete the files and extract the archive again")
    names = [c.decode() if isinstance(c, bytes) else c for c in names]
    splits = {}
    for split, files in (("train", layout.train), ("test", (layout.test,))):
        xs, ys = [], []
        for f in files:
            path = os.path.join(folder, f)
            batch = _read_cifar_file(name, path)
            x, y = batch.get("data"), batch.get(layout.label_key)
            if not (isinstance(x, np.ndarray) and x.dtype == np.uint8 and x.ndim == 2 and x.shape[1] == 3072):
                what = f"{x.dtype} {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
                raise DataError(f"{name}: {path} has no uint8 N x 3072 'data' array (found {what}); delete "
                                f"the files and extract the archive again")
            if not isinstance(y, list) or len(y) != len(x) or not all(type(v) is int for v in y):
                raise DataError(f"{name}: {path} has no list of {len(x)} integer {layout.label_key!r}; "
                                f"delete the files and extract the archive again")
            bad = next((v for v in y if not 0 <= v < len(names)), None)
            if bad is not None:
                raise DataError(f"{name}: {path} has label {bad}, outside 0..{len(names) - 1} (the "
                                f"{len(names)} classes of {layout.meta}); delete the files and extract "
                                f"the archive again")
            xs.append(x.reshape(-1, 3, 32, 32))
            ys += y
        x = torch.from_numpy(np.concatenate(xs))
        splits[split] = (resize_u8(x, (image_size, image_size)), torch.tensor(ys, dtype=torch.int64))
    return Decoded(splits, names)


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

    def where(self, member: str) -> str:
        """A human-readable location of one member, for error messages."""
        return f"{member} in {self.path}" if self.is_zip else os.path.join(self.path, member)


def _is_image(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return not base.startswith(".") and base.lower().endswith(IMG_EXTENSIONS)


def _group(names: Sequence[str], entries: Sequence[str], prefix: str, path: str
           ) -> tuple[list[str], dict[str, list[tuple[str, str]]]]:
    """Group relative image names ``split/class/.../file`` -> split -> [(name, class)].

    ``entries`` are all paths of the folder (any file, and folders with a trailing ``/``): a
    class folder of ``train/`` that holds no image is an error, not a class that silently
    disappears.
    """
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
    folders = {e[len(prefix):].split("/")[1] for e in entries
               if e.startswith(prefix + "train/") and e.count("/") - prefix.count("/") >= 2}
    empty = sorted(c for c in folders - set(classes) if not c.startswith("."))
    if empty:
        listed = ", ".join(f"train/{c}/" for c in empty[:5]) + (", ..." if len(empty) > 5 else "")
        raise DataError(f"{listed} {'has' if len(empty) == 1 else 'have'} no images in {path}: every "
                        f"class folder needs training images; add some or remove the folder")
    if len(classes) < 2:
        raise DataError(f"{path} has only one class ({classes[0]}) under train/: a classifier needs at "
                        f"least two class folders")
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
    if os.path.isdir(path):
        names, entries, stats = [], [], []
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            rel_root = os.path.relpath(root, path).replace(os.sep, "/")
            rel_root = "" if rel_root == "." else rel_root + "/"
            entries += [rel_root + d + "/" for d in dirs] + [rel_root + f for f in files]
            for f in sorted(files):
                rel = rel_root + f
                if _is_image(rel):
                    st = os.stat(os.path.join(root, f))
                    names.append(rel)
                    stats.append(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        is_zip, fingerprint = False, _sha256(stats)
    else:
        try:
            with zipfile.ZipFile(path) as zf:
                every = zf.infolist()
        except (zipfile.BadZipFile, OSError) as e:
            raise DataError(f"cannot read {path} as a zip archive ({e})") from None
        infos = [i for i in every if not i.is_dir()]
        names = sorted(i.filename for i in infos if _is_image(i.filename))
        entries = [i.filename for i in every]
        is_zip = True
        fingerprint = _sha256(sorted(f"{i.filename}\0{i.file_size}\0{i.CRC:08x}\n".encode() for i in infos))
    prefix = ""
    tops = {n.split("/", 1)[0] for n in names}
    if "train" not in tops and len(tops) == 1:  # a layout wrapped in one top folder
        prefix = tops.pop() + "/"
    classes, by_split = _group(names, entries, prefix, path)
    label = {c: i for i, c in enumerate(classes)}
    members = {s: [(n, label[c]) for n, c in sorted(v)] for s, v in by_split.items()}
    return FolderIndex(path, is_zip, prefix, classes, members, fingerprint)


# Pixel modes that Pillow's convert("RGB") maps faithfully. 16-bit greyscale is scaled to 8 bits
# here instead, since convert() would clip every value above 255 (most such images turn white):
# modes "I;16*" (PNG, TIFF), and "I" from PNG or PGM, which Pillow fills with 0..65535. Other
# modes (float "F", "I" from TIFF: 32-bit integers of unknown range, "LAB", "HSV", premultiplied
# alpha) are refused rather than guessed at.
RGB_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr")
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def to_rgb(im, where: str):
    """A PIL image -> an 8-bit RGB PIL image, or a :class:`DataError` naming ``where``.

    16-bit greyscale keeps its high byte (``v >> 8``), as Pillow itself does when it opens a
    16-bit colour PNG as "RGB", so a 16-bit grey image and its colour twin decode alike.
    """
    from PIL import Image

    if im.mode in RGB_MODES:
        return im.convert("RGB")
    if im.mode in SIXTEEN_BIT_MODES or (im.mode == "I" and im.format in ("PNG", "PPM")):
        a = np.asarray(im).astype(np.int64)
        if a.size and (a.min() < 0 or a.max() > 65535):  # not what Pillow promises for these
            raise DataError(f"cannot decode image {where}: pixel mode {im.mode} with values "
                            f"{a.min()}..{a.max()}, beyond 16 bits; convert the file to 8-bit RGB or "
                            f"greyscale")
        return Image.fromarray((a >> 8).astype(np.uint8)).convert("RGB")
    raise DataError(f"cannot decode image {where}: pixel mode {im.mode} ({im.format}) has no faithful "
                    f"8-bit RGB form; convert the file to 8-bit RGB or greyscale")


# The formats of IMG_EXTENSIONS. Pillow picks a decoder by content, not by name: without this
# list a file named .png holding PostScript would be handed to Ghostscript (EPS plugin).
PIL_FORMATS = ("JPEG", "PNG", "PPM", "BMP", "TIFF", "WEBP")


def _open_image(data: bytes, where: str, use: Callable):
    """``use(im)`` on the PIL image in ``data``; any failure is a one-line :class:`DataError`."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data), formats=PIL_FORMATS) as im:
            return use(im)
    except DataError:
        raise
    except UnidentifiedImageError:
        raise DataError(f"cannot decode image {where}: not a JPEG, PNG, PPM/PGM, BMP, TIFF or WebP "
                        f"image; fix or remove the file") from None
    except Exception as e:  # PIL raises many types for bad files
        raise DataError(f"cannot decode image {where} ({type(e).__name__}: {e}); fix or remove the "
                        f"file") from None


def open_rgb(data: bytes, where: str):
    """Encoded image bytes -> an 8-bit RGB PIL image; any failure is a one-line :class:`DataError`."""
    return _open_image(data, where, lambda im: to_rgb(im, where))


def decode_image(data: bytes, where: str, size: tuple[int, int] | None) -> np.ndarray:
    """Encoded image bytes -> (H, W, 3) uint8, resized (bilinear) to ``size`` = (H, W) if given."""
    from PIL import Image

    im = open_rgb(data, where)
    if size is not None and im.size != (size[1], size[0]):
        im = im.resize((size[1], size[0]), Image.BILINEAR)
    return np.asarray(im, dtype=np.uint8)


def image_size(data: bytes, where: str) -> tuple[int, int]:
    """(H, W) of encoded image bytes, from the header alone (no pixel decoding)."""
    return _open_image(data, where, lambda im: (im.size[1], im.size[0]))


def image_sizes(index: FolderIndex) -> Counter:
    """How many images of the folder (every split) have each (H, W), read from their headers."""
    reader = _Reader(index)
    names = [m for members in index.members.values() for m, _ in members]

    def work(lo: int) -> Counter:
        return Counter(image_size(reader.read(m), index.where(m)) for m in names[lo:lo + 1024])

    try:
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
            try:
                return sum(pool.map(work, range(0, len(names), 1024)), Counter())
            except BaseException:
                pool.shutdown(cancel_futures=True)  # fail now, not after reading the rest
                raise
    finally:
        reader.close()


class _Reader:
    """Reads members' bytes from a directory or a zip; a zip is opened once per process.

    Threads may share one reader: ``ZipFile`` is not documented as thread-safe (its handle
    reference count is updated without a lock), so zip reads are serialized here; decoding,
    the expensive part, runs outside the lock.
    """

    def __init__(self, index: FolderIndex):
        self.index = index
        self._zip: zipfile.ZipFile | None = None
        self._pid = -1
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
        except (OSError, EOFError, zipfile.BadZipFile, KeyError) as e:
            raise DataError(f"cannot read {self.index.where(member)} ({type(e).__name__}: {e})") from None
        except zlib.error as e:  # zipfile lets the decompressor's own error through
            raise DataError(f"cannot read {self.index.where(member)}: its compressed data is corrupt "
                            f"({e}); re-create the archive") from None
        except NotImplementedError:  # no decompressor for the method (a RuntimeError: caught first)
            method = self._zip.getinfo(member).compress_type
            raise DataError(f"cannot read {self.index.where(member)}: it uses compression method {method}, "
                            f"which Python's zipfile cannot read; re-create the archive with deflate "
                            f"or no compression") from None
        except RuntimeError as e:  # zipfile refuses encrypted members with a RuntimeError
            if self._zip is not None and self._zip.getinfo(member).flag_bits & 0x1:
                raise DataError(f"cannot read {self.index.where(member)}: the member is encrypted and "
                                f"cnnzoo reads no passwords; re-create the archive without encryption"
                                ) from None
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
        i, seed = item
        member, label = self.members[i]
        im = open_rgb(self.reader.read(member), self.index.where(member))
        if not self.train:
            return self.transform(im), label
        with torch.random.fork_rng(devices=[]):
            # the CPU generator only: torch.manual_seed would also queue lazy seeding of every
            # accelerator backend, recording a traceback per call (most of the per-image cost)
            torch.default_generator.manual_seed(seed)
            return self.transform(im), label
