"""DenseNet: published counts, options, memory-efficient path, SE placement, torchvision
equivalence, bad input."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

import cnnzoo
from cnnzoo.interop import load_external
from cnnzoo.layers import SqueezeExcite
from cnnzoo.models.densenet import DenseLayer, DenseNet

from .helpers import count as _count
from .helpers import meta_model as _meta
from .helpers import randomize_

TV_NAMES = ["densenet121", "densenet161", "densenet169", "densenet201"]


# --------------------------------------------------------------------------------------------
# torchvision equivalence


def _tv_pair(name: str):
    tv = randomize_(getattr(torchvision.models, name)()).eval()
    return tv, cnnzoo.create_model(name).eval()


@pytest.mark.parametrize("name", TV_NAMES)
def test_torchvision_equivalence(name):
    tv, ours = _tv_pair(name)
    load_external(ours, tv.state_dict(), source="torchvision")
    x = torch.randn(2, 3, 64, 64)  # a 2x2 map after the last block
    with torch.no_grad():
        ref, out = tv(x), ours(x)
    err = (ref - out).abs().max().item()
    print(f"{name}: max abs error {err:.3g} (outputs up to {ref.abs().max().item():.3g})")
    assert out.shape == (2, 1000)
    assert err <= 1e-5


def test_torchvision_legacy_checkpoint_keys_are_accepted():
    # torchvision's old checkpoint files spell 'denselayer1.norm.1'; their loader renames them.
    tv, ours = _tv_pair("densenet121")
    legacy = {re.sub(r"(denselayer\d+\.(?:norm|relu|conv))([12])\.", r"\1.\2.", k): v
              for k, v in tv.state_dict().items()}
    assert "features.denseblock1.denselayer1.norm.1.weight" in legacy
    load_external(ours, legacy, source="torchvision")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert (tv(x) - ours(x)).abs().max().item() <= 1e-5


def test_torchvision_mismatch_is_reported():
    with torch.device("meta"):
        tv = torchvision.models.densenet169()
        ours = cnnzoo.create_model("densenet121")
    with pytest.raises(ValueError, match="torchvision weights do not fit|shape mismatch"):
        load_external(ours, tv.state_dict(), source="torchvision")


# --------------------------------------------------------------------------------------------
# Architecture and counts


def test_imagenet_layout():
    model = _meta("densenet121")
    assert model.stem.conv.out_channels == 64 and model.stem.conv.kernel_size == (7, 7)
    assert [len(s.layers) for s in model.stages] == [6, 12, 24, 16]
    # floor(0.5 m) channels out of each transition: 256->128, 512->256, 1024->512; 1024 at the end.
    assert [s.transition.conv.out_channels for s in model.stages[:3]] == [128, 256, 512]
    assert isinstance(model.stages[3].transition, nn.Identity)
    assert model.num_features == 1024
    layer = model.stages[0].layers[0]
    assert layer.conv1.conv.kernel_size == (1, 1) and layer.conv1.conv.out_channels == 128  # 4k
    assert layer.conv2.conv.kernel_size == (3, 3) and layer.conv2.conv.out_channels == 32
    assert _meta("densenet161").stem.conv.out_channels == 96


# The faithful models' exact counts (10 classes); the registry checks them against the paper's
# rounded figures (1.0M / 7.0M / 27.2M / 0.8M / 15.3M / 25.6M).
CIFAR_COUNTS = {
    "densenet40_12": 1_019_722, "densenet100_12": 6_979_642, "densenet100_24": 27_249_082,
    "densenet_bc_100_12": 769_162, "densenet_bc_250_24": 15_324_406, "densenet_bc_190_40": 25_624_430,
}


@pytest.mark.parametrize("name", list(CIFAR_COUNTS))
def test_cifar_counts(name):
    assert _count(_meta(name)) == CIFAR_COUNTS[name]


def test_cifar_layouts():
    plain = _meta("densenet40_12")
    assert plain.stem.conv.out_channels == 16 and plain.stem.conv.kernel_size == (3, 3)
    assert [len(s.layers) for s in plain.stages] == [12, 12, 12]
    assert isinstance(plain.stages[0].layers[0].conv2, nn.Identity)  # no bottleneck
    assert plain.stages[0].layers[0].conv1.conv.kernel_size == (3, 3)
    assert plain.stages[0].transition.conv.out_channels == 16 + 12 * 12  # no compression
    bc = _meta("densenet_bc_100_12")
    assert bc.stem.conv.out_channels == 24  # 2k
    assert [len(s.layers) for s in bc.stages] == [16, 16, 16]
    assert bc.stages[0].layers[0].conv1.conv.out_channels == 48  # 4k bottleneck
    assert bc.stages[0].transition.conv.out_channels == (24 + 16 * 12) // 2
    model = cnnzoo.create_model("cifar_densenet", depth=22, bc=True)  # any depth: 3 x 3 layers
    assert [len(s.layers) for s in model.stages] == [3, 3, 3]
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_growth_and_blocks_are_options():
    model = cnnzoo.create_model("densenet", growth_rate=8, block_config=(2, 3), num_classes=3)
    assert [len(s.layers) for s in model.stages] == [2, 3]
    assert model.stem.conv.out_channels == 16
    assert model.num_features == (16 + 2 * 8) // 2 + 3 * 8
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 3)
    model = cnnzoo.create_model("densenet", growth_rate=8, block_config=(2, 3), compression=1.0,
                                bn_size=2, stem_width=10)
    assert model.stages[0].transition.conv.out_channels == 10 + 16
    assert model.stages[0].layers[0].conv1.conv.out_channels == 16


def test_drop_rate_is_the_classifiers_and_layer_drop_rate_each_layers():
    model = _meta("densenet121", drop_rate=0.2, layer_drop_rate=0.1)
    assert isinstance(model.head.drop, nn.Dropout) and model.head.drop.p == 0.2
    drops = [m.drop for m in model.modules() if isinstance(m, DenseLayer)]
    assert len(drops) == 58 and all(isinstance(d, nn.Dropout) and d.p == 0.1 for d in drops)
    plain = _meta("densenet121")
    assert all(isinstance(m.drop, nn.Identity) for m in plain.modules() if isinstance(m, DenseLayer))


# --------------------------------------------------------------------------------------------
# Heads


def test_fc_head_on_densenet121_builds_runs_and_counts():
    c, classes = 1024, 1000
    gap = _count(_meta("densenet121"))
    fc = _count(_meta("densenet121", head="fc"))
    fc_head = c * 49 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * classes + classes
    assert fc - gap == fc_head - (c * classes + classes)
    small = _count(_meta("densenet121", head="fc", fc_hidden=256, fc_pool=2))
    small_head = c * 4 * 256 + 256 + 256 * 256 + 256 + 256 * classes + classes
    assert small - gap == small_head - (c * classes + classes)
    model = cnnzoo.create_model("densenet121", head="fc", fc_hidden=256, fc_pool=2).eval()
    assert model.head.head_type == "fc"
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 1000)


# --------------------------------------------------------------------------------------------
# Memory-efficient path


@pytest.mark.parametrize("kw", [
    dict(depth=40, bc=True),  # bottleneck: the checkpoint covers concat-BN-ReLU-1x1-BN-ReLU
    dict(depth=13, bc=False, layer_drop_rate=0.2),  # plain layers, with per-layer dropout
    dict(depth=22, bc=True, attn="se"),
])
def test_memory_efficient_gradients_equal_the_default(kw, monkeypatch):
    import cnnzoo.models.densenet as densenet_module

    calls = []
    real = densenet_module.checkpoint
    monkeypatch.setattr(densenet_module, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))
    ref = cnnzoo.create_model("cifar_densenet", growth_rate=6, **kw).train()
    eff = cnnzoo.create_model("cifar_densenet", growth_rate=6, memory_efficient=True, **kw).train()
    eff.load_state_dict(ref.state_dict())
    x = torch.randn(4, 3, 32, 32)
    target = torch.tensor([0, 3, 5, 9])
    outs = []
    for model in (ref, eff):
        xi = x.clone().requires_grad_(True)
        torch.manual_seed(7)  # same dropout masks
        loss = F.cross_entropy(model(xi), target)
        loss.backward()
        outs.append((loss.detach(), xi.grad, {n: p.grad for n, p in model.named_parameters()},
                     {n: b.clone() for n, b in model.named_buffers()}))
    (l0, gx0, g0, b0), (l1, gx1, g1, b1) = outs
    assert len(calls) == sum(isinstance(m, DenseLayer) for m in eff.modules())  # the path was taken
    assert torch.equal(l0, l1)
    torch.testing.assert_close(gx1, gx0, rtol=0, atol=1e-7)
    assert g0.keys() == g1.keys()
    for n in g0:
        assert g0[n] is not None and g1[n] is not None, n
        torch.testing.assert_close(g1[n], g0[n], rtol=1e-6, atol=1e-7, msg=n)
    # BN running statistics are updated once, not again by the recomputation.
    for n in b0:
        torch.testing.assert_close(b1[n], b0[n], rtol=0, atol=0, msg=n)


def test_memory_efficient_is_plain_in_eval_and_without_grad():
    model = cnnzoo.create_model("cifar_densenet", depth=22, bc=True, memory_efficient=True).eval()
    ref = cnnzoo.create_model("cifar_densenet", depth=22, bc=True).eval()
    ref.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), ref(x))


# --------------------------------------------------------------------------------------------
# SE


def test_se_sits_on_each_layers_new_features():
    model = _meta("se_densenet_bc_100_12")
    layers = [m for m in model.modules() if isinstance(m, DenseLayer)]
    assert len(layers) == 48
    assert all(isinstance(m.attn, SqueezeExcite) and m.attn.fc1.in_channels == 12 for m in layers)
    # Every gate belongs to a dense layer (none on transitions or the block output).
    assert sum(isinstance(m, SqueezeExcite) for m in model.modules()) == 48
    assert cnnzoo.get_model_meta("se_densenet121").alias_of == "densenet121"
    assert sum(isinstance(m, SqueezeExcite) for m in _meta("se_densenet121").modules()) == 58


def test_se_gates_only_the_new_features():
    torch.manual_seed(0)
    layer_model = cnnzoo.create_model("cifar_densenet", depth=10, growth_rate=4, bc=True, attn="se").eval()
    layer = layer_model.stages[0].layers[0]
    x = torch.randn(2, layer.conv1.conv.in_channels, 8, 8)
    with torch.no_grad():
        new = layer([x])
        ungated = layer.conv2(layer.conv1(x))
        se = layer.attn
        gate = torch.sigmoid(se.fc2(se.act(se.fc1(ungated.mean((2, 3), keepdim=True)))))
    assert new.shape == (2, 4, 8, 8)
    torch.testing.assert_close(new, ungated * gate)


def test_changing_an_se_gate_changes_the_output():
    model = cnnzoo.create_model("cifar_densenet", depth=22, bc=True, attn="se").eval()
    x = torch.randn(2, 3, 32, 32)
    gates = [m for m in model.modules() if isinstance(m, SqueezeExcite)]
    with torch.no_grad():
        ref = model(x)
        for g in (gates[0], gates[len(gates) // 2], gates[-1]):
            g.fc2.bias.add_(1.0)
            assert not torch.allclose(model(x), ref), "an SE gate has no effect on the output"
            g.fc2.bias.sub_(1.0)
        assert torch.allclose(model(x), ref)


# --------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize("name,kw,match", [
    ("densenet121", dict(no_such_option=1), "allowed"),
    ("densenet121", dict(block_config=(1, 1)), "allowed"),  # named models fix their structure
    ("densenet121", dict(depth=169), "allowed"),
    ("densenet_bc_100_12", dict(bc=False), "allowed"),
    ("densenet121", dict(growth_rate=0), "growth_rate"),
    ("densenet121", dict(growth_rate=-12), "growth_rate"),
    ("densenet121", dict(growth_rate=12.5), "growth_rate"),
    ("densenet121", dict(bn_size=0), "bn_size"),
    ("densenet121", dict(compression=0), "compression"),
    ("densenet121", dict(compression=1.5), "compression"),
    ("densenet121", dict(stem_width=0), "stem_width"),
    ("densenet121", dict(layer_drop_rate=1.0), "layer_drop_rate"),
    ("densenet121", dict(drop_rate=-0.1), "drop_rate"),
    ("densenet121", dict(head="mlp"), "head"),
    ("densenet121", dict(attn="cbam"), "attn"),
    ("densenet", dict(depth=121), "allowed"),  # the generic builder takes block_config
    ("densenet", dict(block_config=()), "block_config"),
    ("densenet", dict(block_config=(6, 0)), "block_config"),
    ("densenet_bc_100_12", dict(growth_rate=0), "growth_rate"),
    ("cifar_densenet", dict(depth=41), "3n\\+4"),
    ("cifar_densenet", dict(depth=40.0), "depth"),
    ("cifar_densenet", dict(depth=41, bc=True), "6n\\+4"),
    ("cifar_densenet", dict(bottleneck=True), "allowed"),  # say bc=True
])
def test_bad_options_raise(name, kw, match):
    with pytest.raises(ValueError, match=match):
        _meta(name, **kw)


def test_densenet_class_is_what_the_registry_builds():
    assert isinstance(_meta("densenet_bc_190_40"), DenseNet)


# --------------------------------------------------------------------------------------------
# Memory: a block's feature maps are gone when its transition runs


def _features_alive_at_transition(model: nn.Module, stage: nn.Module, x: torch.Tensor) -> list[bool]:
    """For each dense layer of ``stage``: is its output still alive when the transition starts?"""
    import weakref

    refs = []
    # each layer's last module (the eager and the fast path both call it)
    hooks = [layer.drop.register_forward_hook(lambda m, a, out: refs.append(weakref.ref(out)))
             for layer in stage.layers]
    alive = []
    hooks.append(stage.transition.register_forward_pre_hook(
        lambda m, a: alive.extend(r() is not None for r in refs)))
    with torch.inference_mode():
        model(x)
    for h in hooks:
        h.remove()
    return alive


def test_block_features_are_freed_before_the_transition_runs():
    """As torchvision's separate block and transition modules: only the concatenation (and the
    block's input, which the caller holds) lives on, not each layer's new features as well."""
    from cnnzoo.optimize import for_inference

    model = cnnzoo.create_model("cifar_densenet", depth=22, bc=True).eval()
    x = torch.randn(2, 3, 32, 32)
    alive = _features_alive_at_transition(model, model.stages[0], x)
    assert len(alive) == len(model.stages[0].layers) and not any(alive)
    fast = for_inference(model)
    alive = _features_alive_at_transition(fast, fast.stages[0], x)
    assert len(alive) == len(fast.stages[0].layers) and not any(alive)
