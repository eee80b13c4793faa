"""Tests generated from the registry: every registered name gets the same checks."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F

import cnnzoo
from cnnzoo.models._base import count_params

ALL = cnnzoo.list_models()


@functools.cache
def _test_size(name: str) -> int:
    """The smallest of 16, 32, 64, 96 pixels that the network accepts (checked on the meta
    device, where a forward pass costs nothing): the tests stay fast for every model."""
    with torch.device("meta"):
        model = cnnzoo.create_model(name).eval()
        for size in (16, 32, 64, 96):
            try:
                model(torch.empty(1, 3, size, size))
                return size
            except RuntimeError:
                continue
    raise AssertionError(f"{name} accepts no input up to 96x96")


def _outputs(out):
    return list(out) if isinstance(out, tuple) else [out]


def test_registry_is_populated():
    assert len(ALL) >= 40
    assert cnnzoo.list_models("se_*") and all(n.startswith("se_") for n in cnnzoo.list_models("se_*"))


PUBLISHED = [n for n in ALL if cnnzoo.get_model_meta(n).params is not None]


def test_published_counts_cover_the_reference_table():
    for name in ("resnet18", "resnet50", "resnet56", "resnet1202", "wrn28_10", "se_resnet50",
                 "preact_resnet164", "preact_resnet1001", "wide_resnet50_2"):
        assert name in PUBLISHED


@pytest.mark.parametrize("name", PUBLISHED)
def test_param_count_matches_publication(name):
    meta = cnnzoo.get_model_meta(name)
    with torch.device("meta"):
        model = cnnzoo.create_model(name)
    n = count_params(model, meta.params_scope)
    assert abs(n - meta.params) <= meta.params_tol, f"{name}: {n:,} vs published {meta.params:,}"


@pytest.mark.parametrize("name", ALL)
def test_forward_and_backward(name):
    """Forward: shape, finite values. Backward (num_classes=7): every parameter gets a gradient.

    Train mode, so BN uses batch statistics as in training (in eval mode at init BN's running
    variance is 1 and a 1001-layer pre-activation net's sum of branches overflows fp32)."""
    size = _test_size(name)
    model = cnnzoo.create_model(name, num_classes=7).train()
    out = model(torch.randn(2, 3, size, size))
    assert all(o.shape == (2, 7) and torch.isfinite(o).all() for o in _outputs(out))
    loss = sum(F.cross_entropy(o, torch.tensor([1, 6])) for o in _outputs(out))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"{name}: no gradient for {missing[:5]}"


@pytest.mark.parametrize("name", ALL)
def test_common_overrides_and_api(name):
    # Shapes only (meta device): every family accepts the common overrides.
    size = _test_size(name)
    with torch.device("meta"):
        model = cnnzoo.create_model(name, num_classes=5, in_chans=1, drop_rate=0.1, attn="se",
                                    se_ratio=0.25, norm_layer="gn", act_layer="silu").eval()
        x = torch.empty(2, 1, size, size)
        feats = model.forward_features(x)
        assert feats.ndim == 4 and feats.shape[0] == 2
        assert model.forward_head(feats).shape == (2, 5)
        assert model(x).shape == (2, 5)
        model.reset_classifier(3)
        assert model(x).shape == (2, 3)
        model.reset_classifier(0)
        assert model(x).shape[0] == 2 and model(x).ndim == 2
    assert model.meta.name == name
    assert model.meta.family and model.meta.paper


@pytest.mark.parametrize("name", ALL)
def test_head_types(name):
    size = _test_size(name)
    with torch.device("meta"):
        for head in ("gap", "fc"):
            model = cnnzoo.create_model(name, head=head, fc_hidden=32, fc_pool=2).eval()
            assert model(torch.empty(1, 3, size, size)).shape == (1, model.meta.num_classes)
            assert model.head.head_type == head


@pytest.mark.parametrize("name", ALL)
def test_unknown_option_is_rejected(name):
    with pytest.raises(ValueError, match="allowed"):
        cnnzoo.create_model(name, no_such_option=1)
