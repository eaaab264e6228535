"""The full profile on paper: each chapter's work in VGG-16 forward passes, and its wall time on 1, 8
and 64 GPUs (the performance appendix's "Scale" section).

    .venv/bin/python bench/scale.py                      # rate from bench/device/results.csv (device check)
    .venv/bin/python bench/scale.py --rate 2500          # VGG-16 inference images/s of one GPU

Work is counted in **VGG-16 forward-pass equivalents at 224 x 224** from the chapters' full-profile
parameters (``book/params/full/``): each method's cost in forward passes comes from ``make bench``
(``bench/results.csv``: Grad-CAM-type maps cost the Grad-CAM top-5 ratio, gradient-type maps the
input-gradient pass), other networks are scaled by their torchvision FLOP counts, and a Score-CAM
map is one forward pass per channel of the layer (512 for VGG-16) plus one. Attacks and DE
budgets are counted at their upper bound (no early stop), so the totals are upper bounds for
chapters 5, 6 and 8; the calibration and figure passes are left out (under 1 % each). Time is
``work / (GPUs x rate)``: it assumes that the work divides evenly over ranks (it does: shares of
items, :mod:`gradcam_lib.shards`) and that compute is the bound, which the decode and PCIe columns
check.
"""

from __future__ import annotations

import argparse
import os
import platform
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT / "book" / "params" / "full"
#: torchvision's GFLOPs per 224-px image (``weights.meta["_ops"]``), relative to VGG-16's 15.47.
FLOPS = {"vgg16": 1.0, "alexnet": 0.714 / 15.47, "googlenet": 1.498 / 15.47, "chexnet": 2.834 / 15.47}
VGG16_CHANNELS = 512  # features.29, the Grad-CAM layer: Score-CAM's masked forwards per image
DECODE_CSV = ROOT / "bench" / "decode.csv"  # written by --measure-decode


@dataclass(frozen=True)
class Part:
    """One piece of a chapter: ``images`` images, each costing ``passes`` forward passes of ``model``."""

    chapter: str
    what: str
    images: int
    passes: float
    model: str = "vgg16"

    @property
    def work(self) -> float:
        return self.images * self.passes * FLOPS[self.model]


def method_costs(results: Path) -> dict[str, float]:
    """Forward passes per map, from the VGG-16 rows of ``make bench`` (largest batch measured)."""
    table = pd.read_csv(results)
    rows = table[(table["model"] == "vgg16") & (table["library"].isin(["gradcam_lib", "torch"]))]
    vgg = rows[rows["batch"] == rows["batch"].max()].set_index("method")["ratio"]
    one_forward = rows.set_index("method")["ratio"].get("Guided Grad-CAM / Guided Backprop")  # the fast path's row
    gradient = float(vgg["input-gradient pass"])
    guided = float(vgg["Guided Backprop"]) * gradient  # its row's baseline is the input-gradient pass
    return {"cam": float(vgg["Grad-CAM top-5"]), "gradient": gradient,
            "guided_gradcam": guided * float(one_forward) if one_forward is not None
            else float(vgg["Guided Grad-CAM"]) * gradient,
            "score_cam": VGG16_CHANNELS + 1.0}


def _cost(method: str, costs: dict[str, float]) -> float:
    if method == "score_cam":
        return costs["score_cam"]
    if method == "guided_gradcam":
        return costs["guided_gradcam"]
    return costs["gradient"] if method in {"backprop", "guided_backprop"} else costs["cam"]


def _maps(chapter: str, methods: list[str], images: int, models: int, costs: dict[str, float]) -> list[Part]:
    """The maps of ``methods`` on ``images`` images under ``models`` models: Score-CAM apart."""
    where = f" x {models} randomised models" if models > 1 else ""
    others = [m for m in methods if m != "score_cam"]
    found = [Part(chapter, f"{len(others)} maps{where}", images, models * sum(_cost(m, costs) for m in others))]
    if "score_cam" in methods:
        found.append(Part(chapter, f"score_cam{where}", images, models * costs["score_cam"]))
    return found


def parts(costs: dict[str, float]) -> list[Part]:
    """The chapters' work, from their full-profile parameters (cluttered MNIST and MNIST parts are
    left out: their networks cost under 0.1 % of a VGG-16 pass)."""
    chapters = ("01_localization", "02_pointing_game", "03_occlusion", "06_sensitivity", "08_adversarial",
                "09_sanity_checks")
    p = {name: yaml.safe_load((PARAMS / f"{name}.yaml").read_text()) for name in chapters}
    loc = p["01_localization"]
    images = loc["n_images"] + loc["calibration_images"]
    found = [Part("01 localisation", f"{model} {method}", images, _cost(method, costs), model)
             for model, method in loc["runs"]]
    point = p["02_pointing_game"]
    voc_test, pointing_images = 4952, 4952 + point["n_images"]
    found += [Part("02 pointing", f"{method} (VOC test + ILSVRC)", pointing_images, _cost(method, costs))
              for method in point["methods"]]
    found += [Part("02 pointing", f"{method} top-{point['top_k']} (rejection)", voc_test + point["n_images"],
                   _cost(method, costs) * 0.3) for method in point["rejection_methods"]
              if method in {"backprop", "guided_backprop"}]  # CAM top-k: free; gradients: <= 1.3x top-1
    occ = p["03_occlusion"]
    windows = (224 - occ["patch"]) // occ["stride"] + 1
    found += [Part("03 occlusion", f"occlusion {occ['patch']} px stride {occ['stride']}", occ["n_images"],
                   windows ** 2),
              Part("03 occlusion", f"deletion + insertion x {len(occ['causal_methods'])} methods", occ["n_images"],
                   2 * occ["n_steps"] * len(occ["causal_methods"])),
              Part("03 occlusion", "ROAD forwards (imputation not counted)", occ["road_images"],
                   2 * len(occ["road_percentages"]) * len(occ["causal_methods"])),
              *_maps("03 occlusion", occ["methods"], occ["n_images"], 1, costs)]
    sens = p["06_sensitivity"]
    found += [Part("06 one-pixel", f"{model} DE {pop} x {gens} (upper bound)", n, pop * gens, model)
              for model, _, n, pop, gens in sens["runs"] if model in FLOPS]
    adv = p["08_adversarial"]
    settings = len(adv["modes"]) * len(adv["epsilons"])
    steps = sum({"fgsm": 1, "pgd": adv["pgd_steps"]}[a] for a in adv["attacks"]) * settings
    attacked = len(adv["attacks"]) * settings  # adversarial images per clean one, each mapped like it
    found.append(Part("08 adversarial", f"{steps} attack gradients + maps of {attacked + 1} images", adv["n_images"],
                      steps * costs["gradient"] + (attacked + 1) * sum(_cost(m, costs) for m in adv["methods"])))
    san = p["09_sanity_checks"]
    models = 2 * 16  # cascading + independent, VGG-16's 16 stages
    found += _maps("09 sanity checks", san["methods"], san["n_images"], models, costs)
    return found


def decode_rate(seconds: float = 3.0, size: tuple[int, int] = (500, 375)) -> float:
    """Images per second that one CPU thread turns from JPEG bytes into a 224 x 224 model input
    (PIL decode + the whole-image resize + normalisation, the CPU path), on a generated photo-like
    JPEG of ILSVRC's typical 500 x 375 pixels (quality 90)."""
    import io
    import time

    import torch
    from PIL import Image

    from gradcam_lib.datasets.transforms import ImageTransform

    rng = np.random.default_rng(0)
    smooth = np.cumsum(np.cumsum(rng.normal(size=(size[1], size[0], 3)), axis=0), axis=1)
    pixels = (255 * (smooth - smooth.min()) / np.ptp(smooth)).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    data, transform = buffer.getvalue(), ImageTransform.whole_image()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            transform(Image.open(io.BytesIO(data)).convert("RGB"))
            done += 1
        return done / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)


def decode_rate_table(path: Path, rate: float) -> pd.DataFrame:
    """The measured CPU decode rate (``--measure-decode``) and the CPU threads that would keep one
    GPU, and an 8-GPU node, fed at ``rate`` images/s (a one-pass map: as many images as passes)."""
    table = pd.read_csv(path)
    per_thread = table["images_per_s"]
    return table.assign(**{"threads per GPU at R": rate / per_thread, "threads per 8-GPU node": 8 * rate / per_thread})


def heavy_share(found: list[Part]) -> float:
    """The share of the work in stride-1 occlusion, Score-CAM maps and DE attacks."""
    heavy = sum(p.work for p in found if p.what.startswith("occlusion") or "score_cam" in p.what or " DE " in p.what)
    return heavy / sum(p.work for p in found)


def device_rate(folder: Path) -> float | None:
    """VGG-16 fp32 inference images/s at batch 256 from the device check's ``results.csv``
    (``bench/device_check.sh``), if it has run; None otherwise."""
    path = folder / "results.csv"
    if not path.exists():
        return None
    table = pd.read_csv(path)
    row = table[(table["model"] == "vgg16") & (table["method"] == "inference forward") & (table["batch"] == 256)]
    if "dtype" in row:
        row = row[row["dtype"].fillna("fp32") == "fp32"]
    return float(row["batch"].iloc[0] / row["seconds"].iloc[0]) if len(row) else None


def scale_table(found: list[Part], rate: float, gpus: tuple[int, ...] = (1, 8, 64)) -> pd.DataFrame:
    """Per chapter: work (millions of VGG-16 forward passes) and hours on each number of GPUs."""
    frame = pd.DataFrame([{"chapter": part.chapter, "work": part.work} for part in found])
    table = frame.groupby("chapter", sort=True)["work"].sum().to_frame()
    table.loc["total"] = table["work"].sum()
    for n in gpus:
        table[f"hours on {n} GPU{'s' if n > 1 else ''}"] = table["work"] / (n * rate) / 3600
    return table.assign(work=table["work"] / 1e6).rename(columns={"work": "M forward passes"}).reset_index()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results.csv")
    parser.add_argument("--device-dir", type=Path, default=ROOT / "bench" / "device")
    parser.add_argument("--rate", type=float, default=None, help="VGG-16 inference images/s of one GPU")
    parser.add_argument("--measure-decode", action="store_true",
                        help=f"measure the CPU path's decode rate into {DECODE_CSV.relative_to(ROOT)} and stop")
    args = parser.parse_args()
    if args.measure_decode:
        rates = [decode_rate() for _ in range(5)]
        row = {"what": "PIL decode + 224 px resize + normalise, 500 x 375 JPEG", "threads": 1,
               "images_per_s": float(np.median(rates)), "low": min(rates), "high": max(rates), "rounds": len(rates),
               "device": f"{platform.machine()} ({os.cpu_count()} CPUs)"}
        pd.DataFrame([row]).to_csv(DECODE_CSV, index=False)
        print(pd.DataFrame([row]).to_string(index=False))
        return
    rate = args.rate or device_rate(args.device_dir)
    if rate is None:
        raise SystemExit("no measured GPU rate (bench/device/results.csv): pass --rate IMAGES_PER_S")
    found = parts(method_costs(args.results))
    pd.set_option("display.width", 160)
    print(pd.DataFrame([vars(p) | {"M work": p.work / 1e6} for p in found]).round(3).to_string(index=False))
    print(f"\nat {rate:.0f} VGG-16 images/s per GPU:")
    print(scale_table(found, rate).round(2).to_string(index=False))


if __name__ == "__main__":
    main()
