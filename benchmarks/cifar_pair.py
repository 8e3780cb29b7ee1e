"""Two published models on one dataset: CIFAR-10 ResNet-20 and ResNet-56 on the 10,000 test JPEGs.

    PYTHONPATH=. python benchmarks/cifar_pair.py --home /tmp/cifar-pair --figures docs

Creates one project (ResNet-20 as the reference), adds ResNet-56 to it, extracts both models' features,
then reports the per-class gap correlation (Pearson, Spearman) and effective robustness. CIFAR-10 has no
spurious labels, so each class is ranked by a proxy feature (`models_report(proxy=True)`: of ResNet-20's
top five features of the class, the one with the largest |triage gap|). Writes the two figures as PNG
and prints the timings and numbers as JSON. Needs ../shared/data (the shared CIFAR-10 folder).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

# The shared data folder beside the checkout (../shared/data), or where SPURAUDIT_SHARED_DATA points.
SHARED = Path(os.environ.get("SPURAUDIT_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
CIFAR_TEST = SHARED / "cifar10" / "test"
RESNETS = SHARED / "cifar10-resnet"
MEAN, STD = "0.485,0.456,0.406", "0.229,0.224,0.225"


def build(home: Path, limit: int | None = None) -> dict:
    from spuraudit.create import create_project
    from spuraudit.multimodel import add_checkpoint

    data = CIFAR_TEST
    if limit:  # a per-class subset, for a quick run
        data = home / "cifar-subset"
        for folder in sorted(CIFAR_TEST.iterdir()):
            (data / folder.name).mkdir(parents=True, exist_ok=True)
            for image in sorted(folder.iterdir())[:limit]:
                shutil.copyfile(image, data / folder.name / image.name)
    timings = {}
    t0 = time.perf_counter()
    project = create_project("cifar10-pair", str(data), "", "spuraudit:cifar_resnet20",
                             str(RESNETS / "resnet20-12fca82f.th"), 32, MEAN, STD, False,
                             model_name="cifar10-resnet20", base=home)
    second = add_checkpoint(project, RESNETS / "resnet56-4bfd9763.th", "spuraudit:cifar_resnet56",
                            name="cifar10-resnet56", size=32, mean=MEAN, std=STD, base=home)
    timings["create_and_add_s"] = time.perf_counter() - t0
    for folder, key in ((project.model_folder, "extract_resnet20_s"), (second, "extract_resnet56_s")):
        t0 = time.perf_counter()
        project.extract(model_folder=folder, batch_size=500, num_workers=0)
        timings[key] = time.perf_counter() - t0
    return {"project": str(project.folder), "images": len(project.table), **timings}


def figures(report, out: Path) -> list[str]:
    """The effective-robustness scatter and the correlation matrices, as PNG (matplotlib: no browser needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    frame = report.per_class
    fig, ax = plt.subplots(figsize=(5.2, 5.0))
    for name, marker in zip(report.models, "os^Dv"):
        rows = frame[frame["model"] == name]
        ax.scatter(rows["acc_high"], rows["acc_low"], marker=marker, label=name, alpha=0.8)
        for _, row in rows.iterrows():
            ax.annotate(row["class"], (row["acc_high"], row["acc_low"]), fontsize=6, alpha=0.6)
    lo = float(min(frame["acc_high"].min(), frame["acc_low"].min(), 100)) - 3
    ax.plot([lo, 101], [lo, 101], "k--", lw=0.8, label="y = x")
    ax.set_xlabel("accuracy on high-spuriosity images (%)")
    ax.set_ylabel("accuracy on low-spuriosity images (%)")
    ax.set_title(f"Effective robustness ({report.split}, k = {report.k})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    robustness = out / "cifar10-effective-robustness.png"
    fig.savefig(robustness, dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(7.5, 3.4))
    for ax, (title, matrix) in zip(axes, (("Pearson", report.pearson), ("Spearman", report.spearman))):
        ax.imshow(matrix.to_numpy(dtype=float), vmin=-1, vmax=1, cmap="RdBu")
        ax.set_xticks(range(len(matrix)), matrix.columns, fontsize=7, rotation=20)
        ax.set_yticks(range(len(matrix)), matrix.index, fontsize=7)
        for i in range(len(matrix)):
            for j in range(len(matrix)):
                value = matrix.iat[i, j]
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=9,
                        color="white" if abs(value) > 0.5 else "black")
        ax.set_title(f"{title} correlation of per-class gaps", fontsize=9)
    fig.tight_layout()
    correlation = out / "cifar10-gap-correlation.png"
    fig.savefig(correlation, dpi=120)
    plt.close(fig)
    return [str(robustness), str(correlation)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", default="/tmp/spuraudit-cifar-pair", help="a scratch home (replaced)")
    parser.add_argument("--figures", default=None, help="folder for the PNG figures (e.g. docs)")
    parser.add_argument("--limit", type=int, default=None, help="images per class (default: all 1,000)")
    parser.add_argument("-k", type=int, default=100, help="images per end of each class's ranking")
    parser.add_argument("--reuse", action="store_true", help="report on the project a previous run left in --home")
    args = parser.parse_args()
    if not CIFAR_TEST.is_dir():
        raise SystemExit(f"{CIFAR_TEST} is missing: this benchmark needs the shared CIFAR-10 data")
    home = Path(args.home)
    if args.reuse:
        result = {"project": str(home / "projects" / "cifar10-pair")}
    else:
        if home.exists():
            shutil.rmtree(home)
        home.mkdir(parents=True)
        result = build(home, args.limit)

    from spuraudit.multimodel import models_report
    from spuraudit.project import Project

    project = Project.open(result["project"])
    t0 = time.perf_counter()
    report = models_report(project, split=None, k=args.k, proxy=True)
    result["report_s"] = time.perf_counter() - t0
    result.update(report.to_dict())
    if args.figures:
        result["figures"] = figures(report, Path(args.figures))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
