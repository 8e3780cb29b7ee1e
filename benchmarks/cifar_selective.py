"""Selective classification on CIFAR-10 with a real model, as in the MaskTune paper's selective setting.

    PYTHONPATH=. python benchmarks/cifar_selective.py --home /tmp/cifar-selective [--limit 300] [--figure docs]

The published CIFAR-10 ResNet-20 (../shared/data/cifar10-resnet) on the 10,000 CIFAR-10 test JPEGs, split per
class into fine-tune (50 %), val (25 %) and test (25 %) by file order. ERM is the published model; MaskTune
fine-tunes it for one epoch on the masked fine-tune split with the method's defaults. The accuracy-coverage
table compares ERM alone (its own max-softmax confidence, thresholds chosen on val) with ERM × MaskTune
(the product of the two models' probabilities), from 80 to 100 % coverage. Prints JSON; with --figure
writes the curve as PNG. Needs ../shared/data (or SPURAUDIT_SHARED_DATA).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import time
from pathlib import Path

SHARED = Path(os.environ.get("SPURAUDIT_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
CIFAR_TEST = SHARED / "cifar10" / "test"
RESNET20 = SHARED / "cifar10-resnet" / "resnet20-12fca82f.th"
MEAN, STD = "0.485,0.456,0.406", "0.229,0.224,0.225"
COVERAGES = (0.80, 0.85, 0.90, 0.95, 1.00)


def write_manifest(home: Path, limit: int | None) -> Path:
    """path,label,split rows: per class, the first half of its files fine-tune, then a quarter each val and test."""
    manifest = home / "cifar10-selective.csv"
    with open(manifest, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["path", "label", "split"])
        for folder in sorted(p for p in CIFAR_TEST.iterdir() if p.is_dir()):
            files = sorted(folder.iterdir())[:limit] if limit else sorted(folder.iterdir())
            n = len(files)
            for i, image in enumerate(files):
                split = "train" if i < n // 2 else "val" if i < (3 * n) // 4 else "test"
                out.writerow([str(image), folder.name, split])
    return manifest


def curves(project, erm_store, masktune_store):
    """ERM alone, MaskTune alone and ERM × MaskTune, all through the one selective-classification formula.

    A model alone is its product with a uniform second model: the renormalised product is then the model's
    own distribution, so its confidence is its max softmax."""
    import numpy as np

    from spuraudit.mitigate import selective_from_stores
    from spuraudit.mitigate.selective import selective_classification, softmax

    table = project.table
    v, t = table.split_mask("val"), table.split_mask("test")

    def alone(store):
        probs = softmax(np.asarray(store.logits))
        uniform = np.full_like(probs, 1.0 / probs.shape[1])
        return selective_classification(probs[v], uniform[v], table.labels[v], probs[t], uniform[t],
                                        table.labels[t], COVERAGES)

    both = selective_from_stores(project, erm_store, masktune_store, coverages=COVERAGES)
    return alone(erm_store), alone(masktune_store), both


def figure(rows: list[dict], out: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5.0, 3.6))
    for key, label, marker in (("erm", "ERM", "o"), ("masktune", "MaskTune alone", "s"),
                               ("erm_x_masktune", "ERM × MaskTune", "^")):
        ax.plot([r["coverage"] for r in rows], [r[key] for r in rows], marker=marker, label=label)
    ax.set_xlabel("coverage on test (target, %)")
    ax.set_ylabel("accuracy on accepted test images (%)")
    ax.set_title("Selective classification, CIFAR-10 ResNet-20")
    ax.invert_xaxis()
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "cifar10-selective.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", default="/tmp/spuraudit-cifar-selective", help="a scratch home (replaced)")
    parser.add_argument("--limit", type=int, default=None, help="images per class (default: all 1,000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--figure", default=None, help="folder for the PNG curve (e.g. docs)")
    args = parser.parse_args()
    if not CIFAR_TEST.is_dir() or not RESNET20.is_file():
        raise SystemExit(f"{CIFAR_TEST} or {RESNET20} is missing: this benchmark needs the shared CIFAR-10 data")

    from spuraudit.create import create_project
    from spuraudit.mitigate import run_mitigation

    home = Path(args.home)
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    timings = {}
    t0 = time.perf_counter()
    project = create_project("cifar10-selective", str(write_manifest(home, args.limit)), "",
                             "spuraudit:cifar_resnet20", str(RESNET20), 32, MEAN, STD, False,
                             model_name="cifar10-resnet20", base=home)
    project.extract(batch_size=500, num_workers=0)
    timings["create_and_extract_s"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    child = run_mitigation(project, "masktune", {"seed": args.seed})
    timings["masktune_s"] = round(time.perf_counter() - t0, 1)

    _, card = project.load_model(child)
    alone, masktune_alone, both = curves(project, project.feature_store(), project.feature_store(child))
    rows = [{"coverage": round(a.coverage_target, 1), "erm": round(a.test_accuracy, 2),
             "masktune": round(m.test_accuracy, 2), "erm_x_masktune": round(b.test_accuracy, 2),
             "test_coverage_erm": round(a.test_coverage, 1), "test_coverage_erm_x_masktune": round(b.test_coverage, 1)}
            for a, m, b in zip(alone.itertuples(), masktune_alone.itertuples(), both.itertuples())]
    splits = {s: int(project.table.split_mask(s).sum()) for s in ("train", "val", "test")}
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, torch threads default",
              "images": splits, "masktune_options": card.options,
              "masked_share": card.metrics.get("diagnostics", {}).get("masked_share"),
              "timings": timings, "curve": rows}
    if args.figure:
        result["figure"] = figure(rows, Path(args.figure))
    print(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
