"""Bad input to ``cnnzoo.data``: each is refused with one line that says what is wrong and where.

Every row of ``CASES`` builds one bad input in a temporary folder and names a phrase (a regular
expression) the message must contain. Cover a new kind of bad input by adding a row.
Whatever a case contains, loading it must not create ``PWNED`` next to it: the malicious pickles
below try to.
"""

from __future__ import annotations

import os
import pickle
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnzoo.data import DataError, load_data

PWNED = "PWNED"


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[Path], dict]  # writes the bad input under the folder; returns load_data kwargs
    phrase: str                    # regex the one-line message must match


# --------------------------------------------------------------------------------------------
# Builders: image folders and zips


def _folder(root: Path, classes=("cat", "dog"), size=(6, 5), ext="png", n=2) -> Path:
    """train/ and test/ with ``n`` 8-bit RGB images per class."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(
                    root / split / c / f"{i:03d}.{ext}")
    return root


def _zip(folder: Path, dest: Path) -> Path:
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(folder.rglob("*")):
            zf.write(p, p.relative_to(folder).as_posix())
    return dest


def _patch_member(zip_path: Path, member: str, local: Callable[[bytearray, int], None],
                  central: Callable[[bytearray, int], None] | None = None) -> None:
    """Edit the bytes of one member's local header (offset given) and central directory entry."""
    with zipfile.ZipFile(zip_path) as zf:
        lo = zf.getinfo(member).header_offset
    data = bytearray(zip_path.read_bytes())
    local(data, lo)
    if central is not None:
        cd = data.find(b"PK\x01\x02")
        while cd >= 0:
            n = struct.unpack("<H", data[cd + 28:cd + 30])[0]
            if data[cd + 46:cd + 46 + n] == member.encode():
                central(data, cd)
            cd = data.find(b"PK\x01\x02", cd + 46)
    zip_path.write_bytes(bytes(data))


def _bad_zip(tmp: Path, how: str) -> Path:
    z = _zip(_folder(tmp / "f"), tmp / "pets.zip")
    member = "train/dog/001.png"
    if how == "corrupt":  # 0xff opens a deflate block of the reserved type 3: zlib.error
        def local(d, lo):
            n, e = struct.unpack("<HH", d[lo + 26:lo + 30])
            d[lo + 30 + n + e:lo + 34 + n + e] = b"\xff" * 4
        _patch_member(z, member, local)
    elif how == "encrypted":  # general-purpose flag bit 0
        def flag(off):
            def f(d, at):
                d[at + off] |= 1
            return f
        _patch_member(z, member, flag(6), flag(8))
    else:  # compression method 99 (AES, WinZip): zipfile has no decompressor for it
        def method(off):
            def f(d, at):
                d[at + off:at + off + 2] = struct.pack("<H", 99)
            return f
        _patch_member(z, member, method(8), method(10))
    return z


def zip_member(how: str, **kw) -> Callable[[Path], dict]:
    def build(tmp: Path) -> dict:
        return dict(spec=f"imagefolder:{_bad_zip(tmp, how)}", cache_dir=str(tmp / "c"), **kw)
    return build


def odd_image(array: np.ndarray, fmt: str) -> Callable[[Path], dict]:
    """A folder whose train/dog/001 image holds ``array`` in a mode that has no faithful 8-bit RGB."""
    def build(tmp: Path) -> dict:
        root = _folder(tmp / "f", ext=fmt)
        Image.fromarray(array).save(root / "train" / "dog" / f"001.{fmt}")
        return dict(spec=f"imagefolder:{root}", cache_dir=str(tmp / "c"))
    return build


def postscript_named_png(tmp: Path) -> dict:
    """An EPS file named .png: Pillow, choosing by content, would hand it to Ghostscript."""
    root = _folder(tmp / "f")
    (root / "train" / "dog" / "001.png").write_bytes(
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 5 6\n%%EndComments\nshowpage\n")
    return dict(spec=f"imagefolder:{root}", cache_dir=str(tmp / "c"))


def one_class(tmp: Path) -> dict:
    return dict(spec=f"imagefolder:{_folder(tmp / 'f', classes=('cat',))}", cache_dir=str(tmp / "c"))


def empty_class(as_zip: bool) -> Callable[[Path], dict]:
    def build(tmp: Path) -> dict:
        root = _folder(tmp / "f", classes=("cat", "dog", "emu"))
        for split in ("train", "test"):  # test/ without emu too: not a split mismatch
            for f in (root / split / "emu").iterdir():
                f.unlink()
        (root / "test" / "emu").rmdir()
        (root / "train" / "emu" / "notes.txt").write_text("no images here")
        path = _zip(root, tmp / "f.zip") if as_zip else root
        return dict(spec=f"imagefolder:{path}", cache_dir=str(tmp / "c"))
    return build


# --------------------------------------------------------------------------------------------
# Builders: CIFAR python-version files


class _Creates:
    """Unpickling this calls ``make(path)``: what a poisoned file would do."""

    def __init__(self, make: Callable, path: Path):
        self.make, self.path = make, path

    def __reduce__(self):
        if self.make is exec:
            return exec, (f"open({str(self.path)!r}, 'w').close()",)
        return self.make, (str(self.path),) + (("w",) if self.make is open else ())


def _cifar(root: Path, name: str) -> Path:
    """Tiny, valid CIFAR-10/100 python-version files; returns their folder."""
    rng = np.random.default_rng(0)
    if name == "cifar10":
        folder, files, key, meta, names = "cifar-10-batches-py", [
            *(f"data_batch_{i}" for i in range(1, 6)), "test_batch"], "labels", "batches.meta", "label_names"
    else:
        folder, files, key, meta, names = "cifar-100-python", ["train", "test"], "fine_labels", "meta", \
            "fine_label_names"
    n_cls = 10 if name == "cifar10" else 100
    (root / folder).mkdir(parents=True)
    for f in files:
        batch = {"data": rng.integers(0, 256, (3, 3072), dtype=np.uint8), key: [0, 1, 2]}
        (root / folder / f).write_bytes(pickle.dumps(batch))
    (root / folder / meta).write_bytes(pickle.dumps({names: [f"c{i}" for i in range(n_cls)]}))
    return root / folder


def poisoned_cifar(name: str, file: str, make: Callable) -> Callable[[Path], dict]:
    def build(tmp: Path) -> dict:
        folder = _cifar(tmp / "data", name)
        with open(folder / file, "wb") as f:
            pickle.dump({"data": _Creates(make, tmp / PWNED), "labels": [0]}, f, protocol=2)
        return dict(spec=name, data_dir=str(tmp / "data"), cache_dir=str(tmp / "c"))
    return build


def cifar_bad_label(tmp: Path) -> dict:
    folder = _cifar(tmp / "data", "cifar10")
    batch = {"data": np.zeros((3, 3072), np.uint8), "labels": [0, 12, 1]}
    (folder / "data_batch_4").write_bytes(pickle.dumps(batch))
    return dict(spec="cifar10", data_dir=str(tmp / "data"), cache_dir=str(tmp / "c"))


CASES = [
    Case("zip-corrupt-deflate", zip_member("corrupt"),
         r"cannot read train/dog/001\.png in .*pets\.zip.*corrupt"),
    Case("zip-corrupt-deflate-decoding", zip_member("corrupt", image_size=4),
         r"cannot read train/dog/001\.png in .*pets\.zip.*corrupt"),
    Case("zip-corrupt-deflate-streaming", zip_member("corrupt", image_size=4, stream=True, num_workers=0),
         r"cannot read train/dog/001\.png in .*pets\.zip.*corrupt"),
    Case("zip-encrypted-member", zip_member("encrypted"),
         r"cannot read train/dog/001\.png in .*pets\.zip.*encrypted"),
    Case("zip-unknown-compression", zip_member("method"),
         r"cannot read train/dog/001\.png in .*pets\.zip.*compression method 99"),
    Case("float-tiff", odd_image(np.full((6, 5), 0.5, np.float32), "tiff"),
         r"train/dog/001\.tiff.*pixel mode F"),
    Case("int32-tiff", odd_image(np.full((6, 5), 300, np.int32), "tiff"),  # 32-bit: range unknown
         r"train/dog/001\.tiff.*pixel mode I \(TIFF\)"),
    Case("postscript-named-png", postscript_named_png,
         r"cannot decode image .*train/dog/001\.png: not a JPEG, PNG"),
    Case("one-class", one_class, r"only one class \(cat\)"),
    Case("empty-class-folder", empty_class(as_zip=False), r"train/emu/ has no images"),
    Case("empty-class-folder-in-zip", empty_class(as_zip=True), r"train/emu/ has no images in .*f\.zip"),
    Case("cifar10-poisoned-batch", poisoned_cifar("cifar10", "data_batch_2", open),
         r"refusing to load .*data_batch_2.*io\.open"),
    Case("cifar10-poisoned-meta", poisoned_cifar("cifar10", "batches.meta", os.mkdir),
         r"refusing to load .*batches\.meta.*mkdir"),
    Case("cifar100-poisoned-train", poisoned_cifar("cifar100", "train", exec),
         r"refusing to load .*cifar-100-python.train.*exec"),
    Case("cifar10-label-out-of-range", cifar_bad_label, r"data_batch_4.*label 12.*0\.\.9"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_clear_line(tmp_path, case):
    kwargs = case.build(tmp_path)
    with pytest.raises(DataError, match=case.phrase) as e:
        b = load_data(**kwargs)
        for split in ("train", "val", "test"):  # a streamed set fails when its images are read
            list(b.loader(split, 2, train=False))
    assert "\n" not in str(e.value)
    assert not (tmp_path / PWNED).exists()  # no poisoned pickle ran
    assert not list((tmp_path / "c").glob("*.pt"))  # no cache file from a refused source
