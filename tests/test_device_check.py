"""``bench/device_check.sh`` in its small CPU mode (the cuda tests inside it are skipped without a
GPU), its bookkeeping of failing and timed-out steps, the benchmark options it uses, and the
ILSVRC-format fixture writer (``bench/ilsvrc_fixture.py``) read back by ILSVRCValDataset."""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest
import torch
from PIL import Image

from gradcam_lib.datasets.ilsvrc import ILSVRCValDataset, find_layout
from gradcam_lib.datasets.transforms import ImageTransform

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "device_check.sh"
STEPS = ("environment", "fixture", "pytest_cuda", "bench_fp32", "bench_bf16", "ilsvrc_fp32", "ilsvrc_bf16")
LEFT_OUT = ("bench_bf16", "ilsvrc_fp32")  # the small mode's default DEVICE_CHECK_SKIP
FILES = ["environment.txt", "pytest_cuda.log", "results.csv", "steps.log", "summary.txt"]


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _run(out: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """The script in its small mode, from another folder (it must go to the repository itself)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DEVICE_CHECK_")}
    return subprocess.run(["bash", str(SCRIPT), str(out), "--small"], cwd=out.parent, capture_output=True, text=True,
                          env={**clean, **env}, timeout=900, check=False)


def _steps(summary: str) -> dict[str, tuple[str, float, str]]:
    """step -> (exit code, seconds, status) from summary.txt's table."""
    found = {}
    for line in summary.splitlines():
        match = re.match(r"^(\w+)\s+(-|\d+)\s+([\d.]+)\s+(-|-?\d+)\s+(.+?)\s+(\S+)$", line)
        if match and match.group(1) in STEPS:
            found[match.group(1)] = (match.group(2), float(match.group(3)), match.group(5))
    return found


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str], str, str]:
    """One small-mode run: (OUTDIR, the process, bench/results.csv's hash before and after)."""
    out = tmp_path_factory.mktemp("device_check") / "out"
    tracked = ROOT / "bench" / "results.csv"
    before = hashlib.sha256(tracked.read_bytes()).hexdigest()
    result = _run(out)
    return out, result, before, hashlib.sha256(tracked.read_bytes()).hexdigest()


def test_the_small_run_succeeds_and_writes_five_files_only(small_run):
    out, result, before, after = small_run
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(os.listdir(out)) == FILES  # the device tool brings back at most eight
    assert before == after  # bench/results.csv untouched: every --out points into OUTDIR


def test_the_summary_lists_every_step_with_its_exit_code_and_duration(small_run):
    out, result, _, _ = small_run
    summary = (out / "summary.txt").read_text()
    assert result.stdout == summary  # printed as well
    steps = _steps(summary)
    assert set(steps) == set(STEPS)
    for name, (code, seconds, status) in steps.items():
        if name in LEFT_OUT:
            assert (code, status) == ("-", "left out (DEVICE_CHECK_SKIP)")
        else:
            assert (code, status) == ("0", "ok") and seconds > 0, name
    assert re.search(r"^report: exit 0 after [\d.]+ s; total \d+ s$", summary, re.MULTILINE)
    assert "weights: random (pretrained=False)" in summary
    log = (out / "steps.log").read_text()
    for name in STEPS:
        assert f"===== {name}" in log


def test_the_environment_names_python_torch_torchvision_and_the_gpu(small_run):
    out, _, _, _ = small_run
    text = (out / "environment.txt").read_text()
    import torchvision

    assert f"torch {torch.__version__} " in text and f"torchvision {torchvision.__version__}" in text
    assert f"cuda available: {torch.cuda.is_available()}" in text
    assert "## nvidia-smi" in text and "missing modules: none" in text
    summary = (out / "summary.txt").read_text()
    assert f"torch {torch.__version__} " in summary  # the summary repeats the versions


def test_pytest_ran_the_cuda_tests_and_logged_them(small_run):
    out, _, _, _ = small_run
    log = (out / "pytest_cuda.log").read_text()
    outcome = "passed" if torch.cuda.is_available() else "skipped"
    assert re.search(rf"\b\d+ {outcome}\b", log), log
    assert not re.search(r"\b\d+ (failed|errors?)\b", log), log
    assert "test_cuda.py" in log or torch.cuda.is_available()  # -rs names the skipped file


def test_results_hold_the_benchmark_and_the_ilsvrc_loop_rows(small_run):
    out, _, _, _ = small_run
    rows = pd.read_csv(out / "results.csv")
    assert set(rows["source"]) == {"bench_fp32", "ilsvrc_bf16_channels_last"}
    bench = rows[rows["source"] == "bench_fp32"]
    assert sorted(bench["method"]) == ["Grad-CAM top-1", "Grad-CAM top-5", "inference forward"]
    assert set(bench["library"]) == {"torch", "gradcam_lib"}  # --libraries gradcam_lib: no captum, no pytorch-grad-cam
    assert set(bench["model"]) == {"alexnet"} and set(bench["batch"]) == {2} and set(bench["dtype"]) == {"fp32"}
    assert (bench["seconds"] > 0).all() and (bench["ratio"] > 0).all()
    forward = bench[bench["method"] == "inference forward"].iloc[0]
    assert 0.25 < forward["ratio"] < 4  # the forward pass against itself: about 1 on any machine
    loop = rows[rows["source"] == "ilsvrc_bf16_channels_last"].set_index("method")
    assert len(loop) == 3 and set(loop["dtype"]) == {"bf16"} and loop["channels_last"].astype(bool).all()
    loop_row = loop.loc["ILSVRC-format loop: decode, top-5 Grad-CAM, boxes, CSV (images/s)"]
    inference = loop.loc["ILSVRC-format inference: decode + forward, same DataLoader (images/s)"]
    assert loop_row["images"] == inference["images"] == 8  # every image of the small fixture
    for _, row in loop.iterrows():
        assert row["images_per_s"] == pytest.approx(1 / row["seconds"])
        assert math.isnan(row["peak_gpu_mib"])  # no GPU here
    assert inference["ratio"] == 1 and loop_row["ratio"] > 1  # the loop does the inference's work and more
    summary = (out / "summary.txt").read_text()
    assert "ILSVRC-format fixture: images/s" in summary and "Grad-CAM top-5" in summary


def test_a_failing_step_is_recorded_and_the_others_still_run(tmp_path):
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\nexit 3\n")
    fake.chmod(0o755)
    out = tmp_path / "out"
    result = _run(out, DEVICE_CHECK_PYTHON=str(fake), DEVICE_CHECK_SKIP="")
    assert result.returncode == 1
    steps = _steps((out / "summary.txt").read_text())
    assert set(steps) == set(STEPS)
    for name in ("fixture", "pytest_cuda", "bench_fp32", "bench_bf16"):
        assert steps[name][0] == "3" and steps[name][2] == "failed", name
    assert steps["environment"][0] == "3"  # the Python part of it failed
    assert steps["ilsvrc_fp32"][2] == steps["ilsvrc_bf16"][2] == "skipped: no fixture"
    assert "report: exit 3" in (out / "summary.txt").read_text()


def test_a_step_past_its_limit_is_stopped_and_a_spent_budget_skips_the_rest(tmp_path):
    fake = tmp_path / "python"
    fake.write_text('#!/bin/sh\ncase "$*" in *report.py*) exit 0 ;; esac\nexec sleep 60\n')
    fake.chmod(0o755)
    out = tmp_path / "out"
    result = _run(out, DEVICE_CHECK_PYTHON=str(fake), DEVICE_CHECK_BUDGET="5", DEVICE_CHECK_SKIP="")
    assert result.returncode == 1
    steps = _steps((out / "summary.txt").read_text())
    code, seconds, status = steps["environment"]
    assert (code, status) == ("124", "timed out after 5 s") and 4.5 < seconds < 30
    for name in ("fixture", "pytest_cuda", "bench_fp32", "bench_bf16"):
        assert steps[name][2] == "skipped: the 5 s budget is spent", name


def test_the_benchmark_options_of_the_device_check():
    benchmark = _load("benchmark")
    assert benchmark.batches_argument("64,256") == (64, 256)
    for bad in ("0", "64,x", ""):
        with pytest.raises(Exception, match="batch sizes"):
            benchmark.batches_argument(bad)
    assert benchmark.methods_argument("grad_cam") == ("Grad-CAM top-1", "Grad-CAM top-5")
    assert benchmark.methods_argument("Grad-CAM top-5,HiResCAM") == ("Grad-CAM top-5", "HiResCAM")
    with pytest.raises(Exception, match="Grad-CAM top-1"):
        benchmark.methods_argument("Grad-CAM++")


@pytest.fixture(scope="module")
def fixture_module() -> ModuleType:
    return _load("ilsvrc_fixture")


def test_the_fixture_is_read_back_by_ilsvrc_val_dataset_with_the_boxes_it_wrote(fixture_module, tmp_path):
    written = fixture_module.write_fixture(tmp_path, 6, seed=3, workers=2)
    assert find_layout(tmp_path) == (tmp_path / "val", tmp_path / "bbox_val" / "val")
    dataset = ILSVRCValDataset(tmp_path, ImageTransform())
    assert len(dataset) == 6
    assert [path.name for path in dataset.image_paths] == [f"ILSVRC2012_val_{i:08d}.JPEG" for i in range(1, 7)]
    for i, item in enumerate(written):
        annotation = dataset.annotation(i)
        assert annotation.image_id == item.image_id
        assert (annotation.width, annotation.height) == (item.width, item.height)
        with Image.open(dataset.image_paths[i]) as image:
            assert image.size == (item.width, item.height) and image.format == "JPEG"
        assert annotation.boxes == item.boxes and annotation.wnids == (item.wnid,) * len(item.boxes)
        assert len(set(annotation.labels)) == 1  # one ILSVRC2012 class per image (an unknown wnid raises)
        for x0, y0, x1, y1 in item.boxes:  # inclusive boxes inside the image, not clipped by the reader
            assert 0 <= x0 < x1 < item.width and 0 <= y0 < y1 < item.height
    sample = dataset[0]
    assert sample.image.shape == (3, 224, 224) and sample.boxes.shape == (len(written[0].boxes), 4)


def test_the_fixture_depends_on_the_seed_and_not_on_the_workers(fixture_module, tmp_path):
    one = fixture_module.write_fixture(tmp_path / "a", 8, seed=5, workers=1)
    two = fixture_module.write_fixture(tmp_path / "b", 8, seed=5, workers=2)  # 8 images: a pool of 2 processes
    other = fixture_module.write_fixture(tmp_path / "c", 8, seed=6, workers=1)
    assert one == two and one != other
    for item in one:
        name = f"val/{item.image_id}.JPEG"
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    with pytest.raises(ValueError, match="at least 1"):
        fixture_module.write_fixture(tmp_path / "d", 0)


def test_the_fixture_sizes_are_varied_like_ilsvrc_val(fixture_module):
    import numpy as np

    assert sum(weight for _, weight in fixture_module.SIZES) == pytest.approx(1)
    sizes = [fixture_module._size(np.random.default_rng([0, i])) for i in range(200)]
    assert sizes.count((500, 375)) > 50 and len(set(sizes)) > 10
    assert all(200 <= min(size) and max(size) <= 800 for size in sizes)
