"""The inference fast path: ``for_inference`` computes the original's eval-mode function, faster.

Equivalence is checked against the original model run in float64 (the exact answer, to within
1e-16), on one model per family plus the pre-activation, SE, CIFAR and dropout variants, with
random weights and random BN running statistics (``randomize_``), so that no BN is an identity.

The fp32 tolerance, 1e-4 of the largest output, follows from float32 rounding: the unit roundoff
is u = 2^-24 = 6e-8; a conv output summing K products carries a relative error of about
u sqrt(K) (K <= 4608 here: <= 4e-6), and folding adds one rounding per weight (u). Over the
D <= 170 layers of these networks independent errors add like a random walk: sqrt(170) 4e-6 =
5e-5 < 1e-4. The eager fp32 original itself sits at the same level (1e-7 - 1e-6 measured), which
the test prints beside the fast path's error.

bf16 has u = 2^-9 = 2e-3: each layer rounds its weights and output, about 2u of relative error
per layer, sqrt(D) 2u over D layers; twice that is the tolerance. Top-1 must agree on every
sample whose fp32 margin (best minus second logit) exceeds twice the tolerated error, the margin
that error cannot overturn.
"""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn as nn

import cnnzoo
from cnnzoo.layers import DropPath
from cnnzoo.models.resnet import ResNet
from cnnzoo.optimize import AffineConcat, fold_batchnorms, for_inference

from .helpers import randomize_

FP32_TOL = 1e-4

# id -> (registered name, overrides, input pixels). Thin widths where a name allows, so each
# case runs in well under a second.
CASES = {
    "resnet20": ("resnet20", {}, 32),
    "resnet50_thin": ("resnet50", dict(widths=(8, 16, 32, 64), stem_width=8), 64),
    "se_resnet20": ("se_resnet20", {}, 32),
    "plain20": ("plain20", {}, 32),
    "resnet_shortcut_C_droppath": ("cifar_resnet", dict(depth=8, shortcut="C", drop_path_rate=0.2), 32),
    "preact_resnet18_thin": ("preact_resnet18", dict(widths=(8, 16, 32, 64), stem_width=8), 64),
    "preact_resnet164_thin": ("preact_resnet164", dict(widths=(4, 8, 16)), 16),
    "relu_preact": ("cifar_resnet", dict(depth=8, unit="relu_preact"), 32),
    "relu_before_add": ("cifar_resnet", dict(depth=8, unit="relu_before_add"), 32),
    "bn_after_add": ("cifar_resnet", dict(depth=8, unit="bn_after_add"), 32),
    "relu_before_and_after_add": ("cifar_resnet", dict(depth=8, unit="relu_before_and_after_add"), 32),
    "preact_bottleneck_raw_projection": ("cifar_resnet", dict(depth=11, block="bottleneck", unit="preact",
                                                              shortcut="B", projection_input="raw"), 32),
    "wrn_dropout": ("wrn", dict(depth=10, widen=1, block_dropout=0.3), 16),
    "cifar_vgg11": ("cifar_vgg11", dict(width=0.25), 32),
    "vgg11_bn_thin": ("vgg11_bn", dict(width=0.125, fc_hidden=32), 32),
    "se_vgg16_no_bn": ("se_vgg16", dict(width=0.125, fc_hidden=32), 32),
    "googlenet_tv": ("googlenet_tv", {}, 64),
    "se_googlenet_aux": ("se_googlenet", dict(aux_logits=True), 64),
    "googlenet_no_norm": ("googlenet", dict(norm=None), 64),
    "cifar_googlenet": ("cifar_googlenet", {}, 16),
    "densenet121_thin": ("densenet121", dict(growth_rate=8, layer_drop_rate=0.2), 64),
    "densenet_bc_100_12": ("densenet_bc_100_12", {}, 16),
    "densenet40_12": ("densenet40_12", {}, 16),
    "se_densenet_bc_100_12": ("se_densenet_bc_100_12", {}, 16),
    "densenet_bc_no_act": ("cifar_densenet", dict(depth=22, growth_rate=8, bc=True, act_layer=None), 16),
}

# The BNs that no rewrite can remove (see cnnzoo.optimize), all in ResNets: a pre-activation
# unit's BN on its input and the final BN (both read a sum the shortcut also reads), and the BN
# after the addition of the bn_after_add ordering. Every other BN of every family goes.
UNFOLDABLE = re.compile(r"(\.pre\.norm|\.post_add\.norm|^final\.norm)$")


def _unfoldable(model: nn.Module) -> set[str]:
    return {n for n in _bns(model) if UNFOLDABLE.search(n)} if isinstance(model, ResNet) else set()


def _bns(model: nn.Module) -> set[str]:
    return {n for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}


def _build(case: str) -> tuple[nn.Module, torch.Tensor]:
    name, kw, px = CASES[case]
    torch.manual_seed(0)
    model = randomize_(cnnzoo.create_model(name, **kw)).eval()
    return model, torch.randn(4, 3, px, px, generator=torch.Generator().manual_seed(1))


def _rel_err(out: torch.Tensor, exact: torch.Tensor) -> float:
    return ((out.double() - exact).abs().max() / exact.abs().max()).item()


@pytest.mark.parametrize("case", CASES)
def test_fast_path_equals_the_original_in_fp32(case):
    model, x = _build(case)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = for_inference(model)
    with torch.no_grad():
        eager = model(x)
        exact = model.double()(x.double())
        model.float()
        out = fast(x)
    err, eager_err = _rel_err(out, exact), _rel_err(eager, exact)
    print(f"{case}: fast path {err:.2e}, eager fp32 {eager_err:.2e} of max |logit| "
          f"{exact.abs().max().item():.3g}")
    assert out.dtype == torch.float32 and out.shape == eager.shape
    assert err <= FP32_TOL

    # The caller's model is untouched; the copy is folded where folding is possible.
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    left, expected = _bns(fast), _unfoldable(model)
    assert left == expected, f"left {sorted(left - expected)[:4]}, folded {sorted(expected - left)[:4]}"
    assert not any(isinstance(m, (nn.modules.dropout._DropoutNd, DropPath)) for m in fast.modules())
    assert not fast.training and not any(p.requires_grad for p in fast.parameters())
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in fast.parameters() if p.dim() == 4)


def test_the_cases_cover_every_family_and_both_kinds_of_leftover():
    families = {cnnzoo.get_model_meta(name).family for name, _, _ in CASES.values()}
    assert families == {m.family for m in map(cnnzoo.get_model_meta, cnnzoo.list_models())}
    leftovers = [bool(_bns(for_inference(_build(c)[0]))) for c in ("resnet20", "preact_resnet18_thin")]
    assert leftovers == [False, True]


def test_densenet_bns_move_into_the_concatenations_and_transitions_pool_first():
    model, x = _build("densenet121_thin")
    fast = for_inference(model, channels_last=False)
    concats = [m for m in fast.modules() if isinstance(m, AffineConcat) and m.affine]
    # one per dense layer (its conv1's BN), one per transition, and the final BN
    assert len(concats) == sum(model.stages[i].layers.__len__() for i in range(4)) + 3 + 1
    t = fast.stages[0].transition
    assert [type(m).__name__ for m in t] == ["Identity", "ReLU", "AvgPool2d", "Conv2d"]
    with torch.no_grad():
        assert _rel_err(fast(x), model.double()(x.double())) <= FP32_TOL


@pytest.mark.parametrize("channels_last", [False, True])
def test_affine_concat_is_batch_norm_of_the_concatenation(channels_last):
    g = torch.Generator().manual_seed(0)
    bn = randomize_(nn.BatchNorm2d(12)).eval()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    xs = [torch.randn(2, c, 5, 5, generator=g).contiguous(memory_format=fmt) for c in (8, 3, 1)]
    with torch.no_grad():
        ref, out = bn(torch.cat(xs, 1)), AffineConcat(bn)(xs)
    assert out.is_contiguous(memory_format=fmt)
    # one multiply-add per element in either form: a few units of rounding apart
    assert (out - ref).abs().max().item() <= 4 * 2 ** -24 * ref.abs().max().item()
    assert torch.equal(AffineConcat()(xs), torch.cat(xs, 1))


def test_bn_before_a_conv_folds_only_where_the_conv_pads_nothing():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 7, 7)
    for pad, folds in ((0, True), (1, False)):
        for groups in (1, 3):
            conv = nn.Conv2d(6, 9, 3, padding=pad, groups=groups)
            model = randomize_(nn.Sequential(nn.BatchNorm2d(6), conv)).eval()
            with torch.no_grad():
                ref = model(x)
                n = fold_batchnorms(model)
                assert (model(x) - ref).abs().max().item() <= FP32_TOL * ref.abs().max().item()
            assert (n == 1) == folds and isinstance(model[0], nn.Identity) == folds


def test_fold_batchnorms_needs_eval_mode():
    with pytest.raises(ValueError, match="eval-mode"):
        fold_batchnorms(cnnzoo.create_model("resnet20"))


def _bf16_tolerance(model: nn.Module) -> float:
    """2 x sqrt(D) x 2u, D the conv and linear layers, u = 2^-9 (module docstring)."""
    depth = sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())
    return 2 * math.sqrt(depth) * 2 * 2 ** -9


@pytest.mark.parametrize("case", ["resnet20", "densenet_bc_100_12"])
def test_bf16_agrees_on_top1(case):
    model, _ = _build(case)
    x = torch.randn(256, 3, 32 if case == "resnet20" else 16, 32 if case == "resnet20" else 16,
                    generator=torch.Generator().manual_seed(2))
    fast = for_inference(model, dtype=torch.bfloat16)
    with torch.no_grad():
        ref, out = model(x), fast(x)
    assert out.dtype == torch.bfloat16
    tol = _bf16_tolerance(model)
    scale = ref.abs().max()
    err = ((out.float() - ref).abs().max() / scale).item()
    top2 = ref.topk(2, 1).values
    clear = (top2[:, 0] - top2[:, 1]) > 2 * tol * scale
    agree = (out.float().argmax(1) == ref.argmax(1))
    print(f"{case} bf16: error {err:.2e} (tolerance {tol:.2e}), top-1 agreement {agree.float().mean():.1%} "
          f"of all, {agree[clear].float().mean():.1%} of the {int(clear.sum())} clear samples")
    assert err <= tol
    assert clear.sum() >= 16  # the check below is not vacuous (random logits: small margins)
    assert agree[clear].all()


def test_the_fast_model_refuses_training_and_casts_its_input():
    model = cnnzoo.create_model("resnet20").eval()
    fast = for_inference(model, dtype=torch.bfloat16, channels_last=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert fast(x).dtype == torch.bfloat16  # fp32 input accepted, cast on the way in
    fast.train()
    with pytest.raises(RuntimeError, match="evaluation only"):
        fast(x)
    with pytest.raises(ValueError, match="floating torch.dtype"):
        for_inference(model, dtype=torch.int8)


def test_compile_wraps_the_folded_copy():
    model = cnnzoo.create_model("resnet20").eval()
    fast = for_inference(model, compile=True)  # compiled lazily, on the first call (not made here)
    assert isinstance(fast, torch._dynamo.eval_frame.OptimizedModule)
    assert not _bns(fast._orig_mod) and _bns(model)
