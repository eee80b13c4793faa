"""Theoretical receptive fields: the algebra of one feature map's field and how ops change it.

A feature map's units all see windows of the same size, spaced by the same effective stride
("jump"), so one small record per axis describes them all (Araujo et al., "Computing Receptive
Fields of Convolutional Neural Networks", Distill 2019):

* ``size``: how many input pixels one unit sees along the axis;
* ``stride``: how many input pixels apart two neighbouring units' fields are;
* ``left``: the input index of the first pixel seen by unit 0 (negative inside the padding).

A window op (convolution, pooling) with kernel ``k``, stride ``s``, padding ``p``, dilation
``d`` maps ``(size, stride, left)`` to
``(size + (d (k - 1)) stride, stride s, left - p stride)``. Where paths meet (a residual
addition, an Inception or DenseNet concatenation) a unit sees the union of what each path
sees, which for aligned paths is the larger field.

The tracer that applies this to a whole network lives in :mod:`cnnzoo.analysis.profile`;
:func:`receptive_field` is its shortcut.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch.nn as nn


@dataclass(frozen=True)
class RF:
    """The receptive field of the units of one feature map, per axis ``(H, W)``.

    ``is_global`` marks tensors that no longer have a spatial layout, or whose every element
    depends on the whole input (after global pooling or flattening); their other fields are
    meaningless.
    """

    size: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    left: tuple[int, int] = (0, 0)
    is_global: bool = False

    @property
    def center(self) -> tuple[float, float]:
        """Input coordinates of the centre of unit (0, 0)'s field."""
        return tuple(lf + (sz - 1) / 2 for lf, sz in zip(self.left, self.size, strict=True))

    def center_of(self, index: Sequence[int]) -> tuple[float, float]:
        """Input coordinates of the centre of unit ``index`` = (row, column)'s field."""
        return tuple(c + i * j for c, i, j in zip(self.center, index, self.stride, strict=True))

    def window(self, kernel: Sequence[int], stride: Sequence[int], padding: Sequence[int],
               dilation: Sequence[int] = (1, 1)) -> RF:
        """The field after a convolution or pooling window applied to this map."""
        if self.is_global:
            return self
        size, jump, left = [], [], []
        for a in range(2):
            k_eff = dilation[a] * (kernel[a] - 1) + 1
            size.append(self.size[a] + (k_eff - 1) * self.stride[a])
            left.append(self.left[a] - padding[a] * self.stride[a])
            jump.append(self.stride[a] * stride[a])
        return RF(tuple(size), tuple(jump), tuple(left))

    def crop(self, axis: int, begin: int, step: int = 1) -> RF:
        """Keep every ``step``-th unit from ``begin`` on along ``axis`` (strided slicing)."""
        if self.is_global:
            return self
        jump, left = list(self.stride), list(self.left)
        left[axis] += begin * jump[axis]
        jump[axis] *= step
        return RF(self.size, tuple(jump), tuple(left))

    def pad(self, axis: int, before: int) -> RF:
        """Add ``before`` units in front along ``axis`` (constant padding; negative crops)."""
        return self.crop(axis, -before)

    @staticmethod
    def union(fields: Iterable[RF]) -> RF:
        """Where paths meet (add, concatenation): each unit sees everything any path sees."""
        fields = list(fields)
        if not fields:
            raise ValueError("union of no receptive fields")
        if any(f.is_global for f in fields):
            return GLOBAL
        size, left = [], []
        for a in range(2):
            lo = min(f.left[a] for f in fields)
            hi = max(f.left[a] + f.size[a] for f in fields)
            size.append(hi - lo)
            left.append(lo)
        jump = tuple(max(f.stride[a] for f in fields) for a in range(2))
        return RF(tuple(size), jump, tuple(left))


GLOBAL = RF(is_global=True)


def rf_of_stack(kernels: Sequence[int], strides: Sequence[int] | None = None) -> int:
    """Receptive field of a plain stack of square windows (``rf_of_stack([3, 3]) == 5``)."""
    strides = strides or [1] * len(kernels)
    rf = RF()
    for k, s in zip(kernels, strides, strict=True):
        rf = rf.window((k, k), (s, s), (0, 0))
    return rf.size[0]


def receptive_field(model: nn.Module, input_size: Sequence[int] | None = None,
                    at: str | None = None) -> RF:
    """The theoretical receptive field of ``model``'s last feature map (or of module ``at``).

    Traces one forward pass (see :func:`cnnzoo.analysis.profile`), so residual units,
    Inception branches and dense blocks are followed along every path. ``at`` names a module
    as in ``model.named_modules()``; its output's field is returned.
    """
    from .profile import profile

    result = profile(model, input_size)
    if at is None:
        if result.rf is None:
            raise ValueError("the model has no spatial feature map")
        return result.rf
    if at not in result.rf_at:
        raise ValueError(f"no module named {at!r} ran in the forward pass")
    return result.rf_at[at]
