"""The inference fast path: :func:`for_inference` returns a copy of a model prepared for evaluation only.

Every rewrite below computes the same function as the eval-mode original in exact arithmetic, so
in fp32 the outputs differ from the original's by rounding only:

* **BN after a conv folds into it.** An eval-mode BatchNorm is a per-channel affine map
  ``y = a x + c`` (``a = gamma / sqrt(running_var + eps)``, ``c = beta - a running_mean``). When
  a conv's output goes to that BN and nowhere else, ``W' = a W`` and ``b' = a b + c`` give the
  same outputs, whatever the conv's padding, stride or groups. "Nowhere else" is known from the
  structure, not guessed: consecutive children of an ``nn.Sequential`` (every
  :class:`~cnnzoo.layers.ConvNormAct`, a ResNet body and stem, VGG's ``features``), a ResNet
  projection shortcut (``conv`` -> ``norm``), and a DenseNet-B layer, whose 1x1 ``conv1``
  feeds only the 3x3's ``conv2.norm`` (:data:`_CHAINS`).
* **BN before a conv, with nothing between them, folds into the conv only when the conv has no
  padding** (``W' = W diag(a)``, ``b' = b + W c``): on a zero-padded border the original conv
  sees zeros where the folded one would see ``c``. cnnzoo's pre-activation bricks have a ReLU
  between the two, so this applies only to models built with ``act_layer=None``.
* **Pre-activation BNs** (BN -> ReLU -> conv) fold into no conv: the ReLU sits before the
  following conv, and the tensor they read is read elsewhere too. In a DenseNet that tensor is
  a concatenation of earlier layers' features, which every later layer reads with its own BN:
  there, the concatenation and the BN on it become one :class:`AffineConcat`, which writes each
  input's scaled and shifted channels straight into the output (one pass over the features
  instead of a copy and a BN pass); the same for the transitions and the final BN. In a
  pre-activation ResNet the BN reads the sum of a unit, which the next unit's shortcut also
  reads un-normalized: that BN stays (an eval BN is already a single scale-and-shift pass).
  So does the BN after the addition of the ``bn_after_add`` ordering.
* **A 1x1 conv followed by an average pool** (a DenseNet transition) runs the pool first:
  both are linear, the pool's weights sum to one and the conv acts on each pixel alike, so they
  commute (``padding=0`` pools only); the conv then costs a quarter of the multiply-adds.
* **Dropout and stochastic depth** become ``nn.Identity``.
* **Memory format and precision**: channels-last weights and inputs, optionally another
  floating ``dtype`` (``torch.bfloat16``: inputs are cast on the way in, outputs are in
  ``dtype``), optionally ``torch.compile`` with weight freezing.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Iterator

import torch
import torch.nn as nn

from .layers import DropPath, NormActConv
from .models.densenet import DenseLayer, DenseNet, DenseStage, Transition
from .models.resnet import ProjectionShortcut

_BN = nn.modules.batchnorm._BatchNorm
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)

# Children whose output feeds the other named child only (``forward`` is ``second(first(x))``),
# beyond the consecutive children of an ``nn.Sequential``.
_CHAINS: dict[type, tuple[tuple[str, str], ...]] = {
    ProjectionShortcut: (("conv", "norm"),),
    DenseLayer: (("conv1", "conv2"),),
    DenseNet: (("stages", "final"),),
}


def for_inference(model: nn.Module, *, channels_last: bool = True, fold_bn: bool = True,
                  dtype: torch.dtype | None = None, compile: bool = False) -> nn.Module:
    """A copy of ``model`` for evaluation only, faster on the same hardware (see the module docstring).

    ``model`` itself is left untouched. The copy is in eval mode, its parameters need no
    gradient, and calling it in training mode raises ``RuntimeError``. ``fold_bn`` folds or
    fuses every batch norm that can be (the BNs it leaves are listed in the module docstring);
    ``channels_last`` converts weights and inputs to the channels-last memory format;
    ``dtype`` (e.g. ``torch.bfloat16``) casts weights, and inputs as they arrive; ``compile``
    wraps the copy in ``torch.compile`` with inductor's weight freezing (compiled on the first
    call). In fp32 the outputs equal the original's up to rounding.
    """
    if dtype is not None and (not isinstance(dtype, torch.dtype) or not dtype.is_floating_point):
        raise ValueError(f"dtype must be a floating torch.dtype such as torch.bfloat16, got {dtype!r}")
    model = copy.deepcopy(model).eval()
    model.requires_grad_(False)
    remove_dropout(model)
    if fold_bn:
        fold_batchnorms(model)
    pool_before_pointwise_conv(model)
    if dtype is not None:
        model.to(dtype)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    model.register_forward_pre_hook(_PrepareInput(dtype, channels_last))
    if compile:
        return torch.compile(model, options={"freezing": True})
    return model


_reusing_freed_memory = False

# glibc's mallopt parameters (<malloc.h>).
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def reuse_freed_memory() -> bool:
    """Make this process keep the memory tensors free, for later tensors; ``True`` where applied.

    glibc's ``malloc`` serves every block over 32 MB with a fresh ``mmap`` and unmaps it on
    ``free``, so each such tensor (a ResNet-50 stage-1 activation: 51 MB at batch 16, 224x224)
    is paid for again in page faults as it is first written: about 92,000 of them in one call of
    ResNet-50's fast path at batch 16 (docs/performance.md). This tells glibc (``mallopt``)
    not to ``mmap`` blocks of their own and not to return freed memory at the heap's top to the
    system until it exceeds 2 GB: what preloading jemalloc or tcmalloc gets, as the PyTorch
    tuning guide suggests, and the same as starting the process with ``MALLOC_MMAP_MAX_=0
    MALLOC_TRIM_THRESHOLD_=<large>``.

    The cost: the process keeps its peak memory. It affects the whole process and every library
    in it, lasts until the process ends, and cnnzoo never does it implicitly (``cnnzoo bench
    --reuse-memory`` asks for it). Where the C library is not glibc (macOS, Windows, musl) it
    changes nothing and returns ``False``.
    """
    global _reusing_freed_memory
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    ok = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(2**31 - 1)) == 1
    _reusing_freed_memory = _reusing_freed_memory or ok
    return ok


def reusing_freed_memory() -> bool:
    """Whether :func:`reuse_freed_memory` has been applied in this process."""
    return _reusing_freed_memory


class _PrepareInput:
    """Forward pre-hook of a :func:`for_inference` model: refuse training mode, cast the input."""

    def __init__(self, dtype: torch.dtype | None, channels_last: bool):
        self.dtype, self.channels_last = dtype, channels_last

    def __call__(self, module: nn.Module, args: tuple) -> tuple:
        if module.training:
            raise RuntimeError("this model was prepared by cnnzoo.optimize.for_inference for evaluation "
                               "only (BNs folded, dropout removed); train the original model instead")
        if not args or not torch.is_tensor(args[0]) or not args[0].is_floating_point():
            return args
        x = args[0]
        fmt = torch.channels_last if self.channels_last and x.dim() == 4 else torch.preserve_format
        return (x.to(dtype=self.dtype or x.dtype, memory_format=fmt), *args[1:])


# --------------------------------------------------------------------------------------------
# Folding.


def _foldable_bn(m: nn.Module | None) -> bool:
    """A batch norm whose eval-mode output is a fixed affine map (running statistics kept)."""
    return isinstance(m, _BN) and m.track_running_stats and m.running_mean is not None


def _affine_of(bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """``(a, c)`` in float64 with ``bn(x) = a x + c`` per channel, in eval mode."""
    var, mean = bn.running_var.double(), bn.running_mean.double()
    a = torch.rsqrt(var + bn.eps)
    c = -mean * a
    if bn.weight is not None:
        a, c = a * bn.weight.double(), c * bn.weight.double()
    if bn.bias is not None:
        c = c + bn.bias.double()
    return a, c


def _set_conv(conv: nn.Module, weight: torch.Tensor, bias: torch.Tensor) -> None:
    ref = conv.weight
    conv.weight = nn.Parameter(weight.to(ref.dtype), requires_grad=ref.requires_grad)
    conv.bias = nn.Parameter(bias.to(ref.dtype), requires_grad=ref.requires_grad)


def _fold_after(conv: nn.Module, bn: nn.Module) -> None:
    """conv -> bn becomes one conv (exact for any padding, stride, groups)."""
    a, c = _affine_of(bn)
    w = conv.weight.double() * a.view(-1, *[1] * (conv.weight.dim() - 1))
    b = conv.bias.double() * a + c if conv.bias is not None else c
    _set_conv(conv, w, b)


def _fold_before(bn: nn.Module, conv: nn.Module) -> None:
    """bn -> conv becomes one conv; the caller has checked the conv pads nothing."""
    a, c = _affine_of(bn)
    out_chs, in_per_group = conv.weight.shape[:2]
    # The input channel that weight[o, i] reads: group (o // out_per_group), channel i in it.
    groups = conv.groups
    a = a.view(groups, 1, in_per_group).expand(groups, out_chs // groups, in_per_group).reshape(out_chs, -1)
    c = c.view(groups, 1, in_per_group).expand(groups, out_chs // groups, in_per_group).reshape(out_chs, -1)
    extra = [1] * (conv.weight.dim() - 2)
    w64 = conv.weight.double()
    b = (w64 * c.view(out_chs, in_per_group, *extra)).flatten(1).sum(1)
    if conv.bias is not None:
        b = b + conv.bias.double()
    _set_conv(conv, w64 * a.view(out_chs, in_per_group, *extra), b)


def _pads_nothing(conv: nn.Module) -> bool:
    return conv.padding == "valid" or all(p == 0 for p in conv.padding)


def _is_plain_sequential(m: nn.Module) -> bool:
    """An ``nn.Sequential`` (or subclass) that keeps Sequential's forward: children in a row."""
    return isinstance(m, nn.Sequential) and type(m).forward is nn.Sequential.forward


Site = tuple[nn.Module, str, nn.Module]  # (parent, attribute name, module)


def _edge(parent: nn.Module, name: str, module: nn.Module, last: bool) -> Site | None:
    """The module at the exit (``last``) or entry of ``module``'s data flow, descending through
    plain Sequentials and skipping ``nn.Identity``; ``None`` for a pure Identity."""
    while _is_plain_sequential(module):
        kids = [(n, m) for n, m in module.named_children() if not isinstance(m, nn.Identity)]
        if not kids:
            return None
        parent, (name, module) = module, kids[-1] if last else kids[0]
    return None if isinstance(module, nn.Identity) else (parent, name, module)


def _adjacent(model: nn.Module) -> Iterator[tuple[Site, Site]]:
    """Pairs of modules where the first's output is the second's input and goes nowhere else."""
    for m in model.modules():
        pairs: list[tuple[str, str]] = []
        if _is_plain_sequential(m):
            kids = [n for n, c in m.named_children() if not isinstance(c, nn.Identity)]
            pairs = list(zip(kids[:-1], kids[1:], strict=True))
        for cls, chains in _CHAINS.items():
            if isinstance(m, cls):
                pairs += chains
        for first, second in pairs:
            a = _edge(m, first, getattr(m, first), last=True)
            b = _edge(m, second, getattr(m, second), last=False)
            if a is not None and b is not None:
                yield a, b


def fold_batchnorms(model: nn.Module) -> int:
    """Fold or fuse, in place, every BatchNorm of an eval-mode ``model`` that can be; returns how many.

    What folds where, and what cannot, is in the module docstring. The result computes the
    model's eval-mode function only; :func:`for_inference` calls this on a copy.
    """
    if model.training:
        raise ValueError("fold_batchnorms needs an eval-mode model (call model.eval() first): folding "
                         "uses the running statistics")
    done = _fuse_dense_concatenations(model)
    folded: set[int] = set()
    for (pa, na, a), (pb, nb, b) in list(_adjacent(model)):
        if id(a) in folded or id(b) in folded:
            continue
        if isinstance(a, _CONVS) and _foldable_bn(b) and a.out_channels == b.num_features:
            _fold_after(a, b)
            setattr(pb, nb, nn.Identity())
            folded.add(id(b))
        elif (_foldable_bn(a) and isinstance(b, _CONVS) and _pads_nothing(b)
              and a.num_features == b.in_channels):
            _fold_before(a, b)
            setattr(pa, na, nn.Identity())
            folded.add(id(a))
        elif isinstance(a, _DenseStageForInference) and _foldable_bn(b) and a.take_output_norm(b):
            setattr(pb, nb, nn.Identity())
            folded.add(id(b))
    return done + len(folded)


# --------------------------------------------------------------------------------------------
# DenseNet: the BN on a concatenation, fused into it.


class AffineConcat(nn.Module):
    """``bn(torch.cat(xs, 1))`` of an eval-mode BatchNorm ``bn`` in one pass, without the copy.

    Each input's channels are scaled and shifted straight into their place in the output (one
    ``addcmul`` per input). Without ``bn`` it is ``torch.cat(xs, 1)``.
    """

    def __init__(self, bn: nn.Module | None = None):
        super().__init__()
        self.affine = bn is not None
        if bn is not None:
            a, c = _affine_of(bn)
            dtype = bn.running_mean.dtype
            self.register_buffer("scale", a.to(dtype).view(1, -1, 1, 1))
            self.register_buffer("shift", c.to(dtype).view(1, -1, 1, 1))

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        if not self.affine:
            return torch.cat(xs, 1)
        x0 = xs[0]
        fmt = (torch.channels_last if x0.is_contiguous(memory_format=torch.channels_last)
               and not x0.is_contiguous() else torch.contiguous_format)
        n, _, h, w = x0.shape
        out = torch.empty((n, self.scale.shape[1], h, w), dtype=x0.dtype, device=x0.device, memory_format=fmt)
        start = 0
        for x in xs:
            end = start + x.shape[1]
            torch.addcmul(self.shift[:, start:end], x, self.scale[:, start:end], out=out[:, start:end])
            start = end
        return out

    def extra_repr(self) -> str:
        return f"channels={self.scale.shape[1]}" if self.affine else "plain"


class _DenseStageForInference(nn.Module):
    """A :class:`~cnnzoo.models.densenet.DenseStage` whose concatenations carry the BN that reads
    them: each layer's ``conv1.norm`` and the transition's ``norm`` move into an :class:`AffineConcat`.
    After the last stage (no transition) the model's final BN can move in too
    (:meth:`take_output_norm`)."""

    def __init__(self, stage: DenseStage):
        super().__init__()
        self.layers = stage.layers
        concats = []
        for layer in self.layers:
            bn = layer.conv1.norm if isinstance(layer.conv1, NormActConv) else None
            concats.append(AffineConcat(bn if _foldable_bn(bn) else None))
            if _foldable_bn(bn):
                layer.conv1.norm = nn.Identity()
        self.concats = nn.ModuleList(concats)
        self.transition = stage.transition
        bn = stage.transition.norm if isinstance(stage.transition, Transition) else None
        self.out_concat = AffineConcat(bn if _foldable_bn(bn) else None)
        if _foldable_bn(bn):
            self.transition.norm = nn.Identity()

    def take_output_norm(self, bn: nn.Module) -> bool:
        """Fuse ``bn``, which reads this stage's output alone, into the output concatenation."""
        if self.out_concat.affine or not isinstance(self.transition, nn.Identity):
            return False
        self.out_concat = AffineConcat(bn)
        return True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer, concat in zip(self.layers, self.concats, strict=True):
            # DenseLayer.forward, its concatenation (and the BN on it) done by ``concat``.
            features.append(layer.drop(layer.attn(layer.conv2(layer.conv1(concat(features))))))
        out = self.out_concat(features)
        del features, x  # as in DenseStage.forward: freed before the transition runs
        return self.transition(out)


def _fuse_dense_concatenations(model: nn.Module) -> int:
    """Replace every DenseStage by a :class:`_DenseStageForInference`; returns the BNs fused."""
    sites = [(parent, name, child) for parent in model.modules()
             for name, child in parent.named_children() if isinstance(child, DenseStage)]
    fused = 0
    for parent, name, stage in sites:
        new = _DenseStageForInference(stage)
        fused += sum(c.affine for c in new.concats) + new.out_concat.affine
        setattr(parent, name, new)
    return fused


# --------------------------------------------------------------------------------------------
# Other rewrites.


def remove_dropout(model: nn.Module) -> int:
    """Replace, in place, every dropout and stochastic-depth module by ``nn.Identity``; returns how many."""
    sites = [(parent, name) for parent in model.modules() for name, child in parent.named_children()
             if isinstance(child, (nn.modules.dropout._DropoutNd, DropPath))]
    for parent, name in sites:
        setattr(parent, name, nn.Identity())
    return len(sites)


def _commutes_with_pool(conv: nn.Module, pool: nn.Module) -> bool:
    """A per-pixel affine map (1x1 conv, stride 1, no padding) and an average pool whose weights
    sum to one (no padding, no divisor override) give the same result in either order."""
    return (isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1) and conv.stride == (1, 1)
            and _pads_nothing(conv) and isinstance(pool, nn.AvgPool2d) and pool.divisor_override is None
            and all(p == 0 for p in nn.modules.utils._pair(pool.padding)))


def pool_before_pointwise_conv(model: nn.Module) -> int:
    """In every plain Sequential, run an average pool before the 1x1 conv it follows, where the
    two commute (:func:`_commutes_with_pool`); returns how many were moved."""
    moved = 0
    for m in model.modules():
        if not _is_plain_sequential(m):
            continue
        names = list(m._modules)
        for i in range(len(names) - 1):
            if _commutes_with_pool(m._modules[names[i]], m._modules[names[i + 1]]):
                names[i], names[i + 1] = names[i + 1], names[i]
                moved += 1
        if names != list(m._modules):
            m._modules = OrderedDict((n, m._modules[n]) for n in names)
    return moved
