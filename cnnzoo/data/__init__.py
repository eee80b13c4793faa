"""Datasets for training and evaluation: ``load_data(spec)`` -> :class:`DataBundle` -> loaders.

Small datasets (digits, CIFAR, image folders under a size threshold) are decoded once into a
uint8 tensor cache on disk (keyed by the source's content hash) and augmented in whole batches
on the training device; large image folders stream through DataLoader workers. Both follow one
deterministic batch order (see :mod:`cnnzoo.data.loaders`), so resuming mid-epoch and splitting
a batch across ranks give the same samples and augmentations.

Not imported by ``import cnnzoo``: ``from cnnzoo.data import load_data``.
"""

from ._common import DataError
from .bundle import DataBundle, load_data

__all__ = ["DataBundle", "DataError", "load_data"]
