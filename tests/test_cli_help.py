"""A new user's first hour: help that documents every flag, a fast start, errors in the CLI's words.

* every flag of every command has help text that gives its default (or says where it comes from);
* ``cnnzoo --help`` and ``cnnzoo list`` import no torch; ``list`` reads the shipped model index,
  which is rebuilt here from the live registry and must equal it;
* ``cnnzoo eval`` names its confusion-matrix PNG after the checkpoint and writes JSON with one
  matrix row per line.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import cnnzoo
from cnnzoo._model_index import DATA_PATH, index_entry, load_index, render_index
from cnnzoo.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]


def _commands() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _flag_help(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Each optional action's help as ``--help`` prints it (joined lines), by its first option."""
    entries: dict[str, str] = {}
    current = None
    for line in parser.format_help().splitlines():
        m = re.match(r"  (-{1,2}[\w-]+)", line)
        if m:
            current = m.group(1)
            entries[current] = line
        elif current and line.startswith("    "):  # a continuation (argparse also breaks at hyphens)
            entries[current] += ("" if entries[current].endswith("-") else " ") + line.strip()
        else:
            current = None
    return {k: re.sub(r"\s+", " ", v) for k, v in entries.items()}


COMMANDS = sorted(_commands())


def test_every_command_is_walked():
    assert {"list", "summary", "compare", "train", "eval"} <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_flag_has_help_that_gives_its_default(command):
    parser = _commands()[command]
    printed = _flag_help(parser)
    for action in parser._actions:
        if action.default == argparse.SUPPRESS:  # -h/--help
            continue
        name = action.option_strings[0] if action.option_strings else action.dest
        assert action.help and action.help.strip(), f"cnnzoo {command} {name}: no help"
        if not action.option_strings:
            continue
        text = printed[action.option_strings[0]]
        assert "default" in text, f"cnnzoo {command} {name}: the help gives no default: {text}"
        assert "(default: None)" not in text, f"cnnzoo {command} {name}: say what None means: {text}"


def _typed(value) -> str:
    """A config value as typed on the command line."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def _recipe_values(text: str) -> dict[str, str]:
    """``... (default: from the recipe: fast 0.2; vgg-cifar 0.05; others 0.1)`` -> by recipe."""
    groups = text.split("from the recipe: ", 1)[1].rsplit(")", 1)[0].split("; ")
    out = {}
    for g in groups:
        names, value = g.rsplit(" ", 1)
        out.update({n: value for n in names.split(", ")})
    return out


def test_train_help_takes_its_defaults_from_the_recipes():
    from cnnzoo.commands.train import _FLAGS
    from cnnzoo.train.config import RECIPES, TrainConfig

    printed = _flag_help(_commands()["train"])
    flag_of = {key: "--" + attr.replace("_", "-") for attr, key in _FLAGS.items()}
    assert set(_FLAGS.values()) <= set(TrainConfig.__dataclass_fields__)
    assert all(name in printed["--recipe"] for name in RECIPES)
    assert printed["--lr"].count("default") == 1
    for recipe in RECIPES.values():
        for key, value in recipe.settings.items():
            if key not in flag_of or value is None:
                continue
            text = printed[flag_of[key]]
            if "from the recipe" not in text:  # every recipe agrees
                assert f"(default: {_typed(value)})" in text, (key, text)
                continue
            by_recipe = _recipe_values(text)
            assert by_recipe.get(recipe.name, by_recipe.get("others")) == _typed(value), (recipe.name, text)
    assert f"(default: {TrainConfig.data})" in printed["--data"]  # TrainConfig's own default


def test_new_train_flags_reach_the_config():
    from cnnzoo.commands.train import config_flags
    from cnnzoo.train.config import resolve_config

    args = build_parser().parse_args(
        ["train", "resnet20", "--milestones", "0.3,0.6", "--gamma", "0.2", "--warmup-factor", "0.5",
         "--threads", "2", "--init-from", "runs/x"])
    cfg = resolve_config({**config_flags(args), "model": args.model})
    assert cfg.milestones == [0.3, 0.6] and cfg.gamma == 0.2 and cfg.warmup_factor == 0.5
    assert cfg.threads == 2 and cfg.init_from == "runs/x"
    assert resolve_config(config_flags(build_parser().parse_args(["train", "resnet20"])) | {
        "model": "resnet20"}).milestones == [0.5, 0.75]  # unset flags leave the recipe's value


def test_bad_milestones_are_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "resnet20", "--milestones", "half"])
    assert e.value.code == 2
    assert "comma-separated fractions" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# Start-up: no torch for help and list.

_NO_TORCH = """
import sys
from cnnzoo.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print("\\ntorch imported:", "torch" in sys.modules)
"""


def _imports_torch(*argv: str) -> bool:
    r = subprocess.run([sys.executable, "-c", _NO_TORCH, *argv], cwd=ROOT, capture_output=True, text=True,
                       timeout=120, check=True)
    return r.stdout.strip().splitlines()[-1] == "torch imported: True"


@pytest.mark.parametrize("argv", [["--help"], ["list"], ["list", "se_*", "--format", "json"],
                                  ["summary", "--help"], ["eval", "--help"]])
def test_help_and_list_do_not_import_torch(argv):
    assert not _imports_torch(*argv)


def test_the_torch_check_does_detect_torch():
    assert _imports_torch("summary", "resnet20", "--format", "csv")


def test_train_help_does_not_import_torch():
    assert not _imports_torch("train", "--help")


def test_import_cnnzoo_keeps_its_api():
    r = subprocess.run([sys.executable, "-c", "import cnnzoo, sys; print('torch' in sys.modules); "
                        "print(cnnzoo.create_model('resnet20').__class__.__name__, "
                        "cnnzoo.get_model_meta('resnet20').family, len(cnnzoo.list_models('resnet*')) > 5, "
                        "cnnzoo.analysis.profile.__name__)"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    assert r.stdout.split() == ["False", "ResNet", "resnet", "True", "profile"]


# --------------------------------------------------------------------------------------------
# The shipped model index is the live registry.


def test_index_lists_every_registered_model():
    assert [e[0] for e in load_index()] == cnnzoo.list_models()


def test_index_file_is_what_the_generator_writes():
    assert DATA_PATH.read_text() == render_index(load_index())


@pytest.mark.parametrize("entry", load_index(), ids=lambda e: e[0])
def test_index_entry_matches_the_registry(entry):
    assert index_entry(entry[0]) == entry


# --------------------------------------------------------------------------------------------
# Errors in the caller's words.


def test_unknown_model_names_the_right_command(capsys):
    with pytest.raises(ValueError, match=r"\(see cnnzoo\.list_models\(\)\)"):
        cnnzoo.create_model("resnet2")
    assert main(["summary", "resnet2"]) == 2
    err = capsys.readouterr().err
    assert err == "cnnzoo summary: error: unknown model 'resnet2'; closest: resnet32, resnet20, resnet, " \
                  "resnet152, resnet1202 (see `cnnzoo list`)\n"


@pytest.mark.parametrize("opts, message", [
    (dict(foo=1), "unknown option(s) foo (allowed: "),
    (dict(widths=5), "widths must be a sequence of positive ints, e.g. (16, 32, 64); got 5"),
    (dict(drop_rate="abc"), "drop_rate must be in [0, 1), got 'abc'"),
])
def test_bad_options_name_the_model_not_a_builder(opts, message):
    with pytest.raises(ValueError) as e:
        cnnzoo.create_model("resnet20", **opts)
    assert str(e.value).startswith(message) and "build" not in str(e.value)


# --------------------------------------------------------------------------------------------
# cnnzoo eval: the PNG is named after the checkpoint; JSON one matrix row a line.


def test_eval_names_the_png_after_the_checkpoint(tiny_run, capsys):
    out, cache = tiny_run
    assert main(["eval", str(out), "--format", "json", "--cache-dir", cache]) == 0
    text = capsys.readouterr().out
    best = json.loads(text)
    assert best["checkpoint"] == str(out / "best.pt")
    assert best["confusion_png"] == str(out / "confusion_test.png")
    drawn = (out / "confusion_test.png").read_bytes()
    # one matrix row per line
    lines = [ln.strip().rstrip(",") for ln in text.splitlines()]
    assert all(json.dumps(row) in lines for row in best["confusion"]) and len(best["confusion"]) == 10

    assert main(["eval", str(out / "last.pt"), "--format", "json", "--cache-dir", cache]) == 0
    last = json.loads(capsys.readouterr().out)
    assert last["confusion_png"] == str(out / "confusion_test_last.png")
    assert (out / "confusion_test_last.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "confusion_test.png").read_bytes() == drawn  # best.pt's picture untouched

    assert main(["eval", str(out), "--cache-dir", cache]) == 0
    table = capsys.readouterr().out
    assert f"top-1 {best['top1']:.2%}" in table and "accuracy (%)" in table
    rows = {m.group(1): float(m.group(2)) for m in re.finditer(r"^(\d)\s+([\d.]+)\s+\d+$", table, re.M)}
    assert set(rows) == {name for name, acc in best["per_class"].items() if acc is not None}
    for name, percent in rows.items():  # in %, to two decimals
        assert percent == pytest.approx(100 * best["per_class"][name], abs=0.005 + 1e-9)


def test_resume_with_more_iters_extends_a_finished_run(tiny_run, tmp_path, capsys):
    import shutil

    from cnnzoo.train import load_checkpoint

    out = tmp_path / "run"
    shutil.copytree(tiny_run[0], out)
    assert load_checkpoint(out / "last.pt")["step"] == 12
    assert main(["train", "--resume", str(out), "--iters", "14"]) == 0, capsys.readouterr().err
    assert load_checkpoint(out / "last.pt")["step"] == 14
    assert main(["train", "--resume", str(out), "--iters", "14", "--lr", "1"]) == 2
    assert "drop --lr" in capsys.readouterr().err


def test_every_public_subpackage_is_an_attribute_of_cnnzoo():
    import pkgutil

    public = sorted(m.name for m in pkgutil.iter_modules(cnnzoo.__path__)
                    if not m.name.startswith("_") and m.name not in ("cli", "commands"))
    assert public == sorted(cnnzoo._SUBPACKAGES)
    for name in public:
        assert getattr(cnnzoo, name).__name__ == f"cnnzoo.{name}"
