"""Studies (``cnnzoo study``): every study at smoke scale writes its results, table and plots; a
killed study resumes without rerunning finished runs; bad input is one line and exit 2; the
judge counts a difference only beyond one standard deviation over seeds.

Smoke scale trains tiny networks for 24 steps on 8x8 digits: about a second per run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cnnzoo.cli import main
from cnnzoo.studies import (
    CONTRADICTED,
    NOT_VISIBLE,
    REPRODUCED,
    STUDIES,
    VERDICTS,
    Diff,
    Results,
    get_study,
    run_study,
)
from cnnzoo.studies._common import TINY_RESNET
from cnnzoo.studies._study import Cell, Part, Verdict, expect, no_worse

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("cache"))


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == PNG_MAGIC, path
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def _mtimes(out: Path) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in sorted((out / "runs").rglob("*"))
            if p.is_file() and p.name in ("results.json", "last.pt", "best.pt", "metrics.csv")}


# --------------------------------------------------------------------------------------------
# Every study at smoke scale.


@pytest.mark.parametrize("name", list(STUDIES))
def test_every_study_runs_at_smoke_scale_and_writes_its_outputs(name, tmp_path, cache):
    study = get_study(name)
    grid = study.scales["smoke"].cells
    lines: list[str] = []
    out = tmp_path / name
    res = run_study(name, "smoke", out=out, cache_dir=cache, echo=lines.append)

    # results.json: one record per configuration and seed, each read from its own run folder
    saved = json.loads((out / "results.json").read_text())
    assert saved == json.loads(json.dumps(res))
    assert [c["cell"] for c in saved["cells"]] == [c.name for c in grid]
    assert saved["seeds"] == [0] and saved["data"] == "digits" and saved["scale"] == "smoke"
    for rec, cell in zip(saved["cells"], grid, strict=True):
        run = json.loads((out / rec["run"] / "results.json").read_text())
        assert rec["model"] == cell.model == run["config"]["model"]
        assert rec["model_opts"] == run["config"]["model_opts"] == json.loads(json.dumps(dict(cell.opts)))
        assert rec["test_error"] == pytest.approx(1 - run["test_top1"])
        assert rec["params"] == run["params"] > 0 and rec["macs"] == run["macs"] > 0
        assert [e["epoch"] for e in rec["epochs"]] == [1, 2, 3, 4]  # 24 steps of 6 per epoch
        assert rec["train_error"] == rec["epochs"][-1]["train_error"]
        assert rec["steps"] and rec["steps"][-1]["step"] == run["iters"] == 24
        assert all(0 <= rec[k] <= 1 for k in ("train_error", "val_error", "test_error"))
    assert [s["cell"] for s in saved["summary"]] == [c.name for c in grid]

    # the verdict, with a number behind every part
    assert saved["verdict"]["verdict"] in VERDICTS
    assert saved["verdict"]["parts"] and all(p["numbers"] for p in saved["verdict"]["parts"])
    assert any(line.startswith("verdict: ") for line in lines)
    if study.analyze:
        assert saved["analysis"]["tables"]

    # table.md: the claim, one row per configuration, the analysis tables, the verdict
    table = (out / "table.md").read_text()
    assert study.claim in table and f"## Verdict: **{saved['verdict']['verdict']}**" in table
    for cell in grid:
        assert f"| {cell.name} | `{cell.model}`" in table
    for t in saved["analysis"].get("tables", []):
        assert f"## {t['title']}" in table

    # the PNGs: the shared error chart and the study's own
    pngs = {"errors.png"} | {p.__name__ for p in study.plots}
    written = sorted(p.name for p in out.glob("*.png"))
    assert "errors.png" in written and len(written) == len(pngs)
    for p in out.glob("*.png"):
        w, h = _png_size(p)
        assert w >= 500 and h >= 300


def test_degradation_curves_are_figure_6():
    from cnnzoo.studies._plots import degradation_curves

    assert degradation_curves in get_study("degradation").plots


# --------------------------------------------------------------------------------------------
# Resuming.


def test_a_killed_study_resumes_without_rerunning_finished_runs(tmp_path, cache):
    out = tmp_path / "deg"
    first = run_study("degradation", "smoke", out=out, cache_dir=cache, echo=lambda s: None)
    assert first["trained_now"] == 4
    victim = out / "runs" / "resnet14-s0"
    import shutil

    shutil.rmtree(victim)
    text = (out / "results.json").read_text()
    (out / "results.json").write_text(text[: len(text) // 2])  # a study cut short while writing
    kept = _mtimes(out)

    # the rerun skips the three finished runs and dies (SIGKILL) in the fourth, at step 10
    env = {**os.environ, "CNNZOO_KILL_AT_STEP": "10", "CNNZOO_CACHE": cache}
    r = subprocess.run([sys.executable, "-m", "cnnzoo", "study", "degradation", "--out", str(out)], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == -9, r.stderr
    assert "3 already done, 1 to train" in r.stdout
    assert (victim / "last.pt").is_file() and not (victim / "results.json").exists()
    assert {k: v for k, v in _mtimes(out).items() if not k.startswith("runs/resnet14")} == kept

    # and again: the interrupted run continues from its checkpoint (step 6, the first epoch's end)
    lines: list[str] = []
    res = run_study("degradation", "smoke", out=out, cache_dir=cache, echo=lines.append)
    assert res["trained_now"] == 1
    assert any("resnet14 seed 0: resuming from its checkpoint" in line for line in lines)
    assert "resuming" in (out / "logs" / "resnet14-s0.log").read_text()
    now = _mtimes(out)
    assert {k: now[k] for k in kept} == kept  # the finished runs were not touched
    assert [c["cell"] for c in res["cells"]] == ["plain8", "plain14", "resnet8", "resnet14"]
    by_cell = {c["cell"]: c for c in res["cells"]}
    for c in first["cells"]:
        if c["cell"] != "resnet14":
            assert by_cell[c["cell"]] == c

    # a study whose run folders are gone (a committed results.json) is taken from results.json
    shutil.rmtree(out / "runs")
    (out / "study.json").unlink()
    again = run_study("degradation", "smoke", out=out, cache_dir=cache, echo=lambda s: None)
    assert again["trained_now"] == 0 and again["cells"] == res["cells"]


def test_jobs_2_trains_side_by_side_with_the_same_results(tmp_path, cache):
    one = run_study("heads", "smoke", out=tmp_path / "one", cache_dir=cache, echo=lambda s: None)
    two = run_study("heads", "smoke", out=tmp_path / "two", jobs=2, cache_dir=cache, echo=lambda s: None)
    assert [c["cell"] for c in two["cells"]] == ["fc", "gap"]
    for a, b in zip(one["cells"], two["cells"], strict=True):
        assert b["hardware"]["threads"] == 1
        assert (a["test_error"], a["train_error"], a["val_error"]) == (b["test_error"], b["train_error"],
                                                                       b["val_error"])

    # a finished run is reused only if it was trained with the values the study sets now
    path = tmp_path / "one" / "runs" / "gap-s0" / "results.json"
    run = json.loads(path.read_text())
    run["config"]["lr"] = 1.5
    path.write_text(json.dumps(run))
    with pytest.raises(ValueError, match=r"gap-s0 was trained with lr=1\.5"):
        run_study("heads", "smoke", out=tmp_path / "one", cache_dir=cache, echo=lambda s: None)


def test_a_run_whose_loss_diverges_is_recorded_and_the_others_go_on(tmp_path, cache, monkeypatch):
    tiny = {"depth": 8, **TINY_RESNET}
    base = get_study("degradation")
    cells = (Cell("steady", "cifar_resnet", tiny), Cell("wild", "cifar_resnet", tiny, train={"lr": 1e30}))
    study = dataclasses.replace(
        base, name="diverging", plots=(),
        scales={"smoke": dataclasses.replace(base.scales["smoke"], cells=cells)},
        judge=lambda r: Verdict((expect("steady below wild", Diff.of(r, "steady", "wild"), higher=False),)))
    monkeypatch.setitem(STUDIES, "diverging", study)
    lines: list[str] = []
    res = run_study("diverging", "smoke", out=tmp_path, cache_dir=cache, echo=lines.append)
    steady, wild = res["cells"]
    assert "error" not in steady and steady["test_error"] is not None
    assert "the loss became" in wild["error"] and any("wild seed 0: failed" in line for line in lines)
    assert [s["failed_seeds"] for s in res["summary"]] == [[], [0]]
    assert res["verdict"]["verdict"] == NOT_VISIBLE
    assert "| wild | `cifar_resnet` depth=8" in (tmp_path / "table.md").read_text()
    assert "0 (1 failed)" in (tmp_path / "table.md").read_text()
    assert _png_size(tmp_path / "errors.png")[0] >= 500


# --------------------------------------------------------------------------------------------
# The command line.


def _one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_unknown_study_or_missing_data_is_one_line_and_exit_2(capsys, tmp_path):
    assert "unknown study 'nosuch'" in _one_line_error(capsys, ["study", "nosuch"])
    assert "needs --data" in _one_line_error(capsys, ["study", "degradation", "--scale", "cpu",
                                                      "--out", str(tmp_path / "a")])
    err = _one_line_error(capsys, ["study", "units", "--data", f"imagefolder:{tmp_path}/missing.zip",
                                   "--out", str(tmp_path / "b")])
    assert "missing.zip" in err
    assert "unknown scale 'huge'" in _one_line_error(capsys, ["study", "se", "--scale", "huge"])
    assert "--seeds must be a positive integer" in _one_line_error(capsys, ["study", "se", "--seeds", "0"])
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # nothing written


def test_a_folder_holding_another_study_is_refused(capsys, tmp_path):
    (tmp_path / "study.json").write_text(json.dumps({"study": "se", "scale": "smoke", "data": "digits"}))
    assert "holds another study" in _one_line_error(capsys, ["study", "heads", "--out", str(tmp_path)])


def test_list_shows_each_study_its_claim_and_grids(capsys):
    assert main(["study", "list"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for study in STUDIES.values():
        assert f"{study.name}: {study.title}" in text
        assert " ".join(study.claim.split()) in text
        for scale, sc in study.scales.items():
            assert f"{scale} scale" in text
            for cell in sc.cells:
                assert f"{cell.name} {cell.describe()}" in text


@pytest.mark.parametrize("argv", [["study", "--help"], ["study", "list"]])
def test_study_help_and_list_import_no_torch(argv):
    code = ("import sys\nfrom cnnzoo.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n"
            "    pass\nprint('torch imported:', 'torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code, *argv], cwd=ROOT, capture_output=True, text=True,
                       timeout=120, check=True)
    assert r.stdout.strip().splitlines()[-1] == "torch imported: False"


# --------------------------------------------------------------------------------------------
# Judging.


def _results(**errors: list[float]) -> Results:
    cells = [{"cell": name, "seed": s, "test_error": e, "train_error": e} for name, es in errors.items()
             for s, e in enumerate(es)]
    return Results(cells)


def test_a_difference_counts_only_beyond_one_std():
    clear = Diff.of(_results(a=[0.30, 0.32], b=[0.20, 0.21]), "a", "b")
    assert clear.sign() == 1 and clear.delta == pytest.approx(0.105)
    assert expect("a above b", clear, higher=True).verdict == REPRODUCED
    assert expect("a below b", clear, higher=False).verdict == CONTRADICTED
    # 3 points apart, but a's std over seeds is 7.1 points: no difference
    within = Diff.of(_results(a=[0.20, 0.30], b=[0.22, 0.24]), "a", "b")
    assert within.delta == pytest.approx(0.02) and within.spread == pytest.approx(0.1 / 2 ** 0.5)
    assert within.sign() == 0 and expect("a above b", within, higher=True).verdict == NOT_VISIBLE
    assert no_worse("a no worse", within).verdict == REPRODUCED
    assert no_worse("a no worse", clear).verdict == CONTRADICTED
    one_seed = Diff.of(_results(a=[0.9], b=[0.1]), "a", "b")
    assert one_seed.sign() is None and expect("a above b", one_seed, higher=True).verdict == NOT_VISIBLE


def test_a_verdict_is_contradicted_by_any_part_and_reproduced_by_all():
    def parts(*vs):
        return Verdict(tuple(Part("c", v, "n") for v in vs)).verdict

    assert parts(REPRODUCED, REPRODUCED) == REPRODUCED
    assert parts(REPRODUCED, NOT_VISIBLE) == NOT_VISIBLE
    assert parts(REPRODUCED, NOT_VISIBLE, CONTRADICTED) == CONTRADICTED


def test_the_degradation_judge_reads_training_errors():
    judge = get_study("degradation").judge
    seen = _results(plain20=[0.10, 0.11], plain56=[0.20, 0.21], resnet20=[0.10, 0.11], resnet56=[0.05, 0.06])
    assert judge(seen).verdict == REPRODUCED
    flat = _results(plain20=[0.20, 0.21], plain56=[0.10, 0.11], resnet20=[0.10, 0.11], resnet56=[0.05, 0.06])
    assert judge(flat).verdict == CONTRADICTED


def test_cpu_googlenet_rows_are_the_papers_at_a_quarter_width():
    from cnnzoo.models.googlenet import INCEPTION_V1
    from cnnzoo.studies._common import QUARTER_INCEPTION

    quarter = [[r.name, *(w // 4 for w in dataclasses.astuple(r)[1:])] for r in INCEPTION_V1]
    assert QUARTER_INCEPTION == quarter


def test_a_run_in_either_memory_format_matches_a_cell_that_leaves_it_auto():
    from cnnzoo.studies.runner import _mismatch
    from cnnzoo.train import resolve_config

    flags = {"model": "resnet20", "data": "digits", "seed": 0}
    saved = resolve_config(flags).to_dict()
    assert saved["channels_last"] == "auto"
    for chosen in (True, False):  # what a run records once it has measured
        assert _mismatch({**saved, "channels_last": chosen}, flags) is None
    assert "channels_last" in _mismatch(saved, {**flags, "channels_last": False})
    assert "lr=" in _mismatch({**saved, "lr": 1.0}, flags)
