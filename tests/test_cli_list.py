"""`cnnzoo list` and the CLI's error contract."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cnnzoo.cli import main
from cnnzoo.commands._options import parse_opts


def test_list_json_has_every_match(capsys):
    assert main(["list", "resnet5*", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["resnet50", "resnet56"]
    assert rows[0]["params"] == 25_557_032 and rows[1]["input_size"] == "3x32x32"


@pytest.mark.parametrize("fmt,marker", [("table", "----"), ("markdown", "|---|"), ("csv", "name,family")])
def test_list_formats(capsys, fmt, marker):
    assert main(["list", "wrn16_*", "--format", fmt]) == 0
    out = capsys.readouterr().out
    assert marker in out and "wrn16_4" in out
    assert ("2748890" if fmt == "csv" else "2,748,890") in out


def test_unmatched_pattern_is_a_one_line_error(capsys):
    assert main(["list", "nothing*"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no registered model matches" in err
    assert main(["list", "resnet2"]) == 2  # a name, not a pattern: the closest names
    assert "no registered model matches 'resnet2'; closest: resnet32, resnet20" in capsys.readouterr().err


def test_python_dash_m_runs_the_cli():
    r = subprocess.run([sys.executable, "-m", "cnnzoo", "list", "plain2*"], capture_output=True,
                       text=True, check=True)
    assert "plain20" in r.stdout


def test_parse_opts():
    assert parse_opts(["attn=se", "depth=110", "widths=(8,16)", "attn2=None", "x=true", "r=0.5"]) == {
        "attn": "se", "depth": 110, "widths": (8, 16), "attn2": None, "x": True, "r": 0.5}
    # the form a shell passes through unquoted, as --opt's help shows it
    assert parse_opts(["widths=32,64,128", "w=8,"]) == {"widths": (32, 64, 128), "w": (8,)}
    with pytest.raises(ValueError, match="key=value"):
        parse_opts(["attn"])
