"""``channels_last="auto"``: the memory format a run trains in, measured, recorded and reused."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

import cnnzoo
from cnnzoo.train import resolve_config, train
from cnnzoo.train.layout import _cache_file, _keep_first, choose_channels_last, layout_key, measure

from .helpers import TINY, tiny_config


def _loss(out, y):
    return torch.nn.functional.cross_entropy(out, y)


def test_measure_times_both_formats_and_changes_nothing():
    torch.manual_seed(0)
    model = cnnzoo.create_model("cifar_resnet", num_classes=10, **TINY)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))
    rng = torch.get_rng_state()
    rates = measure(model, x, y, _loss, None, rounds=2)
    assert rates["nchw"] > 0 and rates["nhwc"] > 0 and rates["steps"] == 2 and rates["median_ratio"] > 0
    assert torch.equal(torch.get_rng_state(), rng)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BN statistics
    assert all(p.grad is None for p in model.parameters())
    assert next(model.parameters()).is_contiguous()  # not converted to channels-last


def test_the_first_measurement_stored_wins(tmp_path):
    path = str(tmp_path / "layout" / "k.json")
    first = {"channels_last": True, "nchw": 1.0, "nhwc": 2.0}
    assert _keep_first(path, first) == first
    assert _keep_first(path, {"channels_last": False, "nchw": 2.0, "nhwc": 1.0}) == first
    assert [p.name for p in (tmp_path / "layout").iterdir()] == ["k.json"]  # no temporaries left


def test_choose_reuses_the_cached_choice_and_says_so(tmp_path):
    torch.manual_seed(0)
    model = cnnzoo.create_model("cifar_resnet", num_classes=10, **TINY)
    key = layout_key(model="cifar_resnet", model_opts=TINY, input_size=(3, 16, 16), batch_size=8, amp="none",
                     device=torch.device("cpu"), world_size=1)
    common = dict(key=key, cache_dir=str(tmp_path), num_classes=10, loss_fn=_loss, amp_dtype=None,
                  device=torch.device("cpu"))
    chosen, line = choose_channels_last(model, **common)
    assert "measured now" in line and ("channels-last" if chosen else "NCHW") in line.split("(")[0]
    stored = json.loads(open(_cache_file(str(tmp_path), key)).read())
    assert stored["channels_last"] is chosen and stored["key"]["batch_size"] == 8
    # a later run with the same key takes the stored choice, even when it is the other one
    stored["channels_last"] = not chosen
    open(_cache_file(str(tmp_path), key), "w").write(json.dumps(stored))
    again, line = choose_channels_last(model, **common)
    assert again is (not chosen) and "measured earlier on this machine" in line
    # another batch size is another key: measured afresh
    other = dict(common, key={**key, "batch_size": 4})
    assert "measured now" in choose_channels_last(model, **other)[1]


def test_an_auto_run_records_the_format_it_trained_in(tmp_path, capsys):
    cfg = tiny_config(tmp_path / "run", str(tmp_path / "cache"), iters=2, channels_last="auto")
    assert cfg.channels_last == "auto"
    train(cfg)
    out = capsys.readouterr().out
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert isinstance(saved["channels_last"], bool)
    chosen = "channels-last" if saved["channels_last"] else "NCHW"
    assert f"memory format: {chosen} (--channels-last auto" in out


@pytest.mark.parametrize("bad", ["yes", 1, None])
def test_channels_last_takes_true_false_or_auto(bad):
    with pytest.raises(ValueError, match="channels_last"):
        resolve_config({"model": "resnet20", "channels_last": bad} if bad is not None else
                       {"model": "resnet20"}, {"channels_last": None})


def test_cli_flag_values():
    from cnnzoo.cli import build_parser
    from cnnzoo.commands.train import config_flags

    parser = build_parser()
    for argv, want in ((["--channels-last"], True), (["--channels-last", "off"], False),
                       (["--channels-last", "auto"], "auto"), ([], None)):
        args = parser.parse_args(["train", "resnet20", *argv])
        assert config_flags(args)["channels_last"] == want
    assert resolve_config({"model": "resnet20"}).channels_last == "auto"
