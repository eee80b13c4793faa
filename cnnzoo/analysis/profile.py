"""Parameters, multiply-adds, other operations, activations and receptive fields of a model.

:func:`profile` runs one forward pass at batch size 1 and watches every ATen operation (a
``TorchDispatchMode``) while module hooks say which layer is running. Each activation tensor
carries its receptive field (:class:`~cnnzoo.analysis.receptive_field.RF`), so residual
additions, Inception concatenations and dense blocks combine the fields of every path that
reaches them; a purely sequential walk over the layers could not.

Counting conventions (the same as torchvision's published "GFLOPS", which are multiply-adds):

* ``macs``: multiply-accumulates of convolutions (``out_elements * in_channels / groups * kh
  * kw``, any stride or grouping) and matrix products (linear layers). Biases are not MACs.
* ``flops``: always ``2 * macs`` (one multiply and one add), the convention of PyTorch's own
  ``FlopCounterMode``.
* ``other_ops``: everything else, one operation per element: bias additions and activations
  (1 per output element), normalization (2: scale and shift, inference form), pooling (kernel
  area per output element; global pooling and means: 1 per input element), element-wise adds
  and products (residual additions, SE gating: 1 per output element), concatenation and
  padding (1 copy per output element). Views cost nothing.
* ``activation_bytes``: the fp32 size of every new tensor the forward pass computes from the
  input (the outputs of convs, norms, additions, concatenations...), counted once; in-place
  ops and views allocate nothing. This is what training keeps for the backward pass when
  nothing is recomputed.

The model may live on the ``meta`` device: shapes are all that is needed, so profiling
a 140M-parameter VGG costs no memory and no arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from ..models._base import count_params
from .receptive_field import GLOBAL, RF

BYTES_PER_ELEMENT = 4  # activations are reported in fp32 whatever the model's dtype

_CONV = {"convolution", "_convolution", "conv2d", "mkldnn_convolution", "cudnn_convolution"}
_MATMUL = {"addmm", "mm", "bmm", "matmul", "linear"}
_WINDOW_POOL = {"max_pool2d", "max_pool2d_with_indices", "avg_pool2d"}
_ADAPTIVE_POOL = {"_adaptive_avg_pool2d", "adaptive_avg_pool2d", "adaptive_max_pool2d"}
_REDUCE = {"mean", "sum", "amax", "amin", "max", "min", "var", "std", "var_mean", "std_mean"}
_NORM_WORDS = ("batch_norm", "group_norm", "layer_norm", "instance_norm")
_COPY = {"cat", "constant_pad_nd"}
_FREE = {"clone", "_to_copy", "copy", "contiguous", "detach", "lift_fresh", "alias"}
# Ops whose tensor inputs only give a shape or dtype, not data.
_NO_DATA = {"new_empty", "new_zeros", "new_ones", "new_full", "empty_like", "zeros_like",
            "ones_like", "full_like", "rand_like", "randn_like", "new_empty_strided"}


@dataclass
class LayerRow:
    """One row of the per-layer table: a leaf module's call, or an op a container ran itself
    (a residual addition ``stages.0.0.add``, a concatenation ``inception3a.cat``)."""

    name: str
    type: str
    output_shape: tuple[int, ...] = ()
    params: int = 0
    macs: int = 0
    other_ops: int = 0
    rf: RF = GLOBAL
    stage: str = ""
    ancestors: tuple[str, ...] = field(default=(), repr=False)  # enclosing modules, outermost first

    @property
    def receptive_field(self) -> int | None:
        return None if self.rf.is_global else max(self.rf.size)

    @property
    def effective_stride(self) -> int | None:
        return None if self.rf.is_global else max(self.rf.stride)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "type": self.type, "stage": self.stage,
            "output_shape": list(self.output_shape), "params": self.params, "macs": self.macs,
            "other_ops": self.other_ops, "receptive_field": self.receptive_field,
            "effective_stride": self.effective_stride,
        }


@dataclass
class ProfileResult:
    """What :func:`profile` measured. ``flops`` is ``2 * macs`` by definition.

    ``receptive_field`` and ``effective_stride`` are those of the last feature map (the last
    output that still has a spatial layout, before global pooling); for a non-square field
    the larger side is given and ``rf`` holds both. ``rf_at`` maps every module that ran to
    the field of its output. ``notes`` lists approximations the tracer had to make.
    """

    input_size: tuple[int, int, int]
    params: int
    macs: int
    other_ops: int
    activation_bytes: int
    rf: RF | None
    layers: list[LayerRow]
    rf_at: dict[str, RF] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    name: str = ""

    @property
    def flops(self) -> int:
        return 2 * self.macs

    @property
    def receptive_field(self) -> int | None:
        return None if self.rf is None else max(self.rf.size)

    @property
    def effective_stride(self) -> int | None:
        return None if self.rf is None else max(self.rf.stride)

    def stages(self) -> list[dict[str, Any]]:
        """Per-stage totals: layers grouped by the effective stride of their output (the
        paper tables' "output size" rows: ResNet's conv2_x includes its max-pool), then the head."""
        out: dict[str, dict[str, Any]] = {}
        for row in self.layers:
            s = out.setdefault(row.stage, {"stage": row.stage, "layers": 0, "output_shape": (),
                                           "params": 0, "macs": 0, "other_ops": 0,
                                           "receptive_field": None, "effective_stride": None})
            s["layers"] += 1
            s["params"] += row.params
            s["macs"] += row.macs
            s["other_ops"] += row.other_ops
            if not row.rf.is_global or row.stage == "head":
                s["output_shape"] = row.output_shape
                s["receptive_field"] = row.receptive_field
                s["effective_stride"] = row.effective_stride
        for s in out.values():
            s["output_shape"] = list(s["output_shape"])
        return list(out.values())

    def to_dict(self, layers: bool = True) -> dict[str, Any]:
        """JSON-ready dict; the schema is documented in ``docs/analysis.md``."""
        d: dict[str, Any] = {
            "model": self.name, "input_size": list(self.input_size), "params": self.params,
            "macs": self.macs, "flops": self.flops, "flops_convention": "2 * macs",
            "other_ops": self.other_ops, "receptive_field": self.receptive_field,
            "effective_stride": self.effective_stride, "activation_bytes": self.activation_bytes,
            "stages": self.stages(),
        }
        if layers:
            d["layers"] = [r.to_dict() for r in self.layers]
        d["notes"] = list(self.notes)
        return d


# --------------------------------------------------------------------------------------------
# The tracer.


def _base_name(func) -> str:
    name = func.overloadpacket.__name__
    return name[:-1] if name.endswith("_") and not name.endswith("__") else name


def _bind(func, args: tuple, kwargs: dict) -> dict[str, Any]:
    """Arguments by schema name, defaults filled in."""
    out: dict[str, Any] = {}
    for i, a in enumerate(func._schema.arguments):
        if i < len(args):
            out[a.name] = args[i]
        elif a.name in kwargs:
            out[a.name] = kwargs[a.name]
        elif a.has_default_value():
            out[a.name] = a.default_value
    return out


def _pair(v, default: int) -> tuple[int, int]:
    if v is None or (isinstance(v, (list, tuple)) and len(v) == 0):
        return (default, default)
    if isinstance(v, int):
        return (v, v)
    v = list(v)
    return (v[0], v[0]) if len(v) == 1 else (v[-2], v[-1])


def _aliases(func) -> bool:
    """The op returns (a view of) one of its inputs: in place or a view, nothing allocated."""
    r = func._schema.returns
    return bool(r) and r[0].alias_info is not None


def _is_view(func) -> bool:
    r = func._schema.returns
    return bool(r) and r[0].alias_info is not None and not r[0].alias_info.is_write


def _spatial(t: torch.Tensor) -> tuple[int, int] | None:
    return tuple(t.shape[-2:]) if t.ndim >= 3 else None


def _first_tensor(out) -> torch.Tensor | None:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (list, tuple)):
        for o in out:
            if isinstance(o, torch.Tensor):
                return o
    return None


def _shape_str(t: torch.Tensor) -> str:
    return "x".join(map(str, t.shape[1:] if t.ndim >= 2 else t.shape))


@dataclass
class _Frame:
    name: str
    module: nn.Module
    leaf: bool
    row: LayerRow | None = None


class _Tracer(TorchDispatchMode):
    def __init__(self, input_desc: str = ""):
        super().__init__()
        self.input_desc = input_desc
        self.info: dict[int, RF] = {}
        self.keep: list[torch.Tensor] = []  # keeps traced tensors alive so ids stay unique
        self.frames: list[_Frame] = []
        self.rows: list[LayerRow] = []
        self.rf_at: dict[str, RF] = {}
        self.rf_in: dict[str, RF] = {}
        self.seen_params: set[int] = set()
        self.activation_elems = 0
        self.notes: list[str] = []

    # -- tensor bookkeeping
    def get(self, t) -> RF | None:
        return self.info.get(id(t)) if isinstance(t, torch.Tensor) else None

    def set(self, t: torch.Tensor, rf: RF) -> None:
        if id(t) not in self.info:
            self.keep.append(t)
        self.info[id(t)] = rf

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    # -- module hooks
    def where(self) -> tuple[str, str]:
        f = self.frames[-1] if self.frames else None
        if f is None:
            return "the model", "input"
        return (f.name or "the model"), type(f.module).__name__

    def ancestors(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.frames if f.name)

    def pre_hook(self, name: str, module: nn.Module, args) -> None:
        leaf = not any(True for _ in module.children())
        frame = _Frame(name, module, leaf)
        rf = self.get(_first_tensor(list(args)))
        if rf is not None and name not in self.rf_in:
            self.rf_in[name] = rf
        if leaf and not isinstance(module, nn.Identity):
            params = 0
            for p in module.parameters():
                if id(p) not in self.seen_params:
                    self.seen_params.add(id(p))
                    params += p.numel()
            frame.row = LayerRow(name or type(module).__name__, type(module).__name__, params=params,
                                 ancestors=self.ancestors())
            self.rows.append(frame.row)
        self.frames.append(frame)

    def post_hook(self, name: str, output) -> None:
        frame = self.frames.pop()
        t = _first_tensor(output)
        rf = self.get(t)
        if rf is not None:
            self.rf_at[name] = rf
        if frame.row is not None and t is not None:
            frame.row.output_shape = tuple(t.shape[1:])
            frame.row.rf = rf if rf is not None else GLOBAL

    # -- ops
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        try:
            out = func(*args, **kwargs)
        except RuntimeError as e:
            raise self._forward_error(args, str(e)) from None
        flat_in, _ = tree_flatten((args, kwargs))
        ins = [(t, self.get(t)) for t in flat_in if isinstance(t, torch.Tensor)]
        ins = [(t, rf) for t, rf in ins if rf is not None]
        t_out = _first_tensor(out)
        name = _base_name(func)
        if t_out is None or name in _NO_DATA:
            return out
        if not ins:
            if name not in _CONV and name not in _MATMUL:
                return out  # work on weights or constants, not on activations
            # A conv or product of tensors not derived from the input still costs MACs.
            first = next(t for t in flat_in if isinstance(t, torch.Tensor))
            ins = [(first, GLOBAL)]
        sp = _spatial(t_out)
        if sp is not None and 0 in sp:
            raise self._forward_error(args, "output size is too small")
        rf, macs, other = self._rule(name, func, args, kwargs, ins, t_out)
        self.set(t_out, rf)
        if isinstance(out, (list, tuple)):  # split/chunk: every piece keeps the field
            for o in out:
                if isinstance(o, torch.Tensor) and o is not t_out:
                    self.set(o, rf)
        if not _aliases(func):
            self.activation_elems += t_out.numel()
        if macs or other:
            self._charge(name, t_out, rf, macs, other)
        return out

    def _forward_error(self, args, msg: str) -> ValueError:
        where, kind = self.where()
        t = _first_tensor(list(args))
        shape = _shape_str(t) if t is not None else "?"
        first = msg.strip().splitlines()[0] if msg.strip() else "error"
        if any(w in msg for w in ("too small", "can't be greater", "Output size is", "size is 0")):
            return ValueError(f"input {self.input_desc} is too small: the output of {where} ({kind}) "
                              f"collapses to zero size (its input is {shape})")
        return ValueError(f"forward pass failed in {where} ({kind}) on input {shape}: {first}")

    def _charge(self, name, t_out, rf, macs, other) -> None:
        frame = self.frames[-1] if self.frames else None
        if frame is not None and frame.leaf:
            if frame.row is None:  # an Identity that computed something: give it a row
                frame.row = LayerRow(frame.name, type(frame.module).__name__,
                                     ancestors=self.ancestors()[:-1])
                self.rows.append(frame.row)
            frame.row.macs += macs
            frame.row.other_ops += other
            return
        prefix = f"{frame.name}." if frame is not None and frame.name else ""
        self.rows.append(LayerRow(f"{prefix}{name}", name, tuple(t_out.shape[1:]), 0, macs, other, rf,
                                  ancestors=self.ancestors()))

    def _rule(self, name, func, args, kwargs, ins, t_out) -> tuple[RF, int, int]:
        """(receptive field of the output, MACs, other ops) of one op."""
        n_out = t_out.numel()
        x, rf_x = ins[0]
        if name in _CONV:
            a = _bind(func, args, kwargs)
            w = a["weight"]
            k = tuple(w.shape[-2:]) if w.ndim == 4 else (1, 1)
            other = n_out if a.get("bias") is not None else 0
            if a.get("transposed"):
                self.note("transposed convolutions: receptive field treated as global after them")
                return GLOBAL, x.numel() * w.shape[1] * math.prod(w.shape[2:]), other
            rf = rf_x.window(k, _pair(a.get("stride"), 1), _pair(a.get("padding"), 0),
                             _pair(a.get("dilation"), 1))
            return rf, n_out * w.shape[1] * math.prod(w.shape[2:]), other
        if name in _MATMUL:
            a = [t for t in args if isinstance(t, torch.Tensor)]
            if name == "addmm":
                m1, m2 = a[1], a[2]
                return self._pointwise(ins, t_out), m1.shape[0] * m1.shape[1] * m2.shape[1], n_out
            inner = a[0].shape[-1]
            return self._pointwise(ins, t_out), n_out * inner, 0
        if name in _WINDOW_POOL:
            a = _bind(func, args, kwargs)
            k = _pair(a.get("kernel_size"), 1)
            s = _pair(a.get("stride"), 0)
            s = k if s == (0, 0) else s
            rf = rf_x.window(k, s, _pair(a.get("padding"), 0), _pair(a.get("dilation"), 1))
            return rf, 0, n_out * k[0] * k[1]
        if name in _ADAPTIVE_POOL:
            return self._adaptive(rf_x, _spatial(x), _spatial(t_out)), 0, x.numel()
        if name in _REDUCE:
            a = _bind(func, args, kwargs)
            dims = a.get("dim")
            dims = list(range(x.ndim)) if dims is None or dims == [] else (
                [dims] if isinstance(dims, int) else list(dims))
            dims = [d % x.ndim for d in dims]
            spatial_reduced = x.ndim >= 3 and any(d >= x.ndim - 2 for d in dims)
            rf = GLOBAL if spatial_reduced else self._pointwise(ins, t_out)
            return rf, 0, x.numel()
        if any(w in name for w in _NORM_WORDS):
            return rf_x, 0, 2 * n_out
        if name == "cat":
            a = _bind(func, args, kwargs)
            d = a.get("dim", 0) % t_out.ndim
            if t_out.ndim >= 3 and d >= t_out.ndim - 2:
                self.note("concatenation along a spatial axis: receptive field treated as global")
                return GLOBAL, 0, n_out
            return RF.union(rf for _, rf in ins), 0, n_out
        if name == "constant_pad_nd":
            pad = list(_bind(func, args, kwargs)["pad"])
            rf = rf_x
            for axis, before in ((1, pad[0] if len(pad) > 0 else 0), (0, pad[2] if len(pad) > 2 else 0)):
                if before:
                    rf = rf.pad(axis, before)
            return rf, 0, n_out
        if name == "slice":
            a = _bind(func, args, kwargs)
            d = a.get("dim", 0) % x.ndim
            if x.ndim >= 3 and d >= x.ndim - 2:
                size = x.shape[d]
                start = a.get("start") or 0
                start = start + size if start < 0 else start
                return rf_x.crop(d - (x.ndim - 2), start, a.get("step") or 1), 0, 0
            return rf_x, 0, 0
        cost = 0 if name in _FREE or _is_view(func) else n_out
        return self._pointwise(ins, t_out), 0, cost

    def _adaptive(self, rf: RF, size_in, size_out) -> RF:
        if size_in is None or size_out is None:
            return GLOBAL
        if size_in == size_out:
            return rf
        if size_out == (1, 1):
            return GLOBAL
        if all(i % o == 0 for i, o in zip(size_in, size_out, strict=True)):
            k = tuple(i // o for i, o in zip(size_in, size_out, strict=True))
            return rf.window(k, k, (0, 0))
        self.note(f"adaptive pooling {size_in} -> {size_out} has uneven windows: "
                  "receptive field treated as global after it")
        return GLOBAL

    def _pointwise(self, ins, t_out) -> RF:
        """Element-wise op or view: the union of the fields of the inputs laid out like the
        output. Inputs broadcast from a smaller map (an SE gate, a per-channel scale) and global
        context are not part of the local field: they rescale channels."""
        sp = _spatial(t_out)
        if sp is None:
            return GLOBAL
        same = [rf for t, rf in ins if _spatial(t) == sp]
        local = [rf for rf in same if not rf.is_global]
        if local:
            return RF.union(local)
        if not same and any(not rf.is_global for _, rf in ins) and sp != (1, 1):
            self.note("an op changed the spatial size without a known rule: receptive field "
                      "treated as global after it")
        return GLOBAL


# --------------------------------------------------------------------------------------------
# The public entry point.


def _assign_stages(rows: list[LayerRow], rf_in: dict[str, RF]) -> int | None:
    """Group rows into stages; return the index of the last row with a spatial output.

    A stage is named by the effective stride of its output ("stride 8"). Whole modules that
    downsample at most once (a residual unit, a stage of units, an Inception module, a dense
    block, a transition) are kept together under the stride they output, as the papers'
    tables do (ResNet's conv3_x includes its first, downsampling unit); containers that span
    several resolutions (a ``features`` Sequential) are split down to their layers. Rows
    after the last feature map form the "head".
    """
    last = max((i for i, r in enumerate(rows) if not r.rf.is_global), default=None)
    inside: dict[str, list[LayerRow]] = {}
    for r in rows:
        for a in r.ancestors:
            inside.setdefault(a, []).append(r)

    def unit_stride(name: str) -> int | None:
        start = rf_in.get(name)
        s_in = None if start is None or start.is_global else max(start.stride)
        out = {r.effective_stride for r in inside.get(name, ()) if not r.rf.is_global} - {s_in}
        if len(out) > 1 or s_in is None and not out:
            return None
        return out.pop() if out else s_in

    cache: dict[str, int | None] = {}
    stage = None
    for i, r in enumerate(rows):
        if last is not None and i > last:
            r.stage = "head"
            continue
        s = None
        for a in r.ancestors:
            if a not in cache:
                cache[a] = unit_stride(a)
            if cache[a] is not None:
                s = cache[a]
                break
        if s is None and not r.rf.is_global:
            s = r.effective_stride
        if s is not None:
            stage = f"stride {s}"
        r.stage = stage or "stride 1"
    return last


def _check_model(func: str, model) -> None:
    """A ``TypeError`` that says what ``func`` takes when ``model`` is not a module (e.g. a name)."""
    if isinstance(model, nn.Module):
        return
    got = f"the string {model!r}" if isinstance(model, str) else f"a {type(model).__name__}"
    hint = f"; build it first: {func}(cnnzoo.create_model({model!r}), ...)" if isinstance(model, str) else ""
    raise TypeError(f"{func}() takes a model (an nn.Module), got {got}{hint}")


def _check_input_size(input_size) -> tuple[int, int, int]:
    try:
        size = tuple(int(v) for v in input_size)
        ok = len(size) == 3 and all(v > 0 for v in size) and all(
            float(v) == int(v) for v in input_size)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"input_size must be three positive ints (channels, height, width), "
                         f"got {input_size!r}")
    return size


def _device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Where ``model``'s first parameter lives and its floating dtype (CPU, fp32 without one)."""
    p = next(iter(model.parameters()), None)
    device = p.device if p is not None else torch.device("cpu")
    dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
    return device, dtype


def _model_input_size(model: nn.Module) -> tuple[int, int, int]:
    meta = getattr(model, "meta", None)
    return tuple(getattr(meta, "input_size", (3, 224, 224)))


def profile(model: nn.Module, input_size: Sequence[int] | None = None, *, name: str = "") -> ProfileResult:
    """Measure ``model`` on one input of ``input_size`` = (C, H, W) at batch size 1.

    Returns a :class:`ProfileResult` with ``params``, ``macs``, ``flops`` (= 2 x macs),
    ``other_ops``, ``receptive_field`` and ``effective_stride`` of the last feature map,
    ``activation_bytes`` (fp32) and ``layers`` (one :class:`LayerRow` per leaf-module call and
    per op a container runs itself, in execution order, with a ``stage`` per row). See the
    module docstring for what each count includes.

    The model runs in eval mode under ``torch.no_grad()`` and is left as it was. It may be on
    the ``meta`` device. ``input_size`` defaults to ``model.meta.input_size`` for cnnzoo
    models, else (3, 224, 224). An input too small for the network raises ``ValueError``
    naming the layer whose output collapses to zero size.
    """
    _check_model("profile", model)
    size = _check_input_size(input_size if input_size is not None else _model_input_size(model))
    device, dtype = _device_dtype(model)
    x = torch.zeros((1, *size), device=device, dtype=dtype)

    tracer = _Tracer("x".join(map(str, size)))
    handles = []
    for mod_name, m in model.named_modules():
        handles.append(m.register_forward_pre_hook(
            lambda mod, a, _n=mod_name: tracer.pre_hook(_n, mod, a)))
        handles.append(m.register_forward_hook(
            lambda mod, a, out, _n=mod_name: tracer.post_hook(_n, out)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), tracer:
            tracer.set(x, RF())
            model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)

    rows = tracer.rows
    last = _assign_stages(rows, tracer.rf_in)
    return ProfileResult(
        input_size=size, params=count_params(model), macs=sum(r.macs for r in rows),
        other_ops=sum(r.other_ops for r in rows),
        activation_bytes=tracer.activation_elems * BYTES_PER_ELEMENT,
        rf=rows[last].rf if last is not None else None, layers=rows, rf_at=tracer.rf_at,
        notes=tracer.notes, name=name or getattr(getattr(model, "meta", None), "name", "") or "",
    )
