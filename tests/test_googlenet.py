"""GoogLeNet family: Table 1 structure, options, aux heads, SE placement, torchvision weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import cnnzoo
from cnnzoo.interop import load_external
from cnnzoo.models.googlenet import INCEPTION_V1, AuxPool, GoogLeNet, GoogLeNetOutputs


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def conv_linear_weights(m: nn.Module) -> int:
    return sum(x.weight.numel() for x in m.modules() if isinstance(x, (nn.Conv2d, nn.Linear)))


def meta_model(name: str, **kw) -> nn.Module:
    with torch.device("meta"):  # shapes only
        return cnnzoo.create_model(name, **kw)


# ------------------------------------------------------------------------------------------
# Structure and counts, recomputed from the rows of Table 1.


def row_weights(cin: int, r, k5: int = 5) -> int:
    """Conv weights of one Inception module from its Table 1 row (no biases)."""
    return (cin * r.n1x1 + cin * r.n3x3_reduce + 9 * r.n3x3_reduce * r.n3x3
            + cin * r.n5x5_reduce + k5 * k5 * r.n5x5_reduce * r.n5x5 + cin * r.pool_proj)


@pytest.mark.parametrize("name,k5,norm", [("googlenet", 5, "bn"), ("googlenet", 5, None),
                                          ("googlenet_tv", 3, "bn")])
def test_count_follows_table1_rows(name, k5, norm):
    m = meta_model(name, norm=norm)
    cin, weights, channels = 192, 3 * 49 * 64 + 64 * 64 + 9 * 64 * 192, 64 + 64 + 192
    for r in INCEPTION_V1:
        blk = m.blocks._modules[f"inception{r.name}"]
        assert conv_linear_weights(blk) == row_weights(cin, r, k5)
        weights += row_weights(cin, r, k5)
        channels += r.n1x1 + r.n3x3_reduce + r.n3x3 + r.n5x5_reduce + r.n5x5 + r.pool_proj
        cin = r.out_chs
    assert cin == 1024
    weights += 1024 * 1000
    per_channel = 2 if norm == "bn" else 1  # BN scale + shift, or the conv's bias
    assert n_params(m) == weights + per_channel * channels + 1000
    # Pools between stages exactly where the stage number changes (3 -> 4 -> 5).
    assert [k for k in m.blocks._modules if k.startswith("pool")] == ["pool3", "pool4"]


def test_weights_about_table1_sum():
    # Table 1's parameter column sums to 6,797.7K ("about 6.8M"); its rows are rounded loosely.
    w = conv_linear_weights(meta_model("googlenet"))
    assert abs(w - 6_797_700) / 6_797_700 < 0.03


def test_googlenet_tv_count_is_torchvision():
    tv = pytest.importorskip("torchvision")
    for aux in (False, True):
        with torch.device("meta"):
            theirs = tv.models.googlenet(aux_logits=aux, init_weights=False)
        assert n_params(meta_model("googlenet_tv", aux_logits=aux)) == n_params(theirs)


def test_no_norm_means_conv_bias_and_aliases_agree():
    counts = set()
    for kw in ({"norm": None}, {"norm": "none"}, {"norm_layer": None}, {"norm_layer": "none"}):
        m = meta_model("googlenet", **kw)
        assert not any(isinstance(x, nn.BatchNorm2d) for x in m.modules())
        assert all(x.bias is not None for x in m.modules() if isinstance(x, nn.Conv2d))
        counts.add(n_params(m))
    assert len(counts) == 1
    bn = meta_model("googlenet", norm="bn")
    assert all(x.bias is None for x in bn.modules() if isinstance(x, nn.Conv2d))
    assert n_params(meta_model("googlenet", norm_layer="bn")) == n_params(bn)
    gn = meta_model("googlenet", norm="gn")
    assert any(isinstance(x, nn.GroupNorm) for x in gn.modules())


def test_tv_layout_bn_eps():
    m = meta_model("googlenet_tv")
    assert {x.eps for x in m.modules() if isinstance(x, nn.BatchNorm2d)} == {1e-3}
    assert {x.eps for x in meta_model("googlenet").modules() if isinstance(x, nn.BatchNorm2d)} == {1e-5}


# ------------------------------------------------------------------------------------------
# Auxiliary heads.


def test_aux_heads_train_and_eval():
    torch.manual_seed(0)
    m = cnnzoo.create_model("googlenet", num_classes=7, aux_logits=True)
    x = torch.randn(2, 3, 64, 64)
    m.train()
    out = m(x)
    assert isinstance(out, GoogLeNetOutputs) and out._fields == ("logits", "aux1", "aux2")
    assert all(o.shape == (2, 7) for o in out)
    sum(F.cross_entropy(o, torch.tensor([1, 5])) for o in out).backward()
    assert all(p.grad is not None for p in m.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.aux_heads.parameters())
    m.eval()
    y = m(x)
    assert isinstance(y, torch.Tensor) and y.shape == (2, 7)
    # Eval mode: the aux heads are not run at all.
    called = []
    m.aux_heads.aux1.register_forward_hook(lambda *a: called.append(1))
    m(x)
    assert not called
    # Without aux heads training mode returns logits too.
    plain = cnnzoo.create_model("googlenet", num_classes=7).train()
    assert isinstance(plain(x), torch.Tensor)
    assert len(list(plain.aux_heads.parameters())) == 0


def test_aux_heads_follow_4a_and_4d_as_the_paper():
    m = meta_model("googlenet", aux_logits=True)
    assert m.aux_taps == {"inception4a": "aux1", "inception4d": "aux2"}
    for name, cin in (("aux1", 512), ("aux2", 528)):
        h = m.aux_heads[name]
        assert h.conv.conv.in_channels == cin and h.conv.conv.out_channels == 128
        assert (h.fc1.in_features, h.fc1.out_features, h.fc2.out_features) == (2048, 1024, 1000)
        assert h.drop.p == 0.7
    assert m.head.drop.p == 0.4
    m.reset_classifier(5)
    assert m.head.fc.out_features == 5 and all(h.fc2.out_features == 5 for h in m.aux_heads.values())


def test_aux_pool_is_the_papers_5x5_stride_3_at_224():
    x = torch.randn(2, 512, 14, 14)  # 4a's output at 224x224
    torch.testing.assert_close(AuxPool()(x), F.avg_pool2d(x, 5, stride=3), rtol=0, atol=0)
    assert AuxPool()(torch.randn(1, 8, 2, 3)).shape == (1, 8, 4, 4)  # small inputs still fit


# ------------------------------------------------------------------------------------------
# factorize_5x5.


def _module_3a(name: str = "googlenet", **kw) -> nn.Module:
    m = cnnzoo.create_model(name, norm=None, rows=INCEPTION_V1[:1], **kw)  # stem + 3a only
    return m.blocks.inception3a


def _receptive_field(block: nn.Module, channels: slice) -> tuple[int, int]:
    """Extent of the input region that a central output of ``channels`` depends on."""
    with torch.no_grad():
        for p in block.parameters():
            p.abs_()  # positive weights and input: every ReLU passes, no gradient cancels
    x = torch.rand(1, 192, 15, 15, requires_grad=True)
    y = block(x)
    y[0, channels, 7, 7].sum().backward()
    nz = x.grad[0].abs().sum(0).nonzero()
    return tuple((nz.max(0).values - nz.min(0).values + 1).tolist())


def test_factorize_5x5_keeps_shape_and_receptive_field():
    torch.manual_seed(0)
    r = INCEPTION_V1[0]
    five = slice(r.n1x1 + r.n3x3, r.n1x1 + r.n3x3 + r.n5x5)  # the 5x5 branch's channels
    x = torch.randn(1, 192, 9, 9)
    shapes = set()
    for kw, rf in (({}, (5, 5)), ({"factorize_5x5": True}, (5, 5)),
                   ({"factorize_5x5": True, "factorize_width": "in"}, (5, 5))):
        blk = _module_3a(**kw)
        shapes.add(tuple(blk(x).shape))
        assert _receptive_field(blk, five) == rf, kw
    assert shapes == {(1, 256, 9, 9)}
    # torchvision's layout really has a 3x3 there.
    tv_blk = _module_3a("googlenet_tv")
    assert _receptive_field(tv_blk, five) == (3, 3)


@pytest.mark.parametrize("width", ["out", "in"])
def test_factorized_branch_count_formula(width):
    m = meta_model("googlenet", norm=None, factorize_5x5=True, factorize_width=width)
    for r in INCEPTION_V1:
        branch = m.blocks._modules[f"inception{r.name}"].branch5x5
        kernels = [b.conv.kernel_size for b in branch]
        assert kernels == [(1, 1), (3, 3), (3, 3)]
        mid = r.n5x5 if width == "out" else r.n5x5_reduce
        # 3x3 r->m and 3x3 m->c: 9 m (r + c) weights, plus one bias per output channel.
        assert n_params(branch[1:]) == 9 * mid * (r.n5x5_reduce + r.n5x5) + mid + r.n5x5
    # vs the true 5x5: 25 r c weights (+ c biases).
    base = meta_model("googlenet", norm=None)
    diff = n_params(m) - n_params(base)
    expect = sum(9 * (r.n5x5 if width == "out" else r.n5x5_reduce) * (r.n5x5_reduce + r.n5x5)
                 + (r.n5x5 if width == "out" else r.n5x5_reduce) - 25 * r.n5x5_reduce * r.n5x5
                 for r in INCEPTION_V1)
    assert diff == expect


# ------------------------------------------------------------------------------------------
# SE, head, registered aliases.


def test_se_on_concatenated_output():
    torch.manual_seed(0)
    m = cnnzoo.create_model("se_cifar_googlenet").eval()
    assert m.meta.alias_of == "cifar_googlenet"
    gates = [b.attn for b in m.blocks.children() if hasattr(b, "attn")]
    assert len(gates) == 9 and all(isinstance(g, cnnzoo.layers.SqueezeExcite) for g in gates)
    seen = {}
    m.blocks.inception4a.attn.register_forward_hook(lambda mod, inp, out: seen.update(c=inp[0].shape[1]))
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        y0 = m(x)
        assert seen["c"] == 512  # the concatenation of the four branches (192+208+48+64)
        m.blocks.inception4a.attn.fc2.bias.fill_(-20.0)  # gate closes: 4a's output ~ 0
        y1 = m(x)
    assert (y0 - y1).abs().max() > 1e-3
    assert cnnzoo.get_model_meta("se_googlenet").defaults["attn"] == "se"


def test_fc_head():
    m = cnnzoo.create_model("cifar_googlenet", head="fc", fc_hidden=32, fc_pool=2, num_classes=3).eval()
    with torch.no_grad():
        assert m(torch.randn(2, 3, 16, 16)).shape == (2, 3)
    assert m.head.pre_logits.fc1.in_features == 1024 * 4


def test_cifar_stem_keeps_32x32():
    m = cnnzoo.create_model("cifar_googlenet", norm=None).eval()
    sizes = {}
    for name, blk in m.blocks.named_children():
        blk.register_forward_hook(lambda mod, inp, out, name=name: sizes.update({name: out.shape[-1]}))
    with torch.no_grad():
        m.forward_features(torch.randn(1, 3, 32, 32))
    assert (sizes["inception3b"], sizes["inception4e"], sizes["inception5b"]) == (32, 16, 8)


# ------------------------------------------------------------------------------------------
# torchvision weights.


def _randomize_bn(model: nn.Module, x: torch.Tensor, gen: torch.Generator) -> None:
    """Random BN affine and running statistics, scaled to the activations so outputs stay O(1)."""
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative: one batch sets the statistics to the batch's
    model.train()
    with torch.no_grad():
        model(x)
        for bn in bns:
            c = bn.num_features
            bn.running_var.mul_(torch.empty(c).uniform_(0.5, 2.0, generator=gen))
            bn.running_mean.add_(0.3 * torch.randn(c, generator=gen) * bn.running_var.sqrt())
            bn.weight.copy_(torch.empty(c).uniform_(0.5, 1.5, generator=gen))
            bn.bias.copy_(0.2 * torch.randn(c, generator=gen))
            bn.momentum = 0.1


@pytest.mark.parametrize("aux,transform_input", [(False, False), (True, True)])
def test_torchvision_weights_exact(aux, transform_input):
    tvm = pytest.importorskip("torchvision.models")
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    theirs = tvm.googlenet(aux_logits=aux, init_weights=True, transform_input=transform_input,
                           dropout=0.0, dropout_aux=0.0)
    x = torch.randn(2, 3, 112, 112, generator=gen)
    _randomize_bn(theirs, x, gen)
    ours = cnnzoo.create_model("googlenet_tv", aux_logits=aux, transform_input=transform_input,
                               drop_rate=0.0, aux_drop_rate=0.0)
    load_external(ours, theirs.state_dict(), source="torchvision")
    theirs.eval(), ours.eval()
    with torch.no_grad():
        a, b = theirs(x), ours(x)
    assert a.std() > 0.05  # a real signal, not vanishing activations
    err = (a - b).abs().max().item()
    print(f"torchvision googlenet aux={aux} transform_input={transform_input}: max abs err {err:.3g}, "
          f"max |logit| {a.abs().max().item():.3g}")
    assert err <= 1e-5
    if aux:
        # Training mode with dropout off: aux logits match too (torchvision orders aux2, aux1).
        theirs.train(), ours.train()
        xs = x[:, :, :64, :64]
        with torch.no_grad():
            ta, ob = theirs(xs), ours(xs)
        for t, o in ((ta.logits, ob.logits), (ta.aux_logits1, ob.aux1), (ta.aux_logits2, ob.aux2)):
            assert (t - o).abs().max().item() <= 1e-5


def test_torchvision_weights_do_not_fit_other_layouts():
    tvm = pytest.importorskip("torchvision.models")
    sd = tvm.googlenet(aux_logits=False, init_weights=False).state_dict()
    with pytest.raises(ValueError, match="shape mismatch"):
        load_external(cnnzoo.create_model("googlenet"), sd, source="torchvision")  # 5x5 vs 3x3
    with pytest.raises(ValueError, match="missing"):
        load_external(cnnzoo.create_model("googlenet_tv", aux_logits=True), sd, source="torchvision")


# ------------------------------------------------------------------------------------------
# Bad input.


@pytest.mark.parametrize("name,kw,match", [
    ("googlenet", {"depth": 22}, "allowed"),
    ("googlenet", {"layout": "torchvision"}, "allowed"),  # fixed by the name
    ("googlenet", {"factorize_width": "mid"}, "choose one of"),
    ("googlenet_tv", {"factorize_5x5": True}, "true 5x5"),
    ("googlenet", {"norm": None, "norm_layer": "bn"}, "disagree"),
    ("googlenet", {"norm": "batch"}, "unknown norm_layer"),
    ("googlenet", {"transform_input": True, "in_chans": 1}, "in_chans=3"),
    ("googlenet", {"aux_drop_rate": 1.5}, r"\[0, 1\)"),
    ("googlenet", {"drop_rate": -0.1}, r"\[0, 1\)"),
    ("googlenet", {"head": "mlp"}, "choose one of"),
    ("googlenet", {"attn": "cbam"}, "unknown attn"),
    ("googlenet", {"aux_logits": "yes"}, "True or False"),
    ("googlenet", {"rows": [("3a", 64, 96, 0, 16, 32, 32)]}, "positive ints"),
    ("googlenet", {"rows": [("3a", 64, 96, 128)]}, "7-tuple"),
    ("googlenet", {"rows": [("3a", 64, 96, 128, 16, 32, 32)], "aux_logits": True}, "4a"),
])
def test_bad_options_raise(name, kw, match):
    with pytest.raises(ValueError, match=match):
        cnnzoo.create_model(name, **kw)


def test_custom_rows_build():
    rows = [("3a", 8, 8, 8, 4, 8, 8), ("4a", 8, 8, 8, 4, 8, 8), ("4d", 8, 8, 8, 4, 8, 8)]
    m = GoogLeNet(rows=rows, stem="cifar", num_classes=4, aux_logits=True).eval()
    assert m.num_features == 32 and list(m.blocks._modules) == ["inception3a", "pool3", "inception4a",
                                                                 "inception4d"]
    with torch.no_grad():
        assert m(torch.randn(1, 3, 16, 16)).shape == (1, 4)
