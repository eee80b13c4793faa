"""Factorization surgery: same shapes and receptive fields, multiply-adds cut by the formula."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import cnnzoo
from cnnzoo.analysis import factorize, factorized_stack, profile


class _Net(nn.Module):
    """Equal widths: a 5x5, a 7x7, a strided 5x5 and a 3x3 between ReLUs."""

    def __init__(self, c: int = 16):
        super().__init__()
        self.c5 = nn.Conv2d(c, c, 5, padding=2, bias=False)
        self.c7 = nn.Conv2d(c, c, 7, padding=3, bias=False)
        self.down = nn.Conv2d(c, c, 5, stride=2, padding=2, bias=False)
        self.c3 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.c3(self.act(self.down(self.act(self.c7(self.act(self.c5(x)))))))


def _conv_macs(r, prefix):
    return sum(row.macs for row in r.layers if row.name == prefix or row.name.startswith(prefix + "."))


def test_equal_widths_save_28_and_45_percent():
    net = _Net()
    new = factorize(net)
    a, b = profile(net, (16, 24, 24)), profile(new, (16, 24, 24))
    assert _conv_macs(b, "c5") / _conv_macs(a, "c5") == pytest.approx(18 / 25)   # 28% less
    assert _conv_macs(b, "c7") / _conv_macs(a, "c7") == pytest.approx(27 / 49)   # 45% less
    assert 1 - 18 / 25 == pytest.approx(0.28) and round(1 - 27 / 49, 2) == 0.45
    params = {n: sum(p.numel() for p in m.parameters()) for n, m in new.named_children()}
    assert params["c5"] == 18 * 16 * 16 and params["c7"] == 27 * 16 * 16
    # Shapes and receptive fields unchanged, layer by layer.
    for name in ("c5", "c7", "down", "c3"):
        assert a.rf_at[name] == b.rf_at[name]
    assert a.rf == b.rf and a.layers[-1].output_shape == b.layers[-1].output_shape
    x = torch.randn(1, 16, 24, 24)
    assert new(x).shape == net(x).shape


def test_stride_2_is_left_and_reported_and_the_original_is_untouched():
    net = _Net()
    new = factorize(net)
    rep = new.factorize_report
    assert rep.replaced == {"c5": 2, "c7": 3}
    assert list(rep.skipped) == ["down"] and "stride 2" in rep.skipped["down"]
    assert isinstance(new.down, nn.Conv2d) and isinstance(net.c5, nn.Conv2d)
    assert "down" in str(rep)
    only5 = factorize(net, kernel_sizes=(5,))
    assert only5.factorize_report.replaced == {"c5": 2} and isinstance(only5.c7, nn.Conv2d)


@pytest.mark.parametrize("pad,size", [(0, 11), (1, 11), (2, 12), (3, 13)])
def test_any_padding_keeps_shape_and_alignment(pad, size):
    conv = nn.Conv2d(3, 6, 7, padding=pad)
    stack = factorized_stack(conv)
    a, b = profile(conv, (3, size, size)), profile(stack, (3, size, size))
    assert a.rf == b.rf  # same size, stride and left edge: the same pixels are seen
    assert a.layers[-1].output_shape == b.layers[-1].output_shape


def test_norm_and_activation_between_and_grouped_convs():
    conv = nn.Conv2d(8, 12, 5, padding=2, groups=4, bias=True)
    stack = factorized_stack(conv, nn.BatchNorm2d, nn.ReLU)
    assert [type(m).__name__ for m in stack] == ["Conv2d", "BatchNorm2d", "ReLU", "Conv2d"]
    assert stack.conv1.groups == stack.conv2.groups == 4
    assert stack.conv1.bias is None and stack.conv2.bias is not None  # a norm follows conv1
    assert (stack.conv1.in_channels, stack.conv2.out_channels) == (8, 12)
    x = torch.randn(2, 8, 9, 9)
    assert stack(x).shape == conv(x).shape
    with pytest.raises(ValueError, match="kernel_sizes"):
        factorize(nn.Conv2d(3, 3, 5), kernel_sizes=(3,))
    with pytest.raises(ValueError, match="kernel_sizes"):
        factorize(nn.Conv2d(3, 3, 5), kernel_sizes=(6,))


def test_googlenet_paper_layout():
    # GoogLeNet (paper layout) has one stride-1 5x5 per Inception module; the 7x7/2 stem conv
    # stays and is reported.
    if not cnnzoo.list_models("googlenet"):
        pytest.skip("googlenet is not registered yet")
    with torch.device("meta"):
        net = cnnzoo.create_model("googlenet")
    new = factorize(net, act_layer="relu", norm_layer="bn")
    rep = new.factorize_report
    assert len(rep.replaced) == 9 and set(rep.replaced.values()) == {2}
    assert any("stride 2" in why for why in rep.skipped.values())
    a, b = profile(net), profile(new)
    assert a.rf == b.rf and a.layers[-1].output_shape == b.layers[-1].output_shape
    # The saving is the formula's, conv by conv: per output element 25 Cin -> 9 Cin + 9 Cout.
    saved = 0
    for name in rep.replaced:
        conv = net.get_submodule(name)
        row = next(r for r in a.layers if r.name == name)
        n_out = row.output_shape[1] * row.output_shape[2]
        cin, cout = conv.in_channels, conv.out_channels
        saved += n_out * cout * (25 * cin) - n_out * cout * (9 * cin + 9 * cout)
    assert a.macs - b.macs == saved


def test_matches_googlenets_own_factorized_layout():
    # The surgery on the paper GoogLeNet (BN + ReLU between the 3x3 convs) builds the same
    # network as the family's own factorize_5x5 option, written independently.
    if not cnnzoo.list_models("googlenet"):
        pytest.skip("googlenet is not registered yet")
    with torch.device("meta"):
        net = cnnzoo.create_model("googlenet")
        own = cnnzoo.create_model("googlenet", factorize_5x5=True)
    ours = profile(factorize(net, norm_layer="bn", act_layer="relu"))
    theirs = profile(own)
    assert (ours.params, ours.macs, ours.rf) == (theirs.params, theirs.macs, theirs.rf)
    # Widths are not equal here (#5x5 reduce < #5x5), so the stack costs more, not 28% less.
    assert ours.macs > profile(net).macs
