"""Receptive fields: the algebra, published values, and an independent gradient measurement.

The measurement: in a float64 copy of the network with positive weights, no normalization
and max-pools turned into average pools of the same geometry (so every input in a window
gets gradient, not only the maximum), the input pixels that receive a non-zero gradient from
one output unit are exactly that unit's receptive field, clipped to the image. The tracer in
``cnnzoo.analysis`` never runs backward; the two methods share nothing.
"""

from __future__ import annotations

import copy
from collections import OrderedDict

import pytest
import torch
import torch.nn as nn
import torchvision

import cnnzoo
from cnnzoo.analysis import RF, profile, receptive_field, rf_of_stack


def _registered(name: str) -> bool:
    return bool(cnnzoo.list_models(name))


# --------------------------------------------------------------------------------------------
# The algebra.


def test_stacked_3x3_convs_see_5_and_7():
    assert rf_of_stack([3, 3]) == 5 and rf_of_stack([3, 3, 3]) == 7
    for n, expected in ((2, 5), (3, 7)):
        net = nn.Sequential(*[nn.Conv2d(4, 4, 3, padding=1) for _ in range(n)])
        r = profile(net, (4, 16, 16))
        assert r.receptive_field == expected and r.effective_stride == 1


def test_strides_multiply_and_grow_later_windows():
    # 3x3/2 then 3x3/1: 3 + 2 * 2 = 7, jump 2; a 2x2/2 pool then adds 1 * 2.
    net = nn.Sequential(nn.Conv2d(1, 1, 3, stride=2, padding=1), nn.Conv2d(1, 1, 3, padding=1),
                        nn.MaxPool2d(2))
    r = profile(net, (1, 32, 32))
    assert (r.receptive_field, r.effective_stride) == (9, 4)
    assert [row.receptive_field for row in r.layers] == [3, 7, 9]
    # Dilation 2 makes a 3x3 see 5x5.
    assert profile(nn.Conv2d(1, 1, 3, dilation=2), (1, 9, 9)).receptive_field == 5


def test_union_takes_the_larger_aligned_path():
    a = RF((5, 5), (1, 1), (-2, -2))
    b = RF((1, 1), (1, 1), (0, 0))
    assert RF.union([a, b]) == a
    assert RF.union([a, RF(is_global=True)]).is_global


class _TwoPaths(nn.Module):
    """A residual unit with a 1x1 shortcut and an Inception-like concatenation."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.Conv2d(2, 2, 3, padding=1))
        self.short = nn.Conv2d(2, 2, 1)
        self.b1 = nn.Conv2d(2, 2, 1)
        self.b5 = nn.Conv2d(2, 2, 5, padding=2)

    def forward(self, x):
        y = self.body(x) + self.short(x)
        return torch.cat([self.b1(y), self.b5(y)], 1)


def test_residual_and_branches_take_the_largest_path():
    r = profile(_TwoPaths(), (2, 20, 20))
    assert r.rf_at["body"].size == (5, 5) and r.rf_at["short"].size == (1, 1)
    assert r.receptive_field == 5 + 4  # the 5x5 branch after the 5-wide residual sum
    names = [row.name for row in r.layers]
    assert "add" in names and "cat" in names  # the container's own ops get rows


# --------------------------------------------------------------------------------------------
# Published values.


def test_published_receptive_fields():
    # Araujo et al., "Computing Receptive Fields of CNNs" (Distill, 2019): VGG-16 212,
    # ResNet-50 483 (the paper's layout, stride on the first 1x1).
    with torch.device("meta"):
        vgg = torchvision.models.vgg16()
        r50 = cnnzoo.create_model("resnet50", stride_on="1x1")
    assert receptive_field(vgg, (3, 224, 224)).size == (212, 212)
    rf = receptive_field(r50)
    assert rf.size == (483, 483) and rf.stride == (32, 32)


# --------------------------------------------------------------------------------------------
# The gradient measurement.


def _measurable_copy(model: nn.Module) -> nn.Module:
    """float64, positive weights, zero biases, no normalization, max-pools as average pools."""
    m = copy.deepcopy(model).double().eval()
    for name, mod in list(m.named_modules()):
        parent_name, _, child = name.rpartition(".")
        parent = m.get_submodule(parent_name) if parent_name else m
        if isinstance(mod, (nn.BatchNorm2d, nn.GroupNorm)):
            setattr(parent, child, nn.Identity())
        elif isinstance(mod, nn.MaxPool2d):
            setattr(parent, child, nn.AvgPool2d(mod.kernel_size, mod.stride, mod.padding,
                                                ceil_mode=mod.ceil_mode))
        elif isinstance(mod, (nn.Conv2d, nn.Linear)):
            with torch.no_grad():
                fan_in = mod.weight[0].numel()
                mod.weight.copy_(torch.rand_like(mod.weight) / fan_in + 0.5 / fan_in)
                if mod.bias is not None:
                    mod.bias.zero_()
    return m


class _Stop(Exception):
    pass


def _gradient_extent(model: nn.Module, input_size, at: str):
    """(rows, cols) input index ranges with non-zero gradient from the central unit of ``at``."""
    m = _measurable_copy(model)
    x = torch.ones(1, *input_size, dtype=torch.float64, requires_grad=True)
    captured = {}

    def hook(mod, args, out):
        captured["y"] = out
        raise _Stop

    m.get_submodule(at).register_forward_hook(hook)
    with pytest.raises(_Stop):
        m(x)
    y = captured["y"]
    i, j = y.shape[2] // 2, y.shape[3] // 2
    y[0, :, i, j].sum().backward()
    nz = x.grad[0].abs().sum(0) > 0
    rows, cols = nz.any(1).nonzero().flatten(), nz.any(0).nonzero().flatten()
    return (rows.min().item(), rows.max().item()), (cols.min().item(), cols.max().item()), (i, j)


def _predicted_extent(rf: RF, index, size):
    out = []
    for a in range(2):
        left = rf.left[a] + index[a] * rf.stride[a]
        out.append((max(0, left), min(size[a] - 1, left + rf.size[a] - 1)))
    return tuple(out)


def _cases():
    vgg_layout = [8, "M", 16, "M", 32, 32, "M", 32, 32, "M", 32, 32, "M"]  # VGG-11 ("A"), narrow
    cases = [
        pytest.param(lambda: nn.Sequential(OrderedDict(features=torchvision.models.vgg.make_layers(
            vgg_layout))), (3, 176, 176), "features", id="vgg11-layout"),
        pytest.param(lambda: cnnzoo.create_model("resnet20", width=0.25, stem_width=4),
                     (3, 96, 96), "stages", id="cifar-resnet20-optionA"),
        pytest.param(lambda: cnnzoo.create_model("resnet20", width=0.25, stem_width=4, shortcut="B"),
                     (3, 96, 96), "stages.2.0", id="cifar-resnet20-projection"),
        pytest.param(lambda: torchvision.models.GoogLeNet(aux_logits=False, init_weights=False),
                     (3, 96, 96), "inception3b", id="googlenet-torchvision"),
        pytest.param(lambda: torchvision.models.DenseNet(growth_rate=4, block_config=(2, 2, 2),
                                                         num_init_features=8, bn_size=2),
                     (3, 160, 160), "features", id="densenet-small"),
    ]
    # cnnzoo's own VGG and DenseNet (written concurrently): run once they are registered.
    if _registered("cifar_vgg11"):
        cases.append(pytest.param(lambda: cnnzoo.create_model("cifar_vgg11", width=0.125),
                                  (3, 176, 176), "features", id="cnnzoo-vgg11"))
    if _registered("densenet"):
        cases.append(pytest.param(
            lambda: cnnzoo.create_model("densenet", growth_rate=4, block_config=(2, 2, 2),
                                        stem_width=8, bn_size=2),
            (3, 160, 160), "stages", id="cnnzoo-densenet"))
    if _registered("googlenet"):  # the paper layout, with true 5x5 branches
        cases.append(pytest.param(lambda: cnnzoo.create_model("googlenet"), (3, 120, 120),
                                  "blocks.inception3b", id="googlenet-paper"))
    return cases


@pytest.mark.parametrize("build,input_size,at", _cases())
def test_receptive_field_matches_gradient_measurement(build, input_size, at):
    model = build()
    rf = receptive_field(copy.deepcopy(model).to("meta"), input_size, at=at)
    assert not rf.is_global and rf.size[0] > 30
    rows, cols, index = _gradient_extent(model, input_size, at)
    expected = _predicted_extent(rf, index, input_size[1:])
    assert (rows, cols) == expected, f"rf {rf} at {at}"
    # The field fits inside the image, so the measurement saw all of it.
    assert rows[1] - rows[0] + 1 == rf.size[0] and cols[1] - cols[0] + 1 == rf.size[1]
