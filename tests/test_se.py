"""SE is one option on every family: the same module, placed where each family's docstring says."""

from __future__ import annotations

import pytest
import torch

import cnnzoo
from cnnzoo.layers import SqueezeExcite


def _smallest_per_family() -> dict[str, str]:
    """One registered model per family: the one with the smallest default input."""
    best: dict[str, tuple] = {}
    for name in cnnzoo.list_models():
        meta = cnnzoo.get_model_meta(name)
        if meta.alias_of:
            continue
        key = (meta.input_size[-1], len(name), name)
        if meta.family not in best or key < best[meta.family]:
            best[meta.family] = key
    return {fam: key[2] for fam, key in sorted(best.items())}


FAMILIES = _smallest_per_family()


def test_every_family_is_covered():
    assert {"resnet", "vgg", "googlenet", "densenet"} <= set(FAMILIES)


@pytest.mark.parametrize("family,name", FAMILIES.items())
def test_every_se_gate_changes_the_output(family, name):
    model = cnnzoo.create_model(name, attn="se").eval()
    size = model.meta.input_size[-1]
    gates = [m for m in model.modules() if isinstance(m, SqueezeExcite)]
    assert gates, f"{name}: attn='se' built no SqueezeExcite"
    assert not any(isinstance(m, SqueezeExcite) for m in cnnzoo.create_model(name).modules())
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        base = model(x)
        # Each gate is on the forward path: changing its weights changes the logits.
        for i in sorted({0, len(gates) // 2, len(gates) - 1}):
            saved = gates[i].fc2.bias.clone()
            gates[i].fc2.bias.sub_(4.0)
            assert not torch.allclose(model(x), base), f"{name}: gate {i} has no effect"
            gates[i].fc2.bias.copy_(saved)
        torch.testing.assert_close(model(x), base)


@pytest.mark.parametrize("name", cnnzoo.list_models("se_*"))
def test_se_aliases_only_set_the_option(name):
    meta = cnnzoo.get_model_meta(name)
    assert meta.alias_of and meta.defaults.get("attn") == "se"
    with torch.device("meta"):
        alias = cnnzoo.create_model(name)
        target = cnnzoo.create_model(meta.alias_of, attn="se")
    assert [(k, v.shape) for k, v in alias.state_dict().items()] == \
           [(k, v.shape) for k, v in target.state_dict().items()]
