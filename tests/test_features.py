"""Backbones: ``features_only`` gives each family's stage maps, described by ``feature_info``.

Each map is checked against the model's own computation (forward hooks on the model), its shape
against ``feature_info`` at a size other than the one ``feature_info`` was measured at, and the
backbone is fed to torchvision's FeaturePyramidNetwork.
"""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import cnnzoo
from cnnzoo.features import FeatureExtractor, features_only
from tests.helpers import meta_model, randomize_bn

# One model per family and kind of stem (ImageNet, CIFAR), with its test input size: ImageNet
# models at 64x64 (every stage still has a map), CIFAR ones at 32x32.
CASES = {
    "resnet18": (64, {}),
    "preact_resnet18": (64, {}),  # the last map is after the final BN-ReLU
    "resnet20": (32, {}),
    "wrn16_4": (32, {}),
    "se_resnet20": (32, {}),
    "vgg11_bn": (64, dict(fc_hidden=64)),
    "cifar_vgg11": (32, {}),
    "se_cifar_vgg16": (32, {}),  # the stage's SE gate is before its pool: part of the map
    "googlenet": (64, dict(aux_logits=True)),
    "cifar_googlenet": (32, {}),
    "densenet121": (64, {}),
    "densenet_bc_100_12": (32, {}),
}


def _kind(name: str) -> tuple[str, bool]:
    meta = cnnzoo.get_model_meta(name)
    return meta.family, meta.input_size[1] == 32


def test_cases_cover_every_registered_family_and_stem():
    assert {_kind(n) for n in cnnzoo.list_models()} == {_kind(n) for n in CASES}


def _reference_maps(model: nn.Module, backbone: FeatureExtractor, x: torch.Tensor) -> list[torch.Tensor]:
    """The maps the backbone should return, taken from the model's own forward pass by hooks.

    A DenseNet block's map is what enters its transition; VGG's last map is the input of the
    final max-pool (or the last module's output).
    """
    maps: dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules())
    handles = []
    for spec in backbone.feature_info:
        path = spec.module
        if path.endswith(".layers"):  # a dense block: the input of the transition after it
            hook_on = modules[path.removesuffix(".layers") + ".transition"]
            handles.append(hook_on.register_forward_pre_hook(
                lambda m, args, path=path: maps.setdefault(path, args[0])))
        else:
            handles.append(modules[path].register_forward_hook(
                lambda m, args, out, path=path: maps.setdefault(path, out)))
    try:
        model.forward_features(x)
    finally:
        for h in handles:
            h.remove()
    return [maps[p] for p in backbone.feature_info.module_name()]


@pytest.mark.parametrize("name", CASES)
def test_maps_are_the_models_own_and_match_feature_info(name):
    size, opts = CASES[name]
    model = randomize_bn(cnnzoo.create_model(name, **opts)).eval()
    backbone = features_only(model)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        maps = backbone(x)
        expected = _reference_maps(model, backbone, x)
        last = model.forward_features(x)
    info = backbone.feature_info
    assert len(maps) == len(info) >= 3
    assert backbone.out_indices == tuple(range(len(info)))
    for f, ref, spec in zip(maps, expected, info, strict=True):
        assert torch.equal(f, ref), spec
        assert f.shape == (2, spec.channels, size // spec.reduction, size // spec.reduction), spec
    assert info.reduction() == sorted(set(info.reduction()))  # one map per scale
    assert info.channels()[-1] == model.num_features
    # The deepest map is what the head pools (VGG: before the last max-pool).
    deepest = F.max_pool2d(maps[-1], 2) if isinstance(model, cnnzoo.models.vgg.VGG) else maps[-1]
    assert torch.equal(deepest, last)


def test_feature_info_states_channels_and_reduction():
    info = features_only(cnnzoo.create_model("resnet50")).feature_info
    assert info.channels() == [256, 512, 1024, 2048]
    assert info.reduction() == [4, 8, 16, 32]
    assert info.module_name() == ["stages.0", "stages.1", "stages.2", "final"]
    cifar = features_only(cnnzoo.create_model("cifar_vgg11")).feature_info
    assert cifar.channels() == [64, 128, 256, 512, 512] and cifar.reduction() == [1, 2, 4, 8, 16]
    g = features_only(cnnzoo.create_model("googlenet")).feature_info
    assert g.channels() == [480, 832, 1024] and g.reduction() == [8, 16, 32]
    assert g.module_name() == ["blocks.inception3b", "blocks.inception4e", "blocks.inception5b"]


@pytest.mark.parametrize("name", cnnzoo.list_models())
def test_every_registered_model_has_a_backbone(name):
    model = meta_model(name)  # shapes only: no memory, no compute
    info = features_only(model).feature_info
    assert info.channels()[-1] == model.num_features
    assert info.reduction() == sorted(set(info.reduction()))
    assert all(r & (r - 1) == 0 for r in info.reduction())  # powers of two


def test_out_indices_select_and_prune():
    model = randomize_bn(cnnzoo.create_model("resnet20")).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        full = features_only(model)(x)
        some = features_only(model, out_indices=(0, -1))
        one = features_only(model, out_indices=(1,))
        picked, only = some(x), one(x)
    assert some.out_indices == (0, 2) and some.feature_info.channels() == [16, 64]
    assert [f.shape for f in picked] == [full[0].shape, full[2].shape]
    assert torch.equal(picked[0], full[0]) and torch.equal(picked[1], full[2])
    assert one.feature_info.reduction() == [2] and len(only) == 1 and torch.equal(only[0], full[1])
    # Nothing after the last selected stage is kept: stage 3's and the head's weights are absent.
    own = {id(p) for p in model.stages[2].parameters()} | {id(p) for p in model.head.parameters()}
    kept = {id(p) for p in one.parameters()}
    assert kept and not kept & own
    assert kept < {id(p) for p in model.parameters()}  # shared with the model, not copied


@pytest.mark.parametrize("bad, message", [
    ((3,), "3 is out of range; this model has 3 stages"),
    ((-4,), "-4 is out of range"),
    ((1, 1), "distinct and increasing"),
    ((2, 0), "distinct and increasing"),
    ((0, -3), "distinct and increasing"),  # -3 is stage 0
    ((), "non-empty sequence"),
    (("1",), "non-empty sequence"),
    ((1.0,), "non-empty sequence"),
    ((True,), "non-empty sequence"),
])
def test_bad_out_indices_are_value_errors(bad, message):
    with pytest.raises(ValueError, match=message):
        features_only(cnnzoo.create_model("resnet20"), out_indices=bad)


def test_a_module_of_no_family_is_a_value_error():
    with pytest.raises(ValueError, match=r"features_only needs a cnnzoo model \(.*\), got Sequential"):
        features_only(nn.Sequential(nn.Conv2d(3, 8, 3)))


def test_building_a_backbone_leaves_bn_statistics_alone():
    model = cnnzoo.create_model("densenet_bc_100_12").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    backbone = features_only(model)
    assert backbone.training and model.training
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_in_chans_and_out_indices_from_one_channel_input():
    backbone = features_only(cnnzoo.create_model("resnet20", in_chans=1), out_indices=[-1])
    assert backbone.feature_info.channels() == [64]
    assert backbone(torch.randn(1, 1, 16, 16))[0].shape == (1, 64, 4, 4)


@pytest.mark.parametrize("name, size", [("resnet18", 64), ("densenet_bc_100_12", 32)])
def test_a_feature_pyramid_network_takes_the_backbone(name, size):
    from torchvision.ops import FeaturePyramidNetwork

    backbone = features_only(cnnzoo.create_model(name), out_indices=(-3, -2, -1))
    fpn = FeaturePyramidNetwork(backbone.feature_info.channels(), out_channels=16)
    x = torch.randn(2, 3, size, size)
    maps = backbone(x)
    pyramid = fpn(OrderedDict(zip(map(str, backbone.out_indices), maps, strict=True)))
    assert list(pyramid) == [str(i) for i in backbone.out_indices]
    for p, spec in zip(pyramid.values(), backbone.feature_info, strict=True):
        assert p.shape == (2, 16, size // spec.reduction, size // spec.reduction)
    # Trained end to end: every backbone parameter gets a gradient (none is left unused).
    sum(p.mean() for p in pyramid.values()).backward()
    assert all(p.grad is not None for p in backbone.parameters())


def test_a_torchvision_detector_trains_on_the_backbone():
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.ops import FeaturePyramidNetwork

    class Backbone(nn.Module):  # docs/export.md's example
        def __init__(self, name: str, out_channels: int = 32):
            super().__init__()
            self.body = cnnzoo.create_model(name, features_only=True, out_indices=(1, 2, 3))
            self.fpn = FeaturePyramidNetwork(self.body.feature_info.channels(), out_channels)
            self.out_channels = out_channels  # what torchvision's detection heads read

        def forward(self, x):
            return self.fpn(OrderedDict(zip(map(str, self.body.out_indices), self.body(x), strict=True)))

    backbone = Backbone("resnet18")
    anchors = AnchorGenerator(((16,), (32,), (64,)), ((0.5, 1.0, 2.0),) * 3)
    detector = FasterRCNN(backbone, num_classes=3, min_size=96, max_size=96, rpn_anchor_generator=anchors)
    target = {"boxes": torch.tensor([[10.0, 10.0, 60.0, 70.0]]), "labels": torch.tensor([1])}
    losses = detector([torch.rand(3, 96, 96)], [target])
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    sum(losses.values()).backward()
    assert backbone.body.stages[0][0].conv.weight.grad is not None  # the stem learns
    detector.eval()
    with torch.no_grad():
        assert {"boxes", "labels", "scores"} == set(detector([torch.rand(3, 96, 96)])[0])
