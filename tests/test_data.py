"""cnnzoo.data: splits, the deterministic batch contract, the uint8 cache, readers, bad input."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cnnzoo.data import DataBundle, DataError, load_data
from cnnzoo.data.bundle import split_train_val
from cnnzoo.data.loaders import crop_flip, crop_flip_params
from cnnzoo.data.sources import read_digits

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
    out = crop_flip(x, dy, dx, flip)
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
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
    code = "import sys, cnnzoo; print('cnnzoo.data' in sys.modules, 'sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
