"""`cnnzoo summary` and `cnnzoo compare`: output structure in every format, and bad input."""

from __future__ import annotations

import csv
import io
import json

import pytest

import cnnzoo
from cnnzoo.analysis import profile
from cnnzoo.cli import main


def _run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_summary_json_has_the_documented_keys(capsys):
    code, out, _ = _run(capsys, "summary", "resnet20", "--format", "json", "--opt", "attn=se")
    assert code == 0
    d = json.loads(out)
    for key in ("model", "input_size", "options", "params", "macs", "flops", "flops_convention",
                "other_ops", "receptive_field", "effective_stride", "activation_bytes", "stages",
                "layers", "notes"):
        assert key in d
    assert d["model"] == "resnet20" and d["options"] == {"attn": "se"} and d["input_size"] == [3, 32, 32]
    assert d["params"] == 272_095 and d["flops"] == 2 * d["macs"]
    assert sum(row["macs"] for row in d["layers"]) == d["macs"]
    assert any(row["name"].endswith("attn.mul") for row in d["layers"])
    assert d["stages"][-1]["stage"] == "head" and d["receptive_field"] == 81


def test_summary_table_in_a_pipe_is_plain_text(capsys):
    code, out, _ = _run(capsys, "summary", "resnet20")
    assert code == 0
    assert "resnet20 at 3x32x32" in out and "stages (grouped by effective stride)" in out
    assert "269,722" in out and "81 px" in out and "effective stride 4" in out
    assert "\x1b[" not in out and "┃" not in out  # no terminal styling in a pipe
    for stage in ("stride 1", "stride 2", "stride 4", "head", "total"):
        assert stage in out
    assert "layers" not in out.split("stages (grouped")[1].splitlines()[-1]


def test_summary_per_layer_markdown(capsys):
    code, out, _ = _run(capsys, "summary", "resnet20", "--per-layer", "--format", "markdown")
    assert code == 0
    assert out.count("### ") == 3 and "|---|" in out
    lines = [ln for ln in out.split("### layers")[1].splitlines() if ln.startswith("| ")]
    assert lines[0] == "| stage | name | type | output | params | MACs (M) | other ops (k) | rf | stride |"
    layers = profile(_meta("resnet20")).layers
    assert len(lines) - 1 == len(layers)
    assert lines[1] == "| stride 1 | stem.conv | Conv2d | 16x32x32 | 432 | 0.442 | 0 | 3 | 1 |"
    # a BatchNorm's other ops: scale and shift of each of its 16x32x32 outputs, in thousands
    assert layers[1].name == "stem.norm" and layers[1].other_ops == 2 * 16 * 32 * 32
    assert lines[2].split(" | ")[6] == "32.77"


def _meta(name):
    import torch

    with torch.device("meta"):
        return cnnzoo.create_model(name)


def test_summary_csv_is_one_parseable_table(capsys):
    code, out, _ = _run(capsys, "summary", "resnet20", "--format", "csv", "--input-size", "3", "64", "64")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["stage"] for r in rows] == ["stride 1", "stride 2", "stride 4", "head", "total"]
    r = profile(_meta("resnet20"), (3, 64, 64))
    assert int(rows[-1]["macs"]) == r.macs and int(rows[-1]["params"]) == 269_722
    assert rows[0]["output_shape"] == "16x64x64"
    code, out, _ = _run(capsys, "summary", "resnet20", "--format", "csv", "--per-layer")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert rows[0]["name"] == "stem.conv" and rows[0]["receptive_field"] == "3"


@pytest.mark.parametrize("per_layer", [False, True])
def test_summary_csv_columns_are_the_json_keys(capsys, per_layer):
    flag = ["--per-layer"] if per_layer else []
    _, out, _ = _run(capsys, "summary", "resnet20", "--format", "json", *flag)
    d = json.loads(out)
    _, out, _ = _run(capsys, "summary", "resnet20", "--format", "csv", *flag)
    rows = list(csv.DictReader(io.StringIO(out)))
    table = d["layers"] if per_layer else d["stages"]
    assert list(rows[0]) == list(table[0])
    assert [r["name" if per_layer else "stage"] for r in rows[:len(table)]] == \
        [t["name" if per_layer else "stage"] for t in table]


def test_summary_bench_reports_latency_structure(capsys):
    code, out, _ = _run(capsys, "summary", "resnet20", "--opt", "width=0.25", "--opt", "stem_width=4",
                        "--bench", "--runs", "2", "--threads", "1", "--format", "json")
    assert code == 0
    lat = json.loads(out)["latency"]
    assert lat["runs"] == 2 and lat["threads"] == 1 and lat["batch_size"] == 1
    assert lat["min_ms"] <= lat["median_ms"] <= lat["max_ms"]


@pytest.mark.parametrize("fmt", ["table", "markdown", "csv", "json"])
def test_compare_one_row_per_model(capsys, fmt):
    code, out, _ = _run(capsys, "compare", "resnet20", "resnet5*", "--format", fmt)
    assert code == 0
    names = ["resnet20", "resnet50", "resnet56"]
    if fmt == "json":
        rows = json.loads(out)
        assert [r["model"] for r in rows] == names
        assert rows[1]["macs"] == 4_089_184_256 and rows[1]["receptive_field"] == 427
        assert rows[0]["input"] == "3x32x32" and rows[1]["input"] == "3x224x224"
    elif fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(out)))
        assert [r["model"] for r in rows] == names and rows[1]["params"] == "25557032"
    else:
        body = [ln for ln in out.splitlines() if any(n in ln for n in names)]
        assert len(body) == 3 and "25.56" in body[1] and "4.089" in body[1] and "427" in body[1]


def test_compare_plot_writes_a_png(capsys, tmp_path):
    path = tmp_path / "cost.png"
    code, _, err = _run(capsys, "compare", "resnet20", "resnet56", "wrn16_4", "--plot", str(path),
                        "--format", "csv")
    assert code == 0 and "wrote" in err
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def _too_small_case():
    for name in ("vgg16", "densenet121"):
        if cnnzoo.list_models(name):
            return name
    pytest.skip("no registered model with an unpadded downsampling yet")


@pytest.mark.parametrize("argv,message", [
    (["summary", "resnet2"], "unknown model 'resnet2'; closest: resnet32, resnet20"),
    (["compare", "resnet20", "resnt56"], "(see `cnnzoo list`)"),
    (["summary", "resnet20", "--opt", "attn"], "expected key=value"),
    (["summary", "resnet20", "--opt", "colour=red"], "unknown option(s) colour (allowed: "),
    (["summary", "wrn16_4", "--opt", "colour=red"], "unknown option(s) colour (allowed: "),
    (["summary", "resnet20", "--opt", "depth=abc"], "must be 6n+2"),
    (["summary", "resnet20", "--opt", "unit=sideways"], "unit='sideways' is not allowed"),
    (["summary", "resnet20", "--opt", "widths=5"], "widths must be a sequence of positive ints"),
    (["summary", "resnet20", "--input-size", "3", "0", "32"], "three positive ints"),
    (["summary", "resnet20", "--input-size", "1", "32", "32"], "forward pass failed in stem.conv"),
    (["compare", "resnet20", "nothing*"], "no registered model matches"),
    (["compare", "resnet20", "--plot", "cost.txt"], "must end in .png"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, argv, message):
    code, out, err = _run(capsys, *argv)
    assert code == 2
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    # the command line's words: no builder function, no Python call
    assert "build_" not in err and "cnnzoo.list_models" not in err


def test_too_small_input_names_the_layer(capsys):
    name = _too_small_case()
    code, _, err = _run(capsys, "summary", name, "--input-size", "3", "16", "16")
    assert code == 2 and err.count("\n") == 1
    assert "input 3x16x16 is too small: the output of" in err and "collapses to zero size" in err


# --------------------------------------------------------------------------------------------
# The documented JSON schema (docs/analysis.md) holds for the command's output.


def _documented_schema() -> dict:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "analysis.md").read_text()
    block = text.split("The summary object's schema", 1)[1].split("```json", 1)[1].split("```", 1)[0]
    return json.loads(block)


_TYPES = {"object": dict, "array": list, "string": str, "integer": int, "number": (int, float),
          "null": type(None), "boolean": bool}


def _check(value, schema: dict, path: str = "$") -> None:
    """The subset of JSON Schema the document uses: type, required, properties, items."""
    types = schema.get("type")
    if types is not None:
        types = [types] if isinstance(types, str) else types
        ok = any(isinstance(value, _TYPES[t]) and not (t in ("integer", "number") and isinstance(value, bool))
                 for t in types)
        assert ok, f"{path}: {value!r} is not {types}"
    if isinstance(value, dict):
        for key in schema.get("required", []):
            assert key in value, f"{path}: missing {key}"
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                _check(value[key], sub, f"{path}.{key}")
    if isinstance(value, list) and "items" in schema:
        for i, v in enumerate(value):
            _check(v, schema["items"], f"{path}[{i}]")


def test_summary_json_follows_the_documented_schema(capsys):
    schema = _documented_schema()
    code, out, _ = _run(capsys, "summary", "resnet20", "--format", "json", "--opt", "width=0.25",
                        "--opt", "stem_width=4", "--bench", "--runs", "1")
    assert code == 0
    d = json.loads(out)
    _check(d, schema)
    assert set(d) <= set(schema["properties"])  # nothing undocumented
    assert set(d["layers"][0]) == set(schema["properties"]["layers"]["items"]["properties"])
    with pytest.raises(AssertionError):  # the checker does check
        _check({**d, "macs": "many"}, schema)
