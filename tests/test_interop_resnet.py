"""torchvision/timm ResNet weights load strictly and give the same outputs."""

from __future__ import annotations

import pytest
import torch
import torchvision

import cnnzoo
from cnnzoo.interop import convert_state_dict, load_external

from .helpers import max_abs_diff, randomize_bn

timm = pytest.importorskip("timm")


@pytest.mark.parametrize("source,ctor,name", [
    ("torchvision", lambda: torchvision.models.resnet18(), "resnet18"),
    ("torchvision", lambda: torchvision.models.resnet50(), "resnet50"),
    ("torchvision", lambda: torchvision.models.wide_resnet50_2(), "wide_resnet50_2"),
    ("timm", lambda: timm.create_model("seresnet50"), "se_resnet50"),
    ("timm", lambda: timm.create_model("resnet18"), "resnet18"),
])
def test_external_resnet_weights_give_the_same_output(source, ctor, name):
    torch.manual_seed(0)
    ext = randomize_bn(ctor()).eval()
    model = load_external(cnnzoo.create_model(name), ext.state_dict(), source).eval()
    x = torch.randn(2, 3, 128, 128)
    err = max_abs_diff(model, ext, x)
    print(f"{source} {name}: max abs diff {err:.3g}")
    assert err <= 1e-5


def test_mismatched_weights_are_refused_with_names():
    tv = torchvision.models.resnet18().state_dict()
    with pytest.raises(ValueError, match="missing"):
        convert_state_dict(cnnzoo.create_model("se_resnet18"), tv, "torchvision")
    with pytest.raises(ValueError, match="shape mismatch.*fc"):
        convert_state_dict(cnnzoo.create_model("resnet18", num_classes=10), tv, "torchvision")
    with pytest.raises(ValueError, match="unused"):
        convert_state_dict(cnnzoo.create_model("resnet18"), torchvision.models.resnet34().state_dict(),
                           "torchvision")
    with pytest.raises(ValueError, match="unknown source"):
        load_external(cnnzoo.create_model("resnet18"), tv, "keras")
