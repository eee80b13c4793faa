"""A real-data run: CIFAR-10 (JPEG q75) from ../shared/data, 2,000 images, learns well above chance."""

from __future__ import annotations

from pathlib import Path

import pytest

from cnnzoo.train import resolve_config, train

ZIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg75.zip"


@pytest.mark.skipif(not ZIP.is_file(), reason=f"{ZIP} is not present")
def test_cifar10_jpeg_subset_learns_well_above_chance(tmp_path):
    # 2,000 images (1,800 train / 200 val; the test split is also cut to 2,000), three epochs of
    # resnet20 (84 steps): about 30% test top-1 measured, against 10% for chance.
    cfg = resolve_config({"model": "resnet20", "data": f"imagefolder:{ZIP}", "subset": 2000,
                          "cache_dir": str(tmp_path / "cache"), "out": str(tmp_path / "run"),
                          "epochs": 3, "batch_size": 64, "lr": 0.05, "label_smoothing": 0.0,
                          "device": "cpu"})
    res = train(cfg)
    assert res["data_sizes"]["train"] == 1800
    assert res["test_top1"] > 0.2, res["test_top1"]
    assert res["test_top5"] > 0.6
