"""Backbones: the per-stage feature maps of any cnnzoo model, for detection and segmentation.

``features_only(model, out_indices=None)`` cuts a model's trunk into its stages and returns a
module whose ``forward`` gives one feature map per selected stage, shallowest first, and whose
``feature_info`` says each map's channels and reduction (input size / map size)::

    backbone = features_only(cnnzoo.create_model("resnet50"), out_indices=(1, 2, 3))
    maps = backbone(x)                        # [N x 512 x H/8, N x 1024 x H/16, N x 2048 x H/32]
    backbone.feature_info.channels()          # [512, 1024, 2048]
    backbone.feature_info.reduction()         # [8, 16, 32]

What a stage's map is, per family (:data:`FAMILY_STAGES`):

* **ResNet** (every unit ordering, WRN, SE): the output of each stage; the last one after the
  model's final norm/activation (pre-activation nets), i.e. what the classifier sees.
* **VGG**: the map before each max-pool, i.e. the last conv of each stage (after its SE gate),
  at full resolution for that stage (SSD's and FCN's ``conv4_3``, ``conv5_3``).
* **GoogLeNet**: the output of each stage's last Inception module (3b, 4e, 5b), before the
  max-pool that starts the next stage. The auxiliary heads are not part of the backbone.
* **DenseNet**: the output of each dense block, before its transition (compression and
  pooling); the last one after the final BN-ReLU.

The backbone shares its modules (and so its parameters) with the model; the classifier and
anything after the last selected stage are left out, so nothing runs or trains that does not
feed an output. ``forward`` returns a list of tensors; ``torchvision.ops.FeaturePyramidNetwork``
takes them as ``OrderedDict(zip(map(str, out_indices), maps))``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn

from .models.densenet import DenseNet, DenseStage
from .models.googlenet import GoogLeNet
from .models.resnet import ResNet
from .models.vgg import VGG

__all__ = ["FeatureExtractor", "FeatureInfo", "FeatureSpec", "FAMILY_STAGES", "features_only"]

Step = tuple[str, nn.Module]  # (dotted path in the model, module): one step of a trunk


@dataclass(frozen=True)
class FeatureSpec:
    """One output of a backbone: the model stage it comes from (0 = first), the module whose
    output it is (a dotted path in the model), its channels and its reduction (input size / map
    size, at the model's input size)."""

    stage: int
    module: str
    channels: int
    reduction: int


class FeatureInfo(tuple):
    """The :class:`FeatureSpec` of each output of a backbone, in output order (after timm's
    ``FeatureInfo``): ``channels()``, ``reduction()``, ``module_name()`` list one field."""

    def channels(self) -> list[int]:
        return [f.channels for f in self]

    def reduction(self) -> list[int]:
        return [f.reduction for f in self]

    def module_name(self) -> list[str]:
        return [f.module for f in self]


# --------------------------------------------------------------------------------------------
# Each family's trunk as data: its steps in execution order, and the step ending each stage.


def _children(prefix: str, container: nn.Module) -> list[Step]:
    return [(f"{prefix}.{name}", m) for name, m in container.named_children()]


def _resnet_stages(m: ResNet) -> tuple[list[Step], list[str]]:
    steps = [("stem", m.stem), *_children("stages", m.stages), ("final", m.final)]
    return steps, [f"stages.{i}" for i in range(len(m.stages) - 1)] + ["final"]


def _densenet_stages(m: DenseNet) -> tuple[list[Step], list[str]]:
    # A DenseStage is a dense block and the transition after it; the block's output is the
    # stage's map. The block runs as the family's own DenseStage, sharing its layers, without the
    # transition, which then starts the next stage.
    steps: list[Step] = [("stem", m.stem)]
    for i, stage in enumerate(m.stages):
        steps += [(f"stages.{i}.layers", DenseStage(stage.layers, nn.Identity())),
                  (f"stages.{i}.transition", stage.transition)]
    steps.append(("final", m.final))
    return steps, [f"stages.{i}.layers" for i in range(len(m.stages) - 1)] + ["final"]


def _before_pools(steps: list[Step]) -> list[str]:
    """The step before each max-pool, and the last step if it is no pool."""
    taps = [steps[i - 1][0] for i, (_, mod) in enumerate(steps)
            if isinstance(mod, nn.MaxPool2d) and i > 0 and not isinstance(steps[i - 1][1], nn.MaxPool2d)]
    if not isinstance(steps[-1][1], nn.MaxPool2d):
        taps.append(steps[-1][0])
    return taps


def _vgg_stages(m: VGG) -> tuple[list[Step], list[str]]:
    steps = _children("features", m.features)
    return steps, _before_pools(steps)


def _googlenet_stages(m: GoogLeNet) -> tuple[list[Step], list[str]]:
    blocks = _children("blocks", m.blocks)
    return [("input_transform", m.input_transform), ("stem", m.stem), *blocks], _before_pools(blocks)


# model class -> its trunk (steps in execution order) and the path of the step ending each stage
FAMILY_STAGES: dict[type, Callable[[nn.Module], tuple[list[Step], list[str]]]] = {
    ResNet: _resnet_stages,
    DenseNet: _densenet_stages,
    VGG: _vgg_stages,
    GoogLeNet: _googlenet_stages,
}


# --------------------------------------------------------------------------------------------
# The backbone.


def _check_out_indices(out_indices: Sequence[int] | None, n: int) -> tuple[int, ...]:
    """Stage indices, negative ones counted from the end, strictly increasing, within ``n`` stages."""
    if out_indices is None:
        return tuple(range(n))
    if isinstance(out_indices, int) and not isinstance(out_indices, bool):
        out_indices = (out_indices,)
    if (not isinstance(out_indices, (list, tuple)) or not out_indices
            or any(not isinstance(i, int) or isinstance(i, bool) for i in out_indices)):
        raise ValueError(f"out_indices must be a non-empty sequence of stage indices (ints), "
                         f"got {out_indices!r}")
    bad = [i for i in out_indices if not -n <= i < n]
    if bad:
        raise ValueError(f"out_indices {tuple(out_indices)}: {bad[0]} is out of range; this model has {n} "
                         f"stages (0 to {n - 1}, or -{n} to -1 from the end)")
    idx = tuple(i % n for i in out_indices)
    if any(b <= a for a, b in zip(idx, idx[1:], strict=False)):
        raise ValueError(f"out_indices must be distinct and increasing (shallowest stage first), "
                         f"got {tuple(out_indices)}")
    return idx


def _input_size(model: nn.Module) -> tuple[int, int, int]:
    """The model's input channels (its first conv's) at its registered size (else 224x224)."""
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    size = getattr(getattr(model, "meta", None), "input_size", (3, 224, 224))
    return (conv.in_channels, size[1], size[2])


class FeatureExtractor(nn.Module):
    """The trunk of a model cut into stages; ``forward(x)`` returns the selected stages' maps.

    ``stages[i]`` runs what lies between output ``i - 1`` and output ``i`` (unselected stages in
    between included), its steps named after their paths in the model (``stages_2``,
    ``features_23``). Attributes: ``out_indices`` (the model stages returned), ``feature_info``
    (a :class:`FeatureInfo`, one :class:`FeatureSpec` per output).
    """

    def __init__(self, steps: Sequence[Step], taps: Sequence[str], out_indices: Sequence[int],
                 input_size: tuple[int, int, int]):
        super().__init__()
        self.out_indices = tuple(out_indices)
        ends = [taps[i] for i in self.out_indices]
        stages, current = [], OrderedDict()
        for path, module in steps:
            current[path.replace(".", "_")] = module
            if path in ends:
                stages.append(nn.Sequential(current))
                current = OrderedDict()
                if len(stages) == len(ends):
                    break  # nothing after the last selected stage runs
        self.stages = nn.ModuleList(stages)
        self.feature_info = FeatureInfo(
            FeatureSpec(i, taps[i], f.shape[1], round(input_size[1] / f.shape[2]))
            for i, f in zip(self.out_indices, self._probe(input_size), strict=True))

    def _probe(self, input_size: tuple[int, int, int]) -> list[torch.Tensor]:
        """The maps of one zero image of ``input_size``, in eval mode (no BN statistics change)."""
        was_training = self.training
        p = next(self.parameters(), None)
        self.eval()
        try:
            with torch.no_grad():
                x = torch.zeros(1, *input_size, device=p.device if p is not None else None,
                                dtype=p.dtype if p is not None else None)
                return self(x)
        finally:
            self.train(was_training)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out


def features_only(model: nn.Module, out_indices: Sequence[int] | None = None) -> FeatureExtractor:
    """A backbone of ``model``: the feature maps of the stages ``out_indices`` (default: all).

    Stage indices count from 0, the shallowest stage (negative ones from the end) and must be
    increasing; the maps come back in that order. The backbone shares ``model``'s modules.
    Channels and reductions (``feature_info``) are measured with one zero image of the model's
    input size. Raises ``ValueError`` for a model of no known family or bad ``out_indices``.
    """
    stages_of = next((fn for cls, fn in FAMILY_STAGES.items() if isinstance(model, cls)), None)
    if stages_of is None:
        known = ", ".join(cls.__name__ for cls in FAMILY_STAGES)
        raise ValueError(f"features_only needs a cnnzoo model ({known}), got {type(model).__name__}")
    steps, taps = stages_of(model)
    return FeatureExtractor(steps, taps, _check_out_indices(out_indices, len(taps)), _input_size(model))
