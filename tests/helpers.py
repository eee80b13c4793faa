"""Shared test utilities."""

from __future__ import annotations

import torch
import torch.nn as nn


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BN affine parameters and running statistics, so equivalence tests are not trivial."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            with torch.no_grad():
                m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                if m.affine:
                    m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                    m.bias.copy_(torch.rand(n, generator=g) - 0.5)
    return model


def max_abs_diff(a: nn.Module, b: nn.Module, x: torch.Tensor) -> float:
    a.eval(), b.eval()
    with torch.no_grad():
        return (a(x) - b(x)).abs().max().item()


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def meta_model(name: str, **kw) -> nn.Module:
    """A registered model built on the meta device: shapes and counts, no memory, no init."""
    import cnnzoo

    with torch.device("meta"):
        return cnnzoo.create_model(name, **kw)


def randomize_(model: nn.Module, seed: int = 1) -> nn.Module:
    """Random weights and random BN running statistics (nothing left at its init value)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.dtype.is_floating_point:
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith("running_mean"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            elif t.ndim == 1 and name.endswith("weight"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith("bias"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            else:
                t.copy_(torch.randn(t.shape, generator=g) * (2.0 / t[0].numel()) ** 0.5)
    return model


# A tiny CIFAR ResNet on 16x16 digits: what the training tests train, fast on two CPU cores.
TINY = {"depth": 8, "widths": (8, 16, 32), "stem_width": 8}


def tiny_config(out, cache_dir, **kw):
    """A resolved training config for the tiny model on 512 digits (``iters=`` replaces ``epochs``)."""
    from cnnzoo.train import resolve_config

    flags = dict(model="cifar_resnet", model_opts=dict(TINY), data="digits", image_size=16, subset=512,
                 val_size=64, cache_dir=cache_dir, out=str(out), epochs=1, batch_size=64, lr=0.1,
                 device="cpu", channels_last=False)
    # NCHW, not "auto": tests that compare two runs bit for bit must not depend on a timing
    # (tests/test_layout.py covers "auto")
    if "iters" in kw:
        del flags["epochs"]
    flags.update(kw)
    return resolve_config(flags)
