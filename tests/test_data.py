"""cnnzoo.data: splits, the deterministic batch contract, the uint8 cache, readers, bad input."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
import shutil
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnzoo.data import DataBundle, DataError, load_data
from cnnzoo.data.bundle import split_train_val
from cnnzoo.data.cache import atomic_save
from cnnzoo.data.loaders import crop_flip, crop_flip_params
from cnnzoo.data.sources import CIFAR, read_digits

SHARED_ZIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg75.zip"


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def digits(cache) -> DataBundle:
    return load_data("digits", cache_dir=cache)


def _rows(x: torch.Tensor) -> list[str]:
    return sorted(hashlib.sha1(r.numpy().tobytes()).hexdigest() for r in x)


def _all(loader) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*list(loader), strict=True)
    return torch.cat(xs), torch.cat(ys)


# --------------------------------------------------------------------------------------------
# digits


def test_digits_shape_and_sizes(digits):
    assert digits.input_size == (1, 32, 32) and digits.num_classes == 10
    assert digits.sizes == {"train": 1293, "val": 144, "test": 360}
    assert sum(digits.sizes.values()) == 1797
    x, y = next(iter(digits.loader("train", 64, train=False)))
    assert x.shape == (64, 1, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    # normalized with the train split's own statistics: about zero mean, unit std over the split
    xs, _ = _all(digits.loader("train", 512, train=False))
    assert abs(xs.mean().item()) < 1e-3 and abs(xs.std().item() - 1) < 1e-3
    assert set(digits.labels("test").tolist()) == set(range(10))


def test_digits_labels_stay_aligned_with_images(digits):
    """1-nearest-neighbour from the train split's loader output scores well on the test split:
    images and labels went through splitting, resizing and caching together (shuffled labels
    would score about 10%)."""
    x, y = _all(digits.loader("train", 256, train=False))
    xt, yt = _all(digits.loader("test", 256, train=False))
    pred = y[torch.cdist(xt.flatten(1), x.flatten(1)).argmin(1)]
    assert (pred == yt).float().mean() > 0.95


def test_digits_splits_partition_the_data(digits):
    full = read_digits(32)
    every = torch.cat([full.splits["train"][0], full.splits["test"][0]])
    parts = torch.cat([digits._tensors[s][0] for s in ("train", "val", "test")])
    assert len(parts) == len(every) == 1797
    assert _rows(parts) == _rows(every)  # same multiset of images: disjoint and complete


def test_digits_splits_deterministic(digits, cache):
    again = load_data("digits", cache_dir=cache)
    other = load_data("digits", cache_dir=cache, seed=1)
    for s in ("train", "val", "test"):
        assert torch.equal(digits._tensors[s][0], again._tensors[s][0])
        assert torch.equal(digits._tensors[s][1], again._tensors[s][1])
    assert torch.equal(digits._tensors["test"][0], other._tensors["test"][0])  # test never moves
    assert not torch.equal(digits._tensors["val"][1], other._tensors["val"][1])
    assert again.info["cache_hit"] and os.path.isfile(again.info["cache_file"])


def test_val_size_options(cache):
    empty = load_data("digits", cache_dir=cache, val_size=0)
    assert empty.sizes["val"] == 0 and list(empty.loader("val", 32, train=False)) == []
    assert load_data("digits", cache_dir=cache, val_size=0.25).sizes["val"] == round(0.25 * 1437)
    b = load_data("digits", cache_dir=cache, val_size=100, subset=500)
    assert b.sizes == {"train": 400, "val": 100, "test": 360}
    with pytest.raises(DataError, match="val_size"):
        load_data("digits", cache_dir=cache, val_size=1437)
    with pytest.raises(DataError, match="val_size"):
        load_data("digits", cache_dir=cache, val_size="10")


def test_split_train_val_is_a_partition():
    tr, va = split_train_val(1000, 123, seed=7)
    assert len(va) == 123 and len(tr) == 877
    assert sorted(torch.cat([tr, va]).tolist()) == list(range(1000))
    tr2, va2 = split_train_val(1000, 123, seed=7)
    assert torch.equal(va, va2) and not torch.equal(va, split_train_val(1000, 123, seed=8)[1])


# --------------------------------------------------------------------------------------------
# The batch contract


def test_one_rank_equals_two_ranks_concatenated(digits):
    kw = dict(train=True, seed=3, epoch=2)
    one = list(digits.loader("train", 128, **kw))
    r0 = list(digits.loader("train", 64, rank=0, world_size=2, **kw))
    r1 = list(digits.loader("train", 64, rank=1, world_size=2, **kw))
    assert len(one) == len(r0) == len(r1) == 1293 // 128
    for (x, y), (x0, y0), (x1, y1) in zip(one, r0, r1, strict=True):
        assert torch.equal(x, torch.cat([x0, x1])) and torch.equal(y, torch.cat([y0, y1]))


def test_resume_at_start_batch_gives_the_remaining_batches(digits):
    full = list(digits.loader("train", 100, train=True, seed=5, epoch=1))
    rest = digits.loader("train", 100, train=True, seed=5, epoch=1, start_batch=4)
    assert len(rest) == len(full)  # len ignores start_batch
    rest = list(rest)
    assert len(rest) == len(full) - 4
    for (x, y), (xr, yr) in zip(full[4:], rest, strict=True):
        assert torch.equal(x, xr) and torch.equal(y, yr)


def test_epochs_and_seeds_shuffle_differently_without_global_rng(digits):
    state = torch.get_rng_state()
    e0 = _all(digits.loader("train", 128, train=True, seed=0, epoch=0))
    e1 = _all(digits.loader("train", 128, train=True, seed=0, epoch=1))
    s1 = _all(digits.loader("train", 128, train=True, seed=1, epoch=0))
    assert torch.equal(torch.get_rng_state(), state)  # the loader touched no global RNG
    assert not torch.equal(e0[1], e1[1]) and not torch.equal(e0[1], s1[1])
    assert torch.equal(e0[0], _all(digits.loader("train", 128, train=True, seed=0, epoch=0))[0])
    # an epoch sees distinct images (drop_last only drops the tail of the permutation)
    assert len(e0[1]) == (1293 // 128) * 128


def test_eval_loader_in_order_keeps_last_batch_and_shards(digits):
    x, y = _all(digits.loader("test", 100, train=False))
    assert len(y) == 360 and torch.equal(y, digits.labels("test"))
    parts = [_all(digits.loader("test", 50, train=False, rank=r, world_size=3)) for r in range(3)]
    assert [len(p[1]) for p in parts] == [120, 120, 120]
    assert torch.equal(torch.cat([p[0] for p in parts]), x)
    assert len(digits.loader("test", 100, train=False)) == 4
    x2, _ = _all(digits.loader("test", 100, train=False, channels_last=True))
    assert x2.is_contiguous(memory_format=torch.channels_last) and torch.equal(x2, x)


def test_train_augmentation_is_crop_and_flip(digits):
    """Each augmented sample is a 4-pixel-padded crop, maybe flipped, of the image the
    epoch's permutation puts at its position."""
    loader = digits.loader("train", 32, train=True, seed=0)
    xa, ya = next(iter(loader))
    idx = loader.plan.permutation()[:32]
    x, y = digits._tensors["train"]
    assert torch.equal(ya, y[idx])
    m = torch.tensor(digits.mean).view(1, -1, 1, 1) * 255
    s = torch.tensor(digits.std).view(1, -1, 1, 1) * 255
    raw = (xa * s + m).round().to(torch.uint8)
    padded = torch.nn.functional.pad(x[idx], (4, 4, 4, 4))
    crops = padded.unfold(2, 32, 1).unfold(3, 32, 1)  # (B, C, 9, 9, 32, 32): every crop
    crops = crops.permute(0, 2, 3, 1, 4, 5).reshape(32, 81, 1, 32, 32)
    same = (crops == raw[:, None]).flatten(2).all(2).any(1)
    flipped = (crops.flip(-1) == raw[:, None]).flatten(2).all(2).any(1)
    assert (same | flipped).all()
    assert not same.all() and not flipped.all()  # both flipped and unflipped samples occur


def test_crop_flip_matches_a_per_sample_reference():
    x = torch.randint(0, 256, (16, 3, 8, 10), dtype=torch.uint8)
    dy, dx, flip = crop_flip_params(seed=1, epoch=0, b=0, global_batch=16)
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    out = crop_flip(padded, dy, dx, flip)
    for i in range(16):
        ref = padded[i, :, dy[i]:dy[i] + 8, dx[i]:dx[i] + 10]
        assert torch.equal(out[i], ref.flip(2) if flip[i] else ref)
    assert 0 < flip.sum() < 16 and dy.min() >= 0 and dy.max() <= 8


def test_loader_bad_arguments(digits):
    with pytest.raises(DataError, match="split"):
        digits.loader("validation", 8, train=False)
    with pytest.raises(DataError, match="rank"):
        digits.loader("train", 8, train=True, rank=2, world_size=2)
    with pytest.raises(DataError, match="batch"):
        digits.loader("train", 2000, train=True)
    with pytest.raises(DataError, match="start_batch"):
        digits.loader("train", 128, train=True, start_batch=11)
    with pytest.raises(DataError, match="unknown data"):
        load_data("mnist")
    with pytest.raises(ValueError):  # DataError is a ValueError: the CLI reports it in one line
        load_data("imagefolder:")


def test_import_cnnzoo_does_not_import_data():
    code = "import sys, cnnzoo; print('cnnzoo.data' in sys.modules, 'cnnzoo.train' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# --------------------------------------------------------------------------------------------
# Image folders (directory and zip), the cache


def _write_folder(root: Path, splits=(("train", 6), ("test", 3)), classes=("cat", "dog", "emu"),
                  size=(12, 10), seed=0) -> dict[str, list[tuple[np.ndarray, int]]]:
    """Lossless PNGs in ``root/<split>/<class>/``; returns what was written, per split."""
    rng = np.random.default_rng(seed)
    written: dict[str, list[tuple[np.ndarray, int]]] = {}
    for split, n in splits:
        for label, c in enumerate(classes):
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                arr = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
                Image.fromarray(arr).save(root / split / c / f"{i:03d}.png")
                written.setdefault(split, []).append((arr, label))
    (root / "train" / "README.txt").write_text("not an image: ignored")
    return written


def _zip(folder: Path, dest: Path, top: str = "") -> Path:
    with zipfile.ZipFile(dest, "w") as zf:
        for p in sorted(folder.rglob("*")):
            zf.write(p, top + p.relative_to(folder).as_posix())
    return dest


def _bundle_images(b: DataBundle, splits=("train", "val", "test")) -> list[str]:
    return _rows(torch.cat([b._tensors[s][0] for s in splits]))


def _written_rows(written, splits) -> list[str]:
    return _rows(torch.stack([torch.from_numpy(a).permute(2, 0, 1) for s in splits for a, _ in written[s]]))


def test_imagefolder_dir_and_zip_decode_exactly(tmp_path):
    written = _write_folder(tmp_path / "f")
    cache = str(tmp_path / "cache")
    d = load_data(f"imagefolder:{tmp_path / 'f'}", cache_dir=cache, val_size=3)
    z = load_data(f"imagefolder:{_zip(tmp_path / 'f', tmp_path / 'f.zip', top='wrapped/')}",
                  cache_dir=cache, val_size=3)
    for b in (d, z):
        assert b.class_names == ["cat", "dog", "emu"] and b.input_size == (3, 12, 10)
        assert b.sizes == {"train": 15, "val": 3, "test": 9}
        assert _bundle_images(b, ("train", "val")) == _written_rows(written, ["train"])
        assert _bundle_images(b, ("test",)) == _written_rows(written, ["test"])
        assert b.labels("test").tolist() == [0] * 3 + [1] * 3 + [2] * 3
    assert d.info["cache_file"] != z.info["cache_file"]
    small = load_data(f"imagefolder:{tmp_path / 'f'}", cache_dir=cache, image_size=8)
    assert small.input_size == (3, 8, 8) and next(iter(small.loader("test", 4, train=False)))[0].shape == (
        4, 3, 8, 8)


def test_imagefolder_with_val_and_test_uses_its_val(tmp_path):
    _write_folder(tmp_path, splits=(("train", 4), ("val", 2), ("test", 1)))
    b = load_data(f"imagefolder:{tmp_path}", cache_dir=str(tmp_path / "c"))
    assert b.sizes == {"train": 12, "val": 6, "test": 3} and b.info["val_from"] == "val folder"


def test_imagefolder_with_only_val_tests_on_it(tmp_path):
    """train/ + val/ (ImageNet style): val/ is held out as the test split, validation comes
    from train/, so the folder that reports the result never picks the checkpoint."""
    written = _write_folder(tmp_path / "f", splits=(("train", 4), ("val", 2)))
    b = load_data(f"imagefolder:{tmp_path / 'f'}", cache_dir=str(tmp_path / "c"), val_size=3)
    assert b.sizes == {"train": 9, "val": 3, "test": 6} and b.info["val_from"] == "train"
    assert _bundle_images(b, ("test",)) == _written_rows(written, ["val"])


def test_cache_rebuilds_when_a_directory_changes(tmp_path):
    _write_folder(tmp_path / "f")
    cache = str(tmp_path / "cache")
    spec = f"imagefolder:{tmp_path / 'f'}"
    first = load_data(spec, cache_dir=cache)
    assert not first.info["cache_hit"] and load_data(spec, cache_dir=cache).info["cache_hit"]
    new = np.full((12, 10, 3), 7, dtype=np.uint8)
    Image.fromarray(new).save(tmp_path / "f" / "test" / "dog" / "001.png")
    again = load_data(spec, cache_dir=cache)
    assert not again.info["cache_hit"] and again.info["cache_file"] != first.info["cache_file"]
    assert not os.path.exists(first.info["cache_file"])  # the stale file is gone
    assert (again._tensors["test"][0] == 7).all((1, 2, 3)).sum() == 1


def test_cache_key_of_a_zip_is_its_content(tmp_path):
    _write_folder(tmp_path / "f")
    cache = str(tmp_path / "cache")
    z = _zip(tmp_path / "f", tmp_path / "f.zip")
    first = load_data(f"imagefolder:{z}", cache_dir=cache)
    os.utime(z, (1, 1))  # touched, same content: still a hit
    assert load_data(f"imagefolder:{z}", cache_dir=cache).info["cache_hit"]
    Image.fromarray(np.zeros((12, 10, 3), np.uint8)).save(tmp_path / "f" / "train" / "cat" / "000.png")
    _zip(tmp_path / "f", z)  # one member's content changed
    again = load_data(f"imagefolder:{z}", cache_dir=cache)
    assert not again.info["cache_hit"] and again.info["cache_file"] != first.info["cache_file"]
    pool = torch.cat([again._tensors[s][0] for s in ("train", "val")])
    assert (pool == 0).all((1, 2, 3)).sum() == 1


def test_unreadable_cache_file_is_rebuilt(tmp_path):
    _write_folder(tmp_path / "f")
    spec, cache = f"imagefolder:{tmp_path / 'f'}", str(tmp_path / "cache")
    first = load_data(spec, cache_dir=cache)
    Path(first.info["cache_file"]).write_bytes(b"truncated")
    again = load_data(spec, cache_dir=cache)
    assert not again.info["cache_hit"] and _bundle_images(again) == _bundle_images(first)


def test_atomic_save_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "c.pt"
    atomic_save({"a": torch.arange(3)}, str(target))
    with pytest.raises(Exception):  # noqa: B017 - whatever pickling raises
        atomic_save({"a": lambda: 0}, str(target))
    assert os.listdir(tmp_path) == ["c.pt"]  # no temp file left behind
    assert torch.equal(torch.load(target, weights_only=True)["a"], torch.arange(3))


def test_corrupt_image_fails_naming_its_path(tmp_path):
    _write_folder(tmp_path / "f")
    bad = tmp_path / "f" / "train" / "dog" / "002.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match=r"cannot decode image .*train/dog/002\.png"):
        load_data(f"imagefolder:{tmp_path / 'f'}", cache_dir=str(tmp_path / "c"))
    z = _zip(tmp_path / "f", tmp_path / "f.zip")
    with pytest.raises(DataError, match=r"train/dog/002\.png in .*f\.zip") as e:
        load_data(f"imagefolder:{z}", cache_dir=str(tmp_path / "c"))
    assert "\n" not in str(e.value)
    assert not list((tmp_path / "c").glob("*.pt"))  # nothing half-written


def test_bad_folders_give_clear_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_data(f"imagefolder:{tmp_path / 'nope'}")
    (tmp_path / "bad.zip").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DataError, match="zip"):
        load_data(f"imagefolder:{tmp_path / 'bad.zip'}")
    _write_folder(tmp_path / "only_train", splits=(("train", 2),))
    with pytest.raises(DataError, match="val/<class>/ or test/<class>/"):
        load_data(f"imagefolder:{tmp_path / 'only_train'}")
    hidden = tmp_path / "empty" / ".hidden" / "train" / "a"  # hidden folders are not data
    hidden.mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(hidden / "0.png")
    with pytest.raises(DataError, match="train/<class>/"):
        load_data(f"imagefolder:{tmp_path / 'empty'}")


def test_unwritable_cache_dir_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("a file, not a folder")
    with pytest.raises(DataError, match="cannot write the data cache"):
        load_data("digits", cache_dir=str(tmp_path / "file"))


def test_streaming_path_follows_the_same_contract(tmp_path):
    _write_folder(tmp_path / "f", splits=(("train", 8), ("test", 3)))
    z = _zip(tmp_path / "f", tmp_path / "f.zip")
    cache = str(tmp_path / "c")  # where the image-size counts go
    b = load_data(f"imagefolder:{z}", stream=True, num_workers=0, val_size=4, cache_dir=cache)
    assert b.info["streaming"] and b.sizes == {"train": 20, "val": 4, "test": 9}
    assert b.input_size == (3, 10, 10)
    kw = dict(train=True, seed=1, epoch=1)
    one = list(b.loader("train", 8, **kw))
    halves = [list(b.loader("train", 4, rank=r, world_size=2, **kw)) for r in range(2)]
    assert len(one) == 2
    for (x, y), (x0, y0), (x1, y1) in zip(one, *halves, strict=True):
        assert torch.equal(x, torch.cat([x0, x1])) and torch.equal(y, torch.cat([y0, y1]))
    rest = list(b.loader("train", 8, start_batch=1, **kw))
    assert len(rest) == 1 and torch.equal(rest[0][0], one[1][0])
    x, y = _all(b.loader("test", 4, train=False))
    assert x.shape == (9, 3, 10, 10) and y.tolist() == [0] * 3 + [1] * 3 + [2] * 3
    # workers give the same batches as the main process, and a worker's error is one line
    w = load_data(f"imagefolder:{z}", stream=True, num_workers=2, val_size=4, cache_dir=cache)
    assert all(torch.equal(a[0], c[0]) for a, c in zip(one, w.loader("train", 8, **kw), strict=True))
    (tmp_path / "f" / "test" / "emu" / "001.png").write_bytes(b"garbage")
    z = _zip(tmp_path / "f", tmp_path / "f.zip")
    with pytest.raises(DataError, match=r"cannot decode image test/emu/001\.png in"):
        load_data(f"imagefolder:{z}", stream=True, val_size=4, cache_dir=cache)  # the size scan sees it
    # with image_size given nothing is read up front: the worker meets the bad file
    w = load_data(f"imagefolder:{z}", stream=True, num_workers=2, val_size=4, cache_dir=cache, image_size=10)
    with pytest.raises(DataError, match=r"cannot decode image test/emu/001\.png in") as e:
        list(w.loader("test", 4, train=False))
    assert "\n" not in str(e.value)


def _png16(a: np.ndarray) -> bytes:
    """A 16-bit PNG of ``a`` (uint16; (H, W) greyscale or (H, W, 3) colour), written by hand:
    Pillow cannot write 16-bit colour."""
    h, w = a.shape[:2]
    raw = b"".join(b"\0" + a[y].astype(">u2").tobytes() for y in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", w, h, 16, 0 if a.ndim == 2 else 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


def test_16_bit_images_keep_their_values(tmp_path):
    """16-bit greyscale (PNG opens as Pillow's "I;16", PGM as "I") decodes to each value's high
    byte, as Pillow decodes 16-bit colour PNGs; convert("RGB") used to clip them to 255."""
    rng = np.random.default_rng(0)
    values = [rng.integers(0, 65536, (6, 6), dtype=np.uint16) for _ in range(4)]  # square: streamable
    root = tmp_path / "f"
    for d in ("train/a", "train/b", "test/a", "test/b"):
        (root / d).mkdir(parents=True)
    (root / "train/a/0.png").write_bytes(_png16(values[0]))                      # greyscale
    (root / "train/b/0.png").write_bytes(_png16(np.stack([values[1]] * 3, -1)))  # colour
    (root / "test/a/0.pgm").write_bytes(b"P5 6 6 65535\n" + values[2].astype(">u2").tobytes())
    Image.fromarray((values[3] >> 8).astype(np.uint8)).save(root / "test/b/0.png")  # 8-bit twin
    with Image.open(root / "train/a/0.png") as im:
        assert im.mode == "I;16"
    expected = torch.from_numpy(np.stack([v >> 8 for v in values]).astype(np.uint8))
    expected = expected[:, None].expand(4, 3, 6, 6)
    b = load_data(f"imagefolder:{root}", cache_dir=str(tmp_path / "c"), val_size=0)
    assert torch.equal(torch.cat([b._tensors["train"][0], b._tensors["test"][0]]), expected)
    s = load_data(f"imagefolder:{root}", cache_dir=str(tmp_path / "c"), val_size=0, stream=True,
                  num_workers=0)  # the streaming path decodes the same way
    x, _ = _all(s.loader("test", 2, train=False))
    m, sd = (torch.tensor(v).view(1, 3, 1, 1) * 255 for v in (s.mean, s.std))
    assert torch.equal((x * sd + m).round().to(torch.uint8), expected[2:])


def test_mixed_sizes_resize_to_the_most_common_and_say_so(tmp_path, caplog, monkeypatch):
    root = tmp_path / "f"
    _write_folder(root, size=(12, 10))
    # the first training image used to set the size of everything
    Image.fromarray(np.zeros((3, 5, 3), np.uint8)).save(root / "train" / "cat" / "000.png")
    Image.fromarray(np.zeros((20, 8, 3), np.uint8)).save(root / "test" / "dog" / "001.png")
    spec, cache = f"imagefolder:{root}", str(tmp_path / "c")
    note = ("images have 3 different sizes; resizing all to 12x10 (the most common; set image_size / "
            "--image-size to choose)")
    with caplog.at_level(logging.WARNING, logger="cnnzoo.data"):
        b = load_data(spec, cache_dir=cache)
        assert b.input_size == (3, 12, 10) and b.info["size_note"] == note
        assert [r.getMessage() for r in caplog.records] == [f"{root}: {note}"]
        # the size counts are cached with the data: no header is read again, the same line is said
        monkeypatch.setattr("cnnzoo.data.bundle.image_sizes", lambda index: pytest.fail("headers read"))
        again = load_data(spec, cache_dir=cache)
        assert again.info["cache_hit"] and again.info["size_note"] == note and len(caplog.records) == 2
        square = load_data(spec, cache_dir=cache, image_size=8)  # a chosen size: nothing to say
        assert square.input_size == (3, 8, 8) and "size_note" not in square.info and len(caplog.records) == 2


# --------------------------------------------------------------------------------------------
# CIFAR (python-pickle format, read with a restricted unpickler)


def _write_cifar(root: Path, name: str, per_file: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    if name == "cifar10":
        folder, files, key = root / "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "labels"
        test, meta, meta_key, n_cls = "test_batch", "batches.meta", "label_names", 10
    else:
        folder, files, key = root / "cifar-100-python", ["train"], "fine_labels"
        test, meta, meta_key, n_cls = "test", "meta", "fine_label_names", 100
    folder.mkdir(parents=True)
    out = {"train_x": [], "train_y": []}
    for f in [*files, test]:
        data = rng.integers(0, 256, (per_file, 3072), dtype=np.uint8)
        labels = rng.integers(0, n_cls, per_file).tolist()
        with open(folder / f, "wb") as fh:
            pickle.dump({"data": data, key: labels}, fh)
        prefix = "test" if f == test else "train"
        out.setdefault(f"{prefix}_x", []).append(data.reshape(-1, 3, 32, 32))
        out.setdefault(f"{prefix}_y", []).append(labels)
    with open(folder / meta, "wb") as fh:
        pickle.dump({meta_key: [f"class{i}" for i in range(n_cls)]}, fh)
    return {k: np.concatenate(v) for k, v in out.items()}


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_reader_on_a_tiny_fake_dataset(tmp_path, name):
    truth = _write_cifar(tmp_path / "data", name)
    b = load_data(name, data_dir=str(tmp_path / "data"), cache_dir=str(tmp_path / "c"), val_size=2)
    n_train = len(truth["train_y"])
    assert b.sizes == {"train": n_train - 2, "val": 2, "test": len(truth["test_y"])}
    assert b.num_classes == (10 if name == "cifar10" else 100) and b.class_names[3] == "class3"
    assert torch.equal(b._tensors["test"][0], torch.from_numpy(truth["test_x"]))
    assert b.labels("test").tolist() == truth["test_y"].tolist()
    pool = torch.cat([b._tensors[s][0] for s in ("train", "val")])
    assert _rows(pool) == _rows(torch.from_numpy(truth["train_x"]))


def test_cifar_rebuilds_when_its_files_change(tmp_path):
    _write_cifar(tmp_path / "data", "cifar10")
    kw = dict(data_dir=str(tmp_path / "data"), cache_dir=str(tmp_path / "c"), val_size=0)
    first = load_data("cifar10", **kw)
    assert load_data("cifar10", **kw).info["cache_hit"]
    shutil.rmtree(tmp_path / "data")
    truth = _write_cifar(tmp_path / "data", "cifar10", seed=1)
    again = load_data("cifar10", **kw)
    assert not again.info["cache_hit"] and again.info["cache_file"] != first.info["cache_file"]
    assert torch.equal(again._tensors["test"][0], torch.from_numpy(truth["test_x"]))


def test_missing_cifar_says_where_to_put_it(tmp_path):
    with pytest.raises(DataError, match=r"cifar-10-batches-py.*download=True \(cnnzoo train --download\)"
                       ) as e:
        load_data("cifar10", data_dir=str(tmp_path), cache_dir=str(tmp_path / "c"))
    assert str(tmp_path) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(DataError, match=r"cifar-100-python"):
        load_data("cifar100", data_dir=str(tmp_path), cache_dir=str(tmp_path / "c"))
    _write_cifar(tmp_path, "cifar10")
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"\x80\x04 truncated")
    with pytest.raises(DataError, match="cannot read"):
        load_data("cifar10", data_dir=str(tmp_path), cache_dir=str(tmp_path / "c"))


def _py2_pickle(obj: object) -> bytes:
    """``obj`` (dicts, lists, str, int, uint8 arrays) pickled as Python 2's cPickle wrote the
    CIFAR files: protocol 2, strings as SHORT_BINSTRING/BINSTRING (str under
    ``encoding="latin1"``, bytes under ``encoding="bytes"``), arrays through
    ``numpy.core.multiarray._reconstruct`` with the raw bytes as a Python 2 string."""
    out = bytearray(b"\x80\x02")

    def emit(o):
        if isinstance(o, (str, bytes)):
            raw = o.encode("latin1") if isinstance(o, str) else o
            out.extend((b"U" + bytes([len(raw)])) if len(raw) < 256 else (b"T" + struct.pack("<i", len(raw))))
            out.extend(raw)
        elif isinstance(o, int):
            out.extend(b"J" + struct.pack("<i", o))
        elif isinstance(o, list):
            out.extend(b"](")
            for v in o:
                emit(v)
            out.extend(b"e")
        elif isinstance(o, dict):
            out.extend(b"}(")
            for k, v in o.items():
                emit(k)
                emit(v)
            out.extend(b"u")
        else:
            assert o.dtype == np.uint8
            out.extend(b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R(K\x01(")
            for d in o.shape:
                emit(d)
            out.extend(b"tcnumpy\ndtype\nU\x02u1K\x00K\x01\x87R"
                       b"(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89")
            emit(o.tobytes())
            out.extend(b"tb")

    emit(obj)
    return bytes(out + b".")


@pytest.mark.parametrize("writer", ["python2", "protocol2", "protocol5"])
@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_files_as_released_load_through_the_restricted_unpickler(tmp_path, name, writer):
    """Files with the real key names (b'data', b'labels' / b'fine_labels', b'batch_label',
    b'filenames'; meta b'label_names' / b'fine_label_names'), written as Python 2 wrote the
    released files or by Python 3 with bytes keys, load with their exact pixels and labels."""
    rng = np.random.default_rng(1)
    layout = CIFAR[name]
    n_cls = 10 if name == "cifar10" else 100
    folder = tmp_path / layout.folder
    folder.mkdir()

    def dump(obj: dict, f: str) -> None:
        if writer == "python2":
            data = _py2_pickle({k.decode(): v for k, v in obj.items()})
        else:
            data = pickle.dumps(obj, protocol=2 if writer == "protocol2" else 5)
        (folder / f).write_bytes(data)

    truth = {}
    for split, files in (("train", layout.train), ("test", (layout.test,))):
        xs, ys = [], []
        for f in files:
            x, y = rng.integers(0, 256, (3, 3072), dtype=np.uint8), rng.integers(0, n_cls, 3).tolist()
            batch = {b"batch_label": f"batch {f}", b"data": x, layout.label_key.encode(): y,
                     b"filenames": [f"{f}_{i}.png" for i in range(3)]}
            if name == "cifar100":
                batch[b"coarse_labels"] = [v // 5 for v in y]
            dump(batch, f)
            xs.append(x.reshape(3, 3, 32, 32))
            ys += y
        truth[split] = (torch.from_numpy(np.concatenate(xs)), ys)
    dump({layout.names_key.encode(): [f"class{i}" for i in range(n_cls)], b"num_vis": 3072}, layout.meta)
    b = load_data(name, data_dir=str(tmp_path), cache_dir=str(tmp_path / "c"), val_size=0)
    assert b.class_names == [f"class{i}" for i in range(n_cls)]
    for split in ("train", "test"):
        assert torch.equal(b._tensors[split][0], truth[split][0])
        assert b.labels(split).tolist() == truth[split][1]


def test_cifar_layout_matches_torchvision():
    """The file names, archive and md5 written out in cnnzoo.data.sources are torchvision's."""
    from torchvision.datasets import CIFAR10, CIFAR100

    for name, cls in (("cifar10", CIFAR10), ("cifar100", CIFAR100)):
        layout = CIFAR[name]
        assert layout.folder == cls.base_folder and layout.train == tuple(f for f, _ in cls.train_list)
        assert (layout.test,) == tuple(f for f, _ in cls.test_list) and layout.meta == cls.meta["filename"]
        assert layout.names_key == cls.meta["key"]
        assert (layout.archive, layout.url, layout.md5) == (cls.filename, cls.url, cls.tgz_md5)


# --------------------------------------------------------------------------------------------
# The real CIFAR-10 (JPEG q75) zip, on a subset


@pytest.mark.skipif(not SHARED_ZIP.is_file(), reason=f"{SHARED_ZIP} is absent (not shipped with the repo)")
def test_shared_cifar10_jpeg_zip_subset(tmp_path):
    b = load_data(f"imagefolder:{SHARED_ZIP}", cache_dir=str(tmp_path), subset=300, val_size=50)
    assert b.class_names[:3] == ["airplane", "automobile", "bird"] and b.num_classes == 10
    assert b.input_size == (3, 32, 32) and b.sizes == {"train": 250, "val": 50, "test": 300}
    assert len(set(b.labels("train").tolist())) == 10
    # statistics of real CIFAR-10 images, close to the published ones
    assert all(abs(m - r) < 0.05 for m, r in zip(b.mean, (0.4914, 0.4822, 0.4465), strict=True))
    # the first test image decodes to exactly what PIL gives for that member
    with zipfile.ZipFile(SHARED_ZIP) as zf:
        members = sorted(n for n in zf.namelist() if n.startswith("test/") and n.endswith(".jpg"))
        from cnnzoo.data.sources import subset_indices
        first = members[int(subset_indices(len(members), 300)[0])]
        ref = np.array(Image.open(io.BytesIO(zf.read(first))).convert("RGB"))
    assert torch.equal(b._tensors["test"][0][0], torch.from_numpy(ref).permute(2, 0, 1))
    x, y = next(iter(b.loader("train", 64, train=True)))
    assert x.shape == (64, 3, 32, 32) and torch.isfinite(x).all()
