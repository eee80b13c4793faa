"""VGG: configurations, heads, SE placement, torchvision equivalence, bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torchvision

import cnnzoo
from cnnzoo.interop import load_external
from cnnzoo.layers import SqueezeExcite
from cnnzoo.models.vgg import VGG, Conv

from .helpers import count as _count
from .helpers import meta_model as _meta
from .helpers import randomize_

TV_NAMES = ["vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn"]


def _fc_head_params(c: int, classes: int, hidden: int = 4096, pool: int = 7) -> int:
    return c * pool * pool * hidden + hidden + hidden * hidden + hidden + hidden * classes + classes


def _gap_head_params(c: int, classes: int) -> int:
    return c * classes + classes


# --------------------------------------------------------------------------------------------
# torchvision equivalence


@pytest.mark.parametrize("name", TV_NAMES)
def test_torchvision_equivalence(name):
    # The official builder on the meta device (no init cost), then every tensor made random,
    # BN running statistics included; cnnzoo's model filled from it by load_external. To keep
    # the file fast, only vgg16 keeps the 4096-wide FCs; the others get 64-wide ones at the same
    # classifier indices (0, 3, 6), which is all the key mapping sees.
    hidden = 4096 if name == "vgg16" else 64
    with torch.device("meta"):
        tv = getattr(torchvision.models, name)()
        if hidden != 4096:
            tv.classifier = nn.Sequential(
                nn.Linear(512 * 7 * 7, hidden), nn.ReLU(True), nn.Dropout(),
                nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(), nn.Linear(hidden, 1000))
        ours = cnnzoo.create_model(name, fc_hidden=hidden)
    tv = randomize_(tv.to_empty(device="cpu")).eval()
    ours = load_external(ours.to_empty(device="cpu"), tv.state_dict(), source="torchvision").eval()
    x = torch.randn(1, 3, 64, 64)  # a 2x2 map before the 7x7 adaptive pool
    with torch.no_grad():
        ref, out = tv(x), ours(x)
    err = (ref - out).abs().max().item()
    print(f"{name}: max abs error {err:.3g} (outputs up to {ref.abs().max().item():.3g})")
    assert out.shape == (1, 1000)
    assert err <= 1e-5


def test_torchvision_mapping_rejects_a_different_configuration():
    with torch.device("meta"):
        tv = torchvision.models.vgg11()
    ours = cnnzoo.create_model("cifar_vgg16", head="fc", fc_hidden=8, num_classes=1000)
    with pytest.raises(ValueError, match="torchvision weights do not fit|shape mismatch"):
        load_external(ours, tv.state_dict(), source="torchvision")


def test_torchvision_mapping_of_classifier_keys():
    from cnnzoo.interop.vgg import vgg_key

    assert vgg_key("classifier.0.weight") == "head.pre_logits.fc1.weight"
    assert vgg_key("classifier.3.bias") == "head.pre_logits.fc2.bias"
    assert vgg_key("classifier.6.weight") == "head.fc.weight"
    assert vgg_key("features.24.running_var") == "features.24.running_var"


# --------------------------------------------------------------------------------------------
# Configurations


def test_configuration_c_has_1x1_convs_in_stages_3_to_5():
    model = _meta("vgg16c")
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert len(convs) == 13
    kernels = [c.kernel_size[0] for c in convs]
    assert kernels == [3] * 6 + [1] + [3, 3, 1] + [3, 3, 1]
    assert all(c.padding == (c.kernel_size[0] // 2,) * 2 for c in convs)
    # C differs from D only by those three 1x1 convs.
    d = _meta("vgg16")
    assert _count(d) - _count(model) == 8 * (256 * 256 + 2 * 512 * 512)


@pytest.mark.parametrize("name,convs", [("vgg11", 8), ("vgg13", 10), ("vgg16", 13), ("vgg19", 16)])
def test_depths_and_bn(name, convs):
    plain, bn = _meta(name), _meta(f"{name}_bn")
    assert sum(isinstance(m, nn.Conv2d) for m in plain.features) == convs
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in bn.features) == convs
    assert sum(isinstance(m, nn.MaxPool2d) for m in plain.features) == 5


def test_custom_configuration_and_width():
    model = cnnzoo.create_model("vgg", cfg=(16, "M", Conv(32, 1), 32, "M"), width=0.5, head="gap",
                                num_classes=3)
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size[0]) for c in convs] == [(8, 3), (16, 1), (16, 3)]
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 3)


def test_cifar_vgg_defaults():
    model = cnnzoo.create_model("cifar_vgg16")
    assert model.meta.input_size == (3, 32, 32) and model.meta.num_classes == 10
    assert model.head.head_type == "gap"
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 13
    assert _count(model) == 14_728_266
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


# --------------------------------------------------------------------------------------------
# Heads


def test_fc_head_is_the_paper_head_and_accepts_32x32():
    model = cnnzoo.create_model("vgg11", num_classes=5, fc_hidden=64)
    head = model.head.pre_logits
    assert model.head.head_type == "fc"
    assert head.fc1.in_features == 512 * 7 * 7 and head.fc1.out_features == 64
    assert head.drop1.p == 0.5 and head.drop2.p == 0.5
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)


def test_gap_head_on_vgg16_builds_runs_and_counts():
    full = _count(_meta("vgg16"))
    gap = cnnzoo.create_model("vgg16", head="gap")
    assert full - _count(gap) == _fc_head_params(512, 1000) - _gap_head_params(512, 1000)
    assert _count(gap) == 14_714_688 + _gap_head_params(512, 1000)
    assert gap(torch.randn(2, 3, 32, 32)).shape == (2, 1000)


def test_fc_head_options_count():
    base = _count(_meta("vgg16", head="gap"))
    for hidden, pool in ((4096, 7), (256, 2), (1024, 1)):
        model = _meta("vgg16", fc_hidden=hidden, fc_pool=pool)
        assert _count(model) - base == _fc_head_params(512, 1000, hidden, pool) - _gap_head_params(512, 1000)
    small = cnnzoo.create_model("cifar_vgg11", head="fc", fc_hidden=32, fc_pool=2, fc_dropout=0.1)
    assert small.head.pre_logits.drop1.p == 0.1
    assert small(torch.randn(2, 3, 32, 32)).shape == (2, 10)


# --------------------------------------------------------------------------------------------
# SE


def test_se_sits_at_the_end_of_each_stage_before_the_pool():
    model = _meta("se_vgg16_bn")
    mods = list(model.features)
    gates = [i for i, m in enumerate(mods) if isinstance(m, SqueezeExcite)]
    assert len(gates) == 5
    for i in gates:
        assert isinstance(mods[i + 1], nn.MaxPool2d)  # before the pool
        assert isinstance(mods[i - 1], nn.ReLU)  # after the stage's last conv-BN-ReLU
    assert [mods[i].fc1.in_channels for i in gates] == [64, 128, 256, 512, 512]
    assert _count(model) - _count(_meta("vgg16_bn")) == sum(
        2 * c * (c // 16) + c // 16 + c for c in (64, 128, 256, 512, 512))


@pytest.mark.parametrize("name", ["se_vgg16", "se_cifar_vgg16"])
def test_changing_an_se_gate_changes_the_output(name):
    model = cnnzoo.create_model(name, width=0.125, head="gap", num_classes=4).eval()
    x = torch.randn(2, 3, 32, 32)
    gates = [m for m in model.modules() if isinstance(m, SqueezeExcite)]
    assert len(gates) == 5
    with torch.no_grad():
        ref = model(x)
        for g in gates:
            g.fc2.bias.add_(1.0)
            out = model(x)
            assert not torch.allclose(ref, out), "an SE gate has no effect on the output"
            g.fc2.bias.sub_(1.0)
        assert torch.allclose(model(x), ref)


def test_se_aliases():
    assert cnnzoo.get_model_meta("se_vgg16").alias_of == "vgg16"
    assert cnnzoo.get_model_meta("se_vgg16_bn").alias_of == "vgg16_bn"
    assert cnnzoo.get_model_meta("se_cifar_vgg16").alias_of == "cifar_vgg16"


# --------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize("kw,match", [
    (dict(no_such_option=1), "allowed"),
    (dict(cfg="A"), "allowed"),  # named models fix their configuration
    (dict(width=0), "width"),
    (dict(width=-1.0), "width"),
    (dict(head="mlp"), "head"),
    (dict(fc_hidden=0), "fc_hidden"),
    (dict(fc_pool=0), "fc_pool"),
    (dict(fc_dropout=1.0), "fc_dropout"),
    (dict(attn="cbam"), "attn"),
    (dict(norm_layer="xx"), "norm_layer"),
])
def test_bad_options_raise(kw, match):
    with pytest.raises(ValueError, match=match):
        _meta("vgg16", **kw)


@pytest.mark.parametrize("cfg", ["F", (), ("M",), (64, "X"), (64, 0), (Conv(64, 2),), (64.5,)])
def test_bad_configurations_raise(cfg):
    with pytest.raises(ValueError, match="cfg"):
        _meta("vgg", cfg=cfg)


def test_vgg_class_is_what_the_registry_builds():
    assert isinstance(_meta("vgg19_bn"), VGG)
