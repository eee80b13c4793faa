"""``cnnzoo bench``: well-formed table and JSON at a tiny size, counterparts that really fit.

No timing is asserted (the numbers depend on the machine and its load); what is checked is that
every figure printed follows from the timed calls it reports.
"""

from __future__ import annotations

import json
import platform
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import cnnzoo
from cnnzoo.bench import COUNTERPARTS, PEAK_CONV, build_counterpart, counterpart_of
from cnnzoo.cli import main
from cnnzoo.interop import convert_state_dict

TINY = ["--input-size", "3", "32", "32", "--batch-size", "2", "--iters", "2", "--warmup", "1"]
_P = PEAK_CONV
PEAK_MACS = _P["batch"] * _P["channels"] ** 2 * _P["kernel"] ** 2 * _P["size"] ** 2  # out elements x in x k^2


def _json(capsys, *argv: str) -> dict:
    assert main(["bench", *argv, "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def _check_timed(t: dict, iters: int, images: int, macs: int) -> None:
    times = t["times_ms"]
    assert len(times) == iters and all(v > 0 for v in times)
    median = sorted(times)[iters // 2] if iters % 2 else sum(sorted(times)[iters // 2 - 1:iters // 2 + 1]) / 2
    assert t["median_ms"] == pytest.approx(median)
    assert t["images_per_s"] == pytest.approx(images / (median / 1e3))
    assert t["macs_per_call"] == macs
    assert t["gmacs_per_s"] == pytest.approx(macs / (median / 1e3) / 1e9)


def test_json_alone(capsys):
    d = _json(capsys, "resnet20", *TINY)
    assert (d["model"], d["mode"], d["batch_size"], d["input_size"], d["iters"], d["warmup"]) == (
        "resnet20", "infer", 2, [3, 32, 32], 2, 1)
    assert d["other"] is None and d["ratio"] is None and "no counterpart of resnet20" in d["note"]
    macs = cnnzoo.analysis.profile(cnnzoo.create_model("resnet20"), (3, 32, 32)).macs
    _check_timed(d["cnnzoo"], 2, 2, 2 * macs)
    _check_timed(d["peak"], 2, 0, PEAK_MACS)
    assert d["peak_fraction"] == pytest.approx(d["cnnzoo"]["gmacs_per_s"] / d["peak"]["gmacs_per_s"])
    assert d["cnnzoo"]["setup"] == "eager, NCHW, fp32"
    assert d["threads"] == torch.get_num_threads() and d["machine"]["torch"] == torch.__version__


def test_json_against_torchvision_with_the_fast_path(capsys):
    d = _json(capsys, "resnet18", *TINY, "--fast")
    assert d["other"]["library"] == "torchvision" and d["other"]["model"] == "resnet18"
    assert d["ratio"] == pytest.approx(d["cnnzoo"]["images_per_s"] / d["other"]["images_per_s"])
    assert d["cnnzoo"]["setup"].startswith("fast: BN folded, channels-last")
    assert d["other"]["setup"] == "eager, NCHW, fp32"  # the baseline
    _check_timed(d["other"], 2, 2, d["other"]["macs_per_call"])


def test_training_steps_count_three_forward_passes(capsys):
    infer = _json(capsys, "resnet20", *TINY, "--against", "none")
    train = _json(capsys, "resnet20", *TINY, "--against", "none", "--mode", "train", "--channels-last",
                  "--amp", "bf16")
    assert infer["note"] == "" and train["mode"] == "train"
    assert train["cnnzoo"]["macs_per_call"] == 3 * infer["cnnzoo"]["macs_per_call"]
    assert train["cnnzoo"]["setup"] == "eager, channels-last, bf16 autocast"


def test_table(capsys):
    assert main(["bench", "resnet18", *TINY, "--fast", "--amp", "bf16"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("resnet18, infer, batch 2 at 3x32x32, ")
    assert re.fullmatch(r"cnnzoo / torchvision: \d+\.\d{3}x images/s", lines[2])
    header, rule, *rows = lines[3:]
    assert header.split() == ["model", "library", "setup", "ms/call", "images/s", "vs", "torchvision",
                              "G", "MACs/s", "%", "of", "peak"]
    assert set(rule) <= {"-", " "} and len(rows) == 3
    ours, theirs, peak = rows
    assert ours.startswith("resnet18") and "cnnzoo" in ours and "bf16 weights" in ours
    assert theirs.startswith("resnet18") and "torchvision" in theirs and "eager, NCHW, fp32" in theirs
    assert peak.startswith("conv 3x3 256->256") and peak.rstrip().endswith("100")
    ratio = float(lines[2].split()[3].rstrip("x"))
    assert f"{ratio:.3f}" in ours


def test_table_ratio_has_the_headlines_three_decimals():
    """A ratio whose third decimal is 0 reads 1.270 in the table as in the headline, not 1.27."""
    from cnnzoo.bench import BenchResult, Timed

    ours = Timed("m", "cnnzoo", "eager", 127, 10**9, [1.0])
    other = Timed("m", "torchvision", "eager", 100, 10**9, [1.0])
    peak = Timed("conv", "torch", "peak", 0, 10**9, [0.5])
    result = BenchResult("m", "infer", 2, (3, 8, 8), 1, 1, 0, ours, other, peak, {})
    assert result.rows()[0]["vs torchvision"] == "1.270"
    assert result.rows()[1]["vs torchvision"] is None


@pytest.mark.parametrize("argv, message", [
    (["resnet20", "--fast", "--mode", "train"], "inference only"),
    (["resnet20", "--iters", "0"], "iters must be an int >= 1"),
    (["resnet20", "--compile", "--warmup", "0"], "warmup must be an int >= 1"),
    (["resnet18", "--opt", "attn=se", *TINY], "does not fit resnet18 as given"),
])
def test_bad_input_is_one_line(capsys, argv, message):
    assert main(["bench", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cnnzoo bench: error: ") and message in err and err.count("\n") == 1


def test_counterparts_are_found_by_library():
    assert counterpart_of("resnet50")[:2] == ("torchvision", "resnet50")
    assert counterpart_of("googlenet_tv")[:2] == ("torchvision", "googlenet")
    assert counterpart_of("resnet50", "timm")[:2] == ("timm", "resnet50")
    assert counterpart_of("resnet50", "none") is None and counterpart_of("resnet20") is None
    assert counterpart_of("vgg16", "timm") is None
    with pytest.raises(ValueError, match="against='keras' is not allowed"):
        counterpart_of("resnet50", "keras")


ENTRIES = [(lib, name) for lib, table in COUNTERPARTS.items() for name in table]


@pytest.mark.parametrize("lib, name", ENTRIES, ids=[f"{lib}-{name}" for lib, name in ENTRIES])
def test_every_counterpart_maps_onto_cnnzoo_exactly(lib, name):
    if lib == "timm":
        pytest.importorskip("timm")
    with torch.device("meta"):  # shapes only
        ours = cnnzoo.create_model(name)
        ext = build_counterpart(lib, *COUNTERPARTS[lib][name], num_classes=ours.num_classes)
    # every cnnzoo tensor filled, every external one used, shapes equal (or ValueError)
    assert set(convert_state_dict(ours, ext.state_dict(), lib)) == set(ours.state_dict())


def test_bench_help_imports_no_torch():
    code = ("import sys\nfrom cnnzoo.cli import main\ntry:\n    main(['bench', '--help'])\n"
            "except SystemExit:\n    pass\nprint('torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
                       capture_output=True, text=True, timeout=120, check=True)
    assert r.stdout.strip().splitlines()[-1] == "False"


_GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"

# One process per case: reuse_freed_memory changes the whole process for good. A 64-channel
# activation at 4x224x224 is 51 MB, above glibc's 32 MB mmap ceiling: by default each one is a
# fresh mapping whose pages fault as they are first written (12,544 pages each); with
# reuse_freed_memory, after the first few calls, none do.
_FAULTS = """
import resource, sys, torch, torch.nn as nn
from cnnzoo.optimize import reuse_freed_memory, reusing_freed_memory
applied = reuse_freed_memory() if sys.argv[1] == "reuse" else False
assert reusing_freed_memory() == applied
torch.set_num_threads(1)
m = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 1)).eval()
x = torch.randn(4, 3, 224, 224)
with torch.inference_mode():
    for _ in range(4):  # the heap settles within the first calls
        m(x)
    f = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(3):
        m(x)
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f)
"""


@pytest.mark.skipif(not _GLIBC, reason="reuse_freed_memory acts on glibc only")
def test_reuse_freed_memory_removes_the_page_faults_of_large_tensors():
    out = {}
    for case in ("default", "reuse"):
        r = subprocess.run([sys.executable, "-c", _FAULTS, case], capture_output=True, text=True,
                           timeout=120, check=True)
        applied, faults = r.stdout.split()
        out[case] = (applied, int(faults))
    pages = 4 * 64 * 224 * 224 * 4 // 4096  # one activation's pages; three calls, each with three
    assert out["default"][0] == "False" and out["default"][1] >= 3 * pages  # fresh pages every call
    assert out["reuse"][0] == "True" and out["reuse"][1] < pages // 10  # the same pages again


@pytest.mark.skipif(_GLIBC, reason="only where the C library is not glibc")
def test_reuse_freed_memory_changes_nothing_elsewhere():
    from cnnzoo.optimize import reuse_freed_memory, reusing_freed_memory

    assert reuse_freed_memory() is False and reusing_freed_memory() is False


@pytest.mark.skipif(not _GLIBC, reason="reuse_freed_memory acts on glibc only")
def test_bench_reuse_memory_says_so_in_json_and_table():
    argv = ["-m", "cnnzoo", "bench", "resnet20", *TINY, "--reuse-memory"]
    d = json.loads(subprocess.run([sys.executable, *argv, "--format", "json"], capture_output=True,
                                  text=True, timeout=300, check=True).stdout)
    assert d["machine"]["reuse_freed_memory"] is True
    table = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=300,
                           check=True).stdout
    assert "freed memory kept for reuse (--reuse-memory)" in table.splitlines()[1]


def test_bench_without_reuse_memory_says_nothing_of_it(capsys):
    d = _json(capsys, "resnet20", *TINY)
    assert d["machine"]["reuse_freed_memory"] is False
