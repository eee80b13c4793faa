"""torch.hub: every registered model is an entry point of hubconf.py, options passed through; and
``import cnnzoo`` gives every public sub-package as an attribute, imported on first use."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import cnnzoo

ROOT = Path(__file__).resolve().parents[1]


def _hubconf():
    spec = importlib.util.spec_from_file_location("cnnzoo_hubconf", ROOT / "hubconf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_registered_model_is_an_entry_point():
    hub = _hubconf()
    # What torch.hub.list reports (it reads GitHub repositories only; this is its rule).
    entrypoints = sorted(f for f in dir(hub) if callable(getattr(hub, f)) and not f.startswith("_"))
    assert entrypoints == cnnzoo.list_models()
    assert "resnet56" in hub.resnet56.__doc__ and "resnet20" in hub.se_resnet20.__doc__


@pytest.mark.parametrize("name", cnnzoo.list_models())
def test_torch_hub_loads_every_model(name):
    with torch.device("meta"):  # shapes only: no memory, no init
        model = torch.hub.load(str(ROOT), name, source="local", verbose=False)
    assert model.meta.name == name
    assert sum(p.numel() for p in model.parameters()) > 0


@pytest.mark.parametrize("name, opts", [
    ("resnet56", {}),
    ("resnet56", dict(attn="se", num_classes=7)),
    ("densenet_bc_100_12", dict(in_chans=1, growth_rate=6)),
    ("cifar_googlenet", dict(factorize_5x5=True, num_classes=3)),
])
def test_torch_hub_load_is_create_model(name, opts):
    torch.manual_seed(0)
    loaded = torch.hub.load(str(ROOT), name, source="local", verbose=False, **opts)
    torch.manual_seed(0)
    built = cnnzoo.create_model(name, **opts)
    a, b = loaded.state_dict(), built.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert loaded.num_classes == opts.get("num_classes", cnnzoo.get_model_meta(name).num_classes)


def test_bad_options_through_the_hub_are_value_errors():
    with pytest.raises(ValueError, match="unknown option"):
        torch.hub.load(str(ROOT), "resnet56", source="local", verbose=False, colour="red")


def test_every_public_sub_package_is_an_attribute_imported_on_first_use():
    names = ("analysis", "data", "export", "features", "interop", "layers", "models", "predict", "train",
             "weights")
    code = ("import sys, cnnzoo\n"
            "print('torch' in sys.modules)\n"
            f"for n in {names!r}:\n"
            "    assert n in dir(cnnzoo), n\n"
            "    assert getattr(cnnzoo, n) is sys.modules['cnnzoo.' + n], n\n"
            "print(cnnzoo.interop.__name__, callable(cnnzoo.save_weights))\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "cnnzoo.interop", "True"]
