"""The one residual unit: every ordering x body x shortcut x option, and its invariants."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import cnnzoo
from cnnzoo.models.resnet import (
    ORDERINGS,
    SHORTCUTS,
    IdentityShortcut,
    NoShortcut,
    ProjectionShortcut,
    ResidualUnit,
    ResNet,
    ZeroPadShortcut,
)

UNITS = list(ORDERINGS)
BLOCKS = ["basic", "bottleneck"]
DROPS = {
    "none": {},
    "all": dict(residual_scale=0.2, shortcut_scale=0.5, block_dropout=0.1, drop_path_rate=0.2),
}


def tiny(**kw) -> ResNet:
    return ResNet(layers=(2, 1), widths=(8, 16), stem="cifar", stem_width=8, num_classes=3, **kw)


def units(model):
    return [m for m in model.modules() if isinstance(m, ResidualUnit)]


@pytest.mark.parametrize("unit,block,shortcut,attn,drop",
                         list(itertools.product(UNITS, BLOCKS, SHORTCUTS, [None, "se"], DROPS)))
def test_grid_builds_runs_and_trains(unit, block, shortcut, attn, drop):
    model = tiny(unit=unit, block=block, shortcut=shortcut, attn=attn, **DROPS[drop]).train()
    out = model(torch.randn(4, 3, 12, 12))
    assert out.shape == (4, 3) and torch.isfinite(out).all()
    F.cross_entropy(out, torch.tensor([0, 1, 2, 0])).backward()
    assert all(p.grad is not None for p in model.parameters())
    kinds = {type(u.shortcut) for u in units(model)}
    expected = {
        "A": {IdentityShortcut, ZeroPadShortcut}, "B": {IdentityShortcut, ProjectionShortcut},
        "C": {ProjectionShortcut}, "none": {NoShortcut},
    }[shortcut]
    assert kinds == expected
    assert all(isinstance(u.attn, nn.Identity) != (attn == "se") for u in units(model))


@pytest.mark.parametrize("unit,block,shortcut", list(itertools.product(UNITS, BLOCKS, ["A", "B"])))
def test_zero_init_last_makes_identity_units(unit, block, shortcut):
    model = tiny(unit=unit, block=block, shortcut=shortcut, zero_init_last=True,
                 attn="se").eval()
    checked = 0
    for u in units(model):
        if not isinstance(u.shortcut, IdentityShortcut):
            continue
        c = u.body[0].in_channels
        x = torch.randn(2, c, 6, 6)
        with torch.no_grad():
            y = u(x)
            expected = u.post_add(x)  # pre-activation orderings: post_add is the identity
        torch.testing.assert_close(y, expected, rtol=0, atol=0)
        if not ORDERINGS[unit].post_add:
            assert torch.equal(y, x)
        checked += 1
    assert checked >= 1
    # ...and without zero_init_last the same unit is not an identity
    model = tiny(unit=unit, block=block, shortcut=shortcut).eval()
    u = next(u for u in units(model) if isinstance(u.shortcut, IdentityShortcut))
    x = torch.randn(2, u.body[0].in_channels, 6, 6)
    with torch.no_grad():
        assert not torch.allclose(u(x), u.post_add(x))


@pytest.mark.parametrize("unit,shortcut", list(itertools.product(UNITS, ["A", "B", "C"])))
def test_every_unit_computes_its_formula_and_leaves_its_input_alone(unit, shortcut):
    # y = post_add(body(pre(x)) + shortcut(x, pre(x))), with x itself unchanged: an in-place ReLU
    # in pre once rewrote x, so Fig. 4(d) silently computed Fig. 4(a)
    for u in units(tiny(unit=unit, shortcut=shortcut).eval()):
        x = torch.randn(2, u.body[0].in_channels, 6, 6)
        x0 = x.clone()
        with torch.no_grad():
            y = u(x)
            h = u.pre(x0.clone())
            expected = u.post_add(u.body(h) + u.shortcut(x0.clone(), h))
        assert torch.equal(x, x0), f"{unit}: the unit changed its input"
        torch.testing.assert_close(y, expected, rtol=0, atol=0)


def test_relu_preact_is_not_the_original_unit():
    torch.manual_seed(0)
    a = cnnzoo.create_model("resnet20", unit="post").eval()
    torch.manual_seed(0)
    d = cnnzoo.create_model("resnet20", unit="relu_preact").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (a(x) - d(x)).abs().max() > 1e-3


def test_orderings_place_norm_and_act_as_the_paper():
    def layout(unit):
        u = units(tiny(unit=unit))[0]

        def names(seq):
            return [type(m).__name__ for m in seq] if isinstance(seq, nn.Sequential) else []

        return names(u.pre), [type(m).__name__ for m in u.body], names(u.post_add)

    conv, bn, relu = "Conv2d", "BatchNorm2d", "ReLU"
    assert layout("post") == ([], [conv, bn, relu, conv, bn], [relu])
    assert layout("bn_after_add") == ([], [conv, bn, relu, conv], [bn, relu])
    assert layout("relu_before_add") == ([], [conv, bn, relu, conv, bn, relu], [])
    assert layout("relu_preact") == ([relu], [conv, bn, relu, conv, bn], [])
    assert layout("preact") == ([bn, relu], [conv, bn, relu, conv], [])


def test_preact_net_has_final_norm_act_and_projection_takes_preactivated_input():
    model = tiny(unit="preact", shortcut="B").eval()
    assert [type(m).__name__ for m in model.final] == ["BatchNorm2d", "ReLU"]
    proj = next(u for u in units(model) if isinstance(u.shortcut, ProjectionShortcut))
    assert proj.shortcut.use_pre and isinstance(proj.shortcut.norm, nn.Identity)
    x = torch.randn(2, proj.body[0].in_channels, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(proj.shortcut(x, proj.pre(x)), proj.shortcut.conv(proj.pre(x)))
    post = tiny(unit="post", shortcut="B")
    assert isinstance(post.final, nn.Identity)


def test_residual_learning_adds_no_parameters():
    # Option A shortcuts are parameter-free: ResNet-N and its plain twin have equal counts.
    for depth in (20, 56, 110):
        res, plain = cnnzoo.create_model(f"resnet{depth}"), cnnzoo.create_model(f"plain{depth}")
        assert sum(p.numel() for p in res.parameters()) == sum(p.numel() for p in plain.parameters())
    r18, p18 = cnnzoo.create_model("resnet18"), cnnzoo.create_model("plain18")
    proj = sum(p.numel() for m in r18.modules() if isinstance(m, ProjectionShortcut) for p in m.parameters())
    assert sum(p.numel() for p in r18.parameters()) - sum(p.numel() for p in p18.parameters()) == proj > 0


def test_zero_pad_shortcut_is_strided_identity_with_zero_channels():
    sc = ZeroPadShortcut(4, 8, 2)
    x = torch.randn(2, 4, 6, 6)
    y = sc(x, x)
    assert y.shape == (2, 8, 3, 3)
    assert torch.equal(y[:, :4], x[:, :, ::2, ::2]) and not y[:, 4:].any()


def test_scales_and_drop_path():
    x = torch.randn(2, 8, 6, 6)
    base = units(tiny())[1]
    scaled = units(tiny(residual_scale=0.25, shortcut_scale=0.5))[1]
    scaled.load_state_dict(base.state_dict())
    base.eval(), scaled.eval()
    with torch.no_grad():
        branch = base.body(x)
        torch.testing.assert_close(scaled(x), torch.relu(0.25 * branch + 0.5 * x))
    # drop path: linear schedule over units, owned by the stage builder
    rates = [u.drop_path.p if hasattr(u.drop_path, "p") else 0.0
             for u in units(tiny(drop_path_rate=0.3))]
    assert rates == pytest.approx([0.0, 0.15, 0.3])
    # in training a dropped branch leaves exactly the shortcut
    u = units(tiny(drop_path_rate=0.99))[2].train()
    torch.manual_seed(1)
    out = u(torch.randn(64, 8, 4, 4))
    assert out.shape == (64, 16, 2, 2)


def test_block_dropout_sits_between_branch_convs():
    u = units(tiny(block="bottleneck", block_dropout=0.3))[0]
    names = list(u.body._modules)
    assert names == ["conv1", "norm1", "act1", "drop1", "conv2", "norm2", "act2", "drop2", "conv3", "norm3"]


@pytest.mark.parametrize("stride_on,expected", [("3x3", (1, 2, 1)), ("1x1", (2, 1, 1))])
def test_bottleneck_stride_placement(stride_on, expected):
    model = tiny(block="bottleneck", stride_on=stride_on)
    u = units(model)[2]
    assert tuple(m.stride[0] for m in u.body if isinstance(m, nn.Conv2d)) == expected


def test_se_sits_on_the_branch_before_the_add():
    model = cnnzoo.create_model("se_resnet20").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        y0 = model(x)
        u = units(model)[4]
        u.attn.fc2.bias.add_(3.0)  # change one gate
        y1 = model(x)
    assert not torch.allclose(y0, y1)
    assert isinstance(cnnzoo.create_model("resnet20").stages[0][0].attn, nn.Identity)


def test_wide_and_generic_builders():
    m = cnnzoo.create_model("wrn", depth=16, widen=2, block_dropout=0.3)
    assert [s[0].body[-1].out_channels for s in m.stages] == [32, 64, 128]
    m = cnnzoo.create_model("cifar_resnet", depth=29, block="bottleneck", unit="preact", width=2)
    assert m.num_features == 64 * 2 * 4 and len(m.stages[0]) == 3
    m = cnnzoo.create_model("resnet", depth=50, stride_on="1x1", shortcut="C")
    assert all(isinstance(u.shortcut, ProjectionShortcut) for u in units(m))


@pytest.mark.parametrize("name,kw,match", [
    ("resnet20", dict(depth=21), "6n\\+2"),
    ("cifar_resnet", dict(depth=32, block="bottleneck"), "9n\\+2"),
    ("wrn28_10", dict(depth=27), "6n\\+4"),
    ("resnet", dict(depth=42), "depth must be one of"),
    ("resnet20", dict(unit="middle"), "unit='middle' is not allowed; choose one of"),
    ("resnet20", dict(shortcut="D"), "shortcut='D' is not allowed"),
    ("resnet20", dict(block="huge"), "block='huge' is not allowed"),
    ("resnet20", dict(widths=(16, -32, 64)), "positive"),
    ("resnet20", dict(width=0), "positive"),
    ("wrn16_4", dict(widen=-1), "positive"),
    ("resnet20", dict(norm_layer="batchy"), "unknown norm_layer"),
    ("resnet20", dict(act_layer="relux"), "unknown act_layer"),
    ("resnet20", dict(attn="cbam"), "unknown attn"),
    ("resnet20", dict(attn="se", se_ratio=2.0), "se_ratio"),
    ("resnet20", dict(head="mlp"), "head='mlp' is not allowed"),
    ("resnet20", dict(drop_path_rate=1.0), "drop_path_rate"),
    ("resnet20", dict(colour="red"), "unknown option\\(s\\) colour .*allowed: .*attn"),
    ("resnet20", dict(layers=(1, 1, 1)), "unknown option\\(s\\) layers"),
])
def test_bad_input_raises_clear_errors(name, kw, match):
    with pytest.raises(ValueError, match=match):
        cnnzoo.create_model(name, **kw)


def test_unknown_name_suggests_closest():
    with pytest.raises(ValueError, match="unknown model 'resnet57'.*closest: .*resnet56"):
        cnnzoo.create_model("resnet57")


def test_duplicate_registration_raises():
    from cnnzoo import register_model

    with pytest.raises(ValueError, match="already registered"):
        @register_model(name="resnet18")
        def resnet18_again(**kw):  # pragma: no cover - never registered
            return None


def test_list_models_wildcards_and_metadata():
    assert cnnzoo.list_models("wrn*") == ["wrn", "wrn16_4", "wrn16_8", "wrn28_10", "wrn40_4"]
    assert "plain110" in cnnzoo.list_models("plain*")
    meta = cnnzoo.get_model_meta("resnet56")
    assert meta.input_size == (3, 32, 32) and meta.num_classes == 10 and meta.params == 853_018
    assert cnnzoo.get_model_meta("se_resnet50").alias_of == "resnet50"


@pytest.mark.parametrize("unit", UNITS)
@pytest.mark.parametrize("extra", [{}, {"attn": "se"}, {"shortcut": "C"}, {"shortcut": "none"}])
def test_the_in_place_addition_leaves_outputs_gradients_and_input_as_they_were(unit, extra):
    """The unit adds the shortcut in place when that computes the same sum: with and without
    autograd recording, the output is the same, the input is untouched, and backward works (a
    trailing activation, whose output autograd saved, gets the out-of-place sum)."""
    torch.manual_seed(0)
    model = cnnzoo.create_model("cifar_resnet", depth=8, widths=(4, 8, 16), stem_width=4, unit=unit,
                                **extra).eval()
    x = torch.randn(2, 3, 16, 16)
    x0 = x.clone()
    with torch.no_grad():
        ref = model(x)
    xg = x.clone().requires_grad_(True)
    out = model(xg)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    out.square().sum().backward()
    assert torch.equal(x, x0) and xg.grad is not None and torch.isfinite(xg.grad).all()
    model.train()
    out = model(x.clone().requires_grad_(True))
    out.sum().backward()  # training mode: BN saves its input, never the output the sum rewrites
