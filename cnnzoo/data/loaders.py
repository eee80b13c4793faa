"""Batch iterators with one deterministic order: whole-batch on-device augmentation, or streaming.

Both loaders follow the same contract. For ``train=True``:

* the permutation of epoch ``e`` is a function of ``(seed, e)`` only;
* global batch ``b`` is positions ``[b*G, (b+1)*G)`` of it, ``G = batch_size * world_size``, and
  rank ``r`` takes positions ``[b*G + r*batch_size, b*G + (r+1)*batch_size)``; the last partial
  global batch is dropped;
* the augmentation of a sample depends only on ``(seed, e, b)`` and its position in the global
  batch, drawn from local generators; no global RNG is touched.

So one process with batch 128 and two with 64 see the same samples, augmented the same way, and
a run resumed at ``start_batch=b`` sees exactly the batches it would have seen.

For ``train=False`` the split is read in order, without augmentation, keeping the last partial
batch; with ``world_size > 1`` each rank reads one contiguous shard (``ceil(N / world_size)``
images, the last rank fewer).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import torch

from ._common import DataError, check_int, derive_seed, generator

PAD = 4  # pixels of zero padding for the random crop (He et al., 2016, CIFAR experiments)


def _check(batch_size: int, seed: int, epoch: int, rank: int, world_size: int, start_batch: int) -> None:
    for name, v, lo in (("batch_size", batch_size, 1), ("seed", seed, 0), ("epoch", epoch, 0),
                        ("world_size", world_size, 1), ("rank", rank, 0), ("start_batch", start_batch, 0)):
        check_int(name, v, lo)
    if rank >= world_size:
        raise DataError(f"rank must be < world_size ({world_size}), got {rank}")


class _Plan:
    """Which positions of the split every batch of this rank takes (indices into the split)."""

    def __init__(self, n: int, batch_size: int, *, train: bool, seed: int, epoch: int,
                 rank: int, world_size: int, start_batch: int):
        _check(batch_size, seed, epoch, rank, world_size, start_batch)
        self.n, self.batch_size, self.train = n, batch_size, train
        self.seed, self.epoch, self.rank, self.world_size = seed, epoch, rank, world_size
        self.start_batch = start_batch
        if train:
            self.global_batch = batch_size * world_size
            self.num_batches = n // self.global_batch
            if self.num_batches == 0 and n > 0:
                raise DataError(f"the training split has {n} images, fewer than one global batch of "
                                f"{self.global_batch} (batch size {batch_size} x {world_size} ranks); "
                                f"lower the batch size")
        else:
            per_rank = math.ceil(n / world_size)
            self.lo = min(n, rank * per_rank)
            self.hi = min(n, (rank + 1) * per_rank)
            self.num_batches = math.ceil((self.hi - self.lo) / batch_size)
        if start_batch > self.num_batches:
            raise DataError(f"start_batch {start_batch} is past the end of the epoch "
                            f"({self.num_batches} batches)")

    def permutation(self) -> torch.Tensor:
        return torch.randperm(self.n, generator=generator("epoch-perm", self.seed, self.epoch))

    def rank_slice(self) -> slice:
        """Positions, within a global batch, that belong to this rank."""
        return slice(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)

    def batches(self) -> Iterator[tuple[int, torch.Tensor]]:
        """``(b, indices)`` for every batch from ``start_batch`` on (indices into the split)."""
        if self.train:
            perm = self.permutation()
            for b in range(self.start_batch, self.num_batches):
                g = perm[b * self.global_batch:(b + 1) * self.global_batch]
                yield b, g[self.rank_slice()]
        else:
            for b in range(self.start_batch, self.num_batches):
                lo = self.lo + b * self.batch_size
                yield b, torch.arange(lo, min(self.hi, lo + self.batch_size))


def crop_flip_params(seed: int, epoch: int, b: int, global_batch: int, pad: int = PAD
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Offsets ``dy, dx`` in ``[0, 2*pad]`` and flips for one whole global batch (CPU, local RNG)."""
    g = generator("augment", seed, epoch, b)
    shifts = torch.randint(0, 2 * pad + 1, (2, global_batch), generator=g)
    flips = torch.randint(0, 2, (global_batch,), generator=g).bool()
    return shifts[0], shifts[1], flips


def crop_flip(xp: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor,
              pad: int = PAD) -> torch.Tensor:
    """Per-sample crop of an already zero-padded batch, then horizontal flip: two gathers.

    ``xp`` is (B, C, H + 2*pad, W + 2*pad) of any dtype; ``dy``, ``dx`` in ``[0, 2*pad]`` and
    ``flip`` are (B,) on ``xp``'s device. The flip is folded into the column indices, so it costs
    nothing extra. Returns (B, C, H, W).
    """
    B, C, Hp, Wp = xp.shape
    H, W = Hp - 2 * pad, Wp - 2 * pad
    rows = dy[:, None] + torch.arange(H, device=xp.device)                     # (B, H)
    cols = dx[:, None] + torch.arange(W, device=xp.device)                     # (B, W)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    xp = xp.gather(2, rows[:, None, :, None].expand(B, C, H, Wp))             # (B, C, H, W+2p)
    return xp.gather(3, cols[:, None, None, :].expand(B, C, H, W))            # (B, C, H, W)


class _Normalize:
    """uint8 (B, C, H, W) -> float32 ``(x/255 - mean) / std`` on the batch's device."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], device: torch.device):
        m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) * 255.0
        s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1) * 255.0
        self.mean, self.inv_std = m.to(device), (1.0 / s).to(device)

    def __call__(self, x: torch.Tensor, channels_last: bool) -> torch.Tensor:
        x = x.float().sub_(self.mean).mul_(self.inv_std)
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x


class TensorLoader:
    """Batches of a uint8 tensor already on ``device``, augmented there in whole batches.

    The tensor is stored zero-padded by ``PAD`` pixels on each side (padded once, at upload), so
    a training batch costs one row selection and two gathers, and an evaluation batch is a view
    of the padded store's center. The crop and flip parameters of a global batch come from a CPU
    generator seeded from ``(seed, epoch, batch)``, are sliced for this rank and moved to the
    device; indexing, cropping and normalizing run on the device.
    """

    def __init__(self, store: Callable[[], tuple[torch.Tensor, torch.Tensor]], n: int, batch_size: int, *,
                 train: bool, device: torch.device, mean: Sequence[float], std: Sequence[float],
                 seed: int = 0, epoch: int = 0, start_batch: int = 0, rank: int = 0, world_size: int = 1,
                 channels_last: bool = False):
        self.plan = _Plan(n, batch_size, train=train, seed=seed, epoch=epoch, rank=rank,
                          world_size=world_size, start_batch=start_batch)
        # ``store()`` gives the padded uint8 images and labels on the device; it is called only
        # when iterating, so ``len(loader)`` costs no upload
        self.store, self.device = store, device
        self.train, self.channels_last = train, channels_last
        self.normalize = _Normalize(mean, std, device)

    def __len__(self) -> int:
        return self.plan.num_batches

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        p, q = self.plan, PAD
        xp, y = self.store()
        for b, idx in p.batches():
            if self.train:
                idx = idx.to(self.device, non_blocking=True)
                dy, dx, flip = crop_flip_params(p.seed, p.epoch, b, p.global_batch)
                sl = p.rank_slice()
                dy, dx, flip = (t[sl].to(self.device, non_blocking=True) for t in (dy, dx, flip))
                xb = crop_flip(xp.index_select(0, idx), dy, dx, flip)
                yb = y.index_select(0, idx)
            else:  # contiguous rows, center of the padding: a view, copied only by normalization
                lo, hi = int(idx[0]), int(idx[-1]) + 1
                xb, yb = xp[lo:hi, :, q:-q, q:-q], y[lo:hi]
            yield self.normalize(xb, self.channels_last), yb


# --------------------------------------------------------------------------------------------
# Streaming: large image folders, decoded by DataLoader workers with torchvision transforms.


class _Batches(torch.utils.data.Sampler):
    """Batch sampler yielding ``[(index, sample_seed), ...]`` following a :class:`_Plan`."""

    def __init__(self, plan: _Plan):
        self.plan = plan

    def __len__(self) -> int:
        return self.plan.num_batches - self.plan.start_batch

    def __iter__(self):
        p = self.plan
        for b, idx in p.batches():
            base = b * p.global_batch + p.rank * p.batch_size if p.train else 0
            yield [(int(i), derive_seed("sample", p.seed, p.epoch, base + k) if p.train else 0)
                   for k, i in enumerate(idx)]


class StreamLoader:
    """A torch ``DataLoader`` over a streaming dataset, with the :class:`TensorLoader` interface.

    Samples and order follow the same plan as the tensor path; each training sample's transform
    runs under a forked RNG seeded from ``(seed, epoch, global position)``, so augmentations also
    do not depend on the number of workers, ranks or on resuming. Batches arrive as uint8 and are
    normalized on the device.
    """

    def __init__(self, dataset, batch_size: int, *, train: bool, device: torch.device,
                 mean: Sequence[float], std: Sequence[float], seed: int = 0, epoch: int = 0,
                 start_batch: int = 0, rank: int = 0, world_size: int = 1,
                 channels_last: bool = False, num_workers: int = 0):
        self.plan = _Plan(len(dataset), batch_size, train=train, seed=seed, epoch=epoch, rank=rank,
                          world_size=world_size, start_batch=start_batch)
        self.dataset, self.device, self.channels_last = dataset, device, channels_last
        self.num_workers = num_workers
        self.normalize = _Normalize(mean, std, device)

    def __len__(self) -> int:
        return self.plan.num_batches

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        loader = torch.utils.data.DataLoader(
            self.dataset, batch_sampler=_Batches(self.plan), num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
            # the workers' base seed is drawn from this generator, not from the global RNG
            generator=generator("workers", self.plan.seed, self.plan.epoch),
            prefetch_factor=4 if self.num_workers else None)
        it = iter(loader)
        while True:
            try:
                xb, yb = next(it)
            except StopIteration:
                return
            except DataError as e:  # a worker's error arrives with its traceback: keep one line
                lines = [ln for ln in str(e).splitlines() if ln.startswith(("DataError:", "cnnzoo"))]
                msg = lines[-1].split("DataError: ", 1)[-1] if lines else str(e).strip().splitlines()[-1]
                raise DataError(msg) from None
            xb = xb.to(self.device, non_blocking=True)
            yield self.normalize(xb, self.channels_last), yb.to(self.device, non_blocking=True)
