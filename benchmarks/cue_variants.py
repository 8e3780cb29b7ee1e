"""Cue-variant benchmark: do the mitigations hold on cues they were not tuned on?

Data, two families: the 10,000 real MNIST test digits in `<repo>/../shared/data/mnist/` (IDX files),
classes 0-4 ('low') and 5-9 ('high'); or (`--family cifar`) 8,000 real CIFAR-10 test images in
`<repo>/../shared/data/cifar10/test/`, vehicles (airplane, automobile, ship, truck) against animals (bird,
cat, deer, dog), where a tint casts its colour over the whole photograph (a photo has no dark background).
Either is split at random per seed into train / val / test (sizes below). A planted cue
(`spuraudit.mitigate.planted`: square, bar, dot pattern, texture patch or background tint; any corner,
size and colour) sits on `strength` of the low digits' training images and 1 − strength of the high
digits'; val and test are group-balanced (the cue on half of each class). Per cell (cue × strength ×
seed): a DigitNet trained with Adam (lr 1e-3, 3 epochs, then its batch-norm statistics re-estimated on the
training images, as a model trained to the end of a schedule has them) is the ERM model; the cue's feature is
labelled spurious
for 'low' as a reviewer would find it (`label_planted_cue`); then every method runs with its defaults
(plus MaskTune's other threshold rules and rounds when asked). Reported per cell: test accuracy, worst
group accuracy, and MaskTune's cue coverage (share of the cue's pixels masked, share of cue-bearing
training images with ≥ 80 % of them masked), from the masks of MaskTune's first round.

A control row runs MaskTune's epoch with one pixel masked per image: the same extra epoch, learning rate and
batch-norm handling without the masks. What MaskTune gains beyond the control is what its masks bought.

A method that refuses ("did not help": a head method whose held-out gap could not be closed without a loss,
MaskTune whose tuned model did worse on val than the ERM model) leaves the user with the ERM model: its cell
reports ERM's figures and says so (`refused`).

    python benchmarks/cue_variants.py                       # the full grid, 3 seeds (hours on a CPU)
    python benchmarks/cue_variants.py --reduced             # 4 cues × 1 strength × 1 seed
    python benchmarks/cue_variants.py --cues square-br-blue tint-green --strengths 0.95 --seeds 0 1
    python benchmarks/cue_variants.py --reduced --json out.json --markdown out.md
    python benchmarks/cue_variants.py --family cifar --strengths 0.95 --seeds 0
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from spuraudit.analysis.cues import coverage_summary, cue_coverage
from spuraudit.mitigate.planted import CueSpec, cue_flags, label_planted_cue, plant, write_cue_project

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DATA = SHARED / "mnist"
CIFAR_DATA = SHARED / "cifar10" / "test"
CIFAR_CLASSES = (("airplane", "automobile", "ship", "truck"), ("bird", "cat", "deer", "dog"))
FAMILY_CLASS_NAMES = {"mnist": ["low digit", "high digit"], "cifar": ["vehicle", "animal"]}
CLASS_NAMES = FAMILY_CLASS_NAMES["mnist"]
SIZES = {"train": 5000, "val": 1000, "test": 2000}
ERM_EPOCHS = 3

CUES = {  # name -> spec: positions, sizes 2-6 px, colours, shapes, a tint and a texture
    "square-tl-red-4": CueSpec("square", 4, (255, 0, 0), "top_left"),
    "square-br-blue-3": CueSpec("square", 3, (0, 90, 255), "bottom_right"),
    "square-tr-green-2": CueSpec("square", 2, (0, 220, 0), "top_right"),
    "square-bl-yellow-6": CueSpec("square", 6, (255, 220, 0), "bottom_left"),
    "bar-br-magenta-3": CueSpec("bar", 3, (255, 0, 255), "bottom_right"),
    "dots-tr-cyan-3": CueSpec("dots", 3, (0, 255, 255), "top_right"),
    "texture-bl-orange-3": CueSpec("texture", 3, (255, 140, 0), "bottom_left"),
    "tint-green": CueSpec("tint", colour=(0, 120, 0), tint=0.25),
}
STRENGTHS = (0.9, 0.95, 0.99, 0.995)
REDUCED = {"cues": ["square-tl-red-4", "square-br-blue-3", "dots-tr-cyan-3", "tint-green"], "strengths": [0.95],
           "seeds": [0]}

METHODS = [  # (key, method, options)
    ("MaskTune (default)", "masktune", {}),
    ("control: MaskTune's epoch, 1 pixel masked", "masktune", {"fraction": 1 / 784}),
    ("head tuning (default)", "head_tuning", {}),
    ("error tuning", "error_tuning", {}),
    ("DFR", "dfr", {}),
]
EXTRA_MASKTUNE = [
    ("MaskTune, every image masked (the paper)", "masktune", {"masked_share": 1.0}),
    ("MaskTune official rule", "masktune", {"rule": "official"}),
    ("MaskTune all-pixels rule", "masktune", {"rule": "all_pixels"}),
    ("MaskTune 2 rounds", "masktune", {"rounds": 2}),
    ("MaskTune 3 rounds", "masktune", {"rounds": 3}),
    ("MaskTune, Adam 1e-3 and the masked epoch's BN statistics", "masktune", {"lr": 1e-3, "batchnorm": "train"}),
    ("MaskTune, black holes (the paper)", "masktune", {"fill": "zero"}),
    ("MaskTune 35 %", "masktune", {"fraction": 0.35}),  # the hottest 35 % instead of 25 %
]


def read_idx(path: Path) -> np.ndarray:
    """A gzipped IDX file as an array: uint8 images [N, 28, 28] or labels [N]."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def read_family(family: str, folder: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """(RGB images uint8 [N, H, W, 3], binary labels [N]) of a family, None when its files are absent."""
    if family == "mnist":
        if not (folder / "t10k-images-idx3-ubyte.gz").is_file():
            return None
        grey = read_idx(folder / "t10k-images-idx3-ubyte.gz")
        digits = read_idx(folder / "t10k-labels-idx1-ubyte.gz").astype(np.int64)
        return np.repeat(grey[..., None], 3, axis=-1), (digits >= 5).astype(np.int64)
    from PIL import Image

    images, labels = [], []
    for label, names in enumerate(CIFAR_CLASSES):
        for name in names:
            files = sorted((folder / name).glob("*.jpg"))
            if not files:
                return None
            for f in files:
                with Image.open(f) as im:
                    images.append(np.asarray(im.convert("RGB")))
                labels.append(label)
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def make_cell(rgb: np.ndarray, labels: np.ndarray, spec: CueSpec, strength: float, seed: int,
              family: str = "mnist"):
    """(images uint8 [n, H, W, 3], labels [n], split [n], cue flags [n], cue pixels [n, H, W]) of one cell."""
    rng = np.random.default_rng(seed)
    n = sum(SIZES.values())
    pick = rng.permutation(len(rgb))[:n]
    labels = labels[pick]
    split = np.concatenate([[name] * size for name, size in SIZES.items()])
    flags = np.zeros(n, dtype=bool)
    for name in SIZES:
        part = split == name
        flags[part] = cue_flags(labels[part], strength if name == "train" else 0.5, rng, favoured=0)
    # A digit's tint colours its dark background; a photograph's, every pixel.
    images, pixels = plant(rgb[pick], spec, flags, **({"dark_below": 256} if family == "cifar" else {}))
    return images, labels, split, flags, pixels


def evaluate(model, x: torch.Tensor, y: np.ndarray, cue: np.ndarray, class_names=CLASS_NAMES) -> dict:
    from spuraudit.training import predict

    correct = predict(model, x) == y
    groups = {f"{class_names[c]} {'with' if q else 'without'} cue": 100 * float(correct[(y == c) & (cue == q)].mean())
              for c in (0, 1) for q in (False, True)}
    worst = min(groups, key=groups.get)
    return {"accuracy": 100 * float(correct.mean()), "worst_group": groups[worst], "worst_group_name": worst}


def masktune_coverage(project, model, flags: np.ndarray, pixels: np.ndarray, split: np.ndarray, options: dict) -> dict:
    """Cue coverage of MaskTune's first-round masks (the ERM model's heatmaps) on cue-bearing training images."""
    from spuraudit.mitigate import get_method
    from spuraudit.mitigate.masktune import masked_examples

    opts = get_method("masktune").resolve_options(options)
    rows = np.flatnonzero((split == "train") & flags)
    shares = []
    for start in range(0, len(rows), 512):
        part = rows[start:start + 512]
        out = masked_examples(project, model, part, opts["rule"], opts["fraction"])
        shares.append(cue_coverage(out["masks"], pixels[part]))
    return coverage_summary(np.concatenate(shares))


def run_cell(rgb, binary, cue_name: str, strength: float, seed: int, methods, log, family: str = "mnist") -> list[dict]:
    from spuraudit.mitigate import MitigationError, get_method

    spec = CUES[cue_name]
    images, labels, split, flags, pixels = make_cell(rgb, binary, spec, strength, seed, family)
    test = split == "test"
    x = torch.from_numpy(images[test]).permute(0, 3, 1, 2).float().div(255)
    y, cue = labels[test], flags[test]
    names = FAMILY_CLASS_NAMES[family]
    base = {"cue": cue_name if family == "mnist" else f"{family}/{cue_name}", "strength": strength, "seed": seed}
    rows = []
    with tempfile.TemporaryDirectory(prefix="cue-variants-") as tmp:
        t0 = time.perf_counter()
        torch.manual_seed(seed)
        project = write_cue_project(tmp, images, labels, split, flags, names, seed=seed, epochs=ERM_EPOCHS,
                                    finish_batchnorm=True)
        label_planted_cue(project, flags, 0)
        erm, _ = project.load_model()
        erm_row = {**base, "method": "ERM", **evaluate(erm, x, y, cue, names), "seconds": time.perf_counter() - t0}
        rows.append(erm_row)
        log(f"{base['cue']} {strength} seed {seed}: ERM {erm_row['accuracy']:.1f} / worst {erm_row['worst_group']:.1f}")
        for label, name, options in methods:
            method = get_method(name)
            t = time.perf_counter()
            row = {**base, "method": label}
            try:
                result = method.run(project, project.model_folder, method.resolve_options({**options, "seed": seed}),
                                    lambda f, m: None)
                row.update(evaluate(result.model, x, y, cue, names), refused="")
                check = result.metrics.get("validation_check")
                if check:  # MaskTune's val check: what it saw and what it asked for
                    row.update(val_worst_before=check["before"]["worst_group"],
                               val_worst_after=check["after"]["worst_group"],
                               val_required_gain=check.get("required_gain", 0.0))
                elif result.metrics.get("start_val_worst_group") is not None:  # head tuning's chosen head
                    row.update(val_worst_before=result.metrics["start_val_worst_group"],
                               val_worst_after=result.metrics["chosen_val_worst_group"],
                               val_required_gain=result.metrics.get("required_val_gain", 0.0))
            except MitigationError as exc:  # "did not help": the user keeps the ERM model
                row.update({k: erm_row[k] for k in ("accuracy", "worst_group", "worst_group_name")},
                           refused=str(exc).split(". ")[0])  # the reason, decimals kept
            if name == "masktune" and not label.startswith("control"):
                row.update(masktune_coverage(project, erm, flags, pixels, split, options))
            row["seconds"] = time.perf_counter() - t
            rows.append(row)
            log(f"  {label}: {row['accuracy']:.1f} / worst {row['worst_group']:.1f}"
                + (f" (refused: {row['refused']})" if row.get("refused") else "")
                + (f", cue covered on {row['cue_images_covered_pct']:.0f} % of images"
                   if "cue_images_covered_pct" in row else "") + f" ({row['seconds']:.0f} s)")
    return rows


def summary(rows: list[dict]) -> tuple[pd.DataFrame, dict]:
    """Per method: means over cells, gain in worst group over ERM in the same cell, cells below ERM; targets."""
    frame = pd.DataFrame(rows)
    erm = frame[frame.method == "ERM"].set_index(["cue", "strength", "seed"])
    out = []
    for method, part in frame.groupby("method", sort=False):
        keyed = part.set_index(["cue", "strength", "seed"])
        gain = keyed["worst_group"] - erm.loc[keyed.index, "worst_group"]
        drop = erm.loc[keyed.index, "accuracy"] - keyed["accuracy"]
        rec = {"method": method, "cells": len(part), "accuracy": part["accuracy"].mean(),
               "worst_group": part["worst_group"].mean(), "worst_gain_vs_erm": gain.mean(),
               "cells_worst_below_erm": int((gain < -1e-9).sum()), "accuracy_drop_vs_erm": drop.mean()}
        if "refused" in part:
            rec["refused_cells"] = int((part["refused"].fillna("") != "").sum())
        if "cue_images_covered_pct" in part:
            rec["cue_pixels_masked_pct"] = part["cue_pixels_masked_pct"].mean()
            rec["cue_images_covered_pct"] = part["cue_images_covered_pct"].mean()
        out.append(rec)
    table = pd.DataFrame(out)
    targets = {}
    for method in ("MaskTune (default)", "head tuning (default)"):
        r = table[table.method == method]
        if len(r):
            r = r.iloc[0]
            targets[method] = {"worst gain ≥ 25": bool(r.worst_gain_vs_erm >= 25),
                               "no cell below ERM": bool(r.cells_worst_below_erm == 0),
                               "accuracy ≤ 3 under ERM": bool(r.accuracy_drop_vs_erm <= 3)}
    r = table[table.method == "MaskTune (default)"]
    if len(r) and "cue_images_covered_pct" in r:
        targets["MaskTune coverage ≥ 80 % of cue pixels on ≥ 90 % of cue images"] = bool(
            r.iloc[0].cue_images_covered_pct >= 90)
    return table, targets


def markdown(rows: list[dict], table: pd.DataFrame, targets: dict) -> str:
    frame = pd.DataFrame(rows)
    lines = ["| cue | strength | seed | method | test acc. | worst group | cue covered (% imgs) | note |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for _, r in frame.iterrows():
        cov = r.get("cue_images_covered_pct")
        cov = f"{cov:.0f}" if isinstance(cov, float) and np.isfinite(cov) else ""
        note = f"refused: {r['refused']}" if isinstance(r.get("refused"), str) and r.get("refused") else ""
        before, after = r.get("val_worst_before"), r.get("val_worst_after")
        if isinstance(before, float) and np.isfinite(before) and not note:
            note = f"val worst group {before:.1f} → {after:.1f} (rise needed {r.get('val_required_gain', 0.0):.1f})"
        lines.append(f"| {r.cue} | {r.strength} | {r.seed} | {r.method} | {r.accuracy:.1f} | {r.worst_group:.1f} "
                     f"({r.worst_group_name}) | {cov} | {note} |")
    lines += ["", "| method | cells | test acc. | worst group | worst-group gain vs ERM | cells below ERM "
                  "| acc. drop vs ERM | refused | cue pixels masked % | cue images covered % |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for _, r in table.iterrows():
        def f(key, fmt="{:.1f}"):
            v = r.get(key)
            return fmt.format(v) if v is not None and not (isinstance(v, float) and not np.isfinite(v)) else ""

        lines.append(f"| {r.method} | {r.cells} | {f('accuracy')} | {f('worst_group')} | {f('worst_gain_vs_erm')} "
                     f"| {r.cells_worst_below_erm} | {f('accuracy_drop_vs_erm')} | {f('refused_cells', '{:.0f}')} "
                     f"| {f('cue_pixels_masked_pct')} | {f('cue_images_covered_pct')} |")
    lines += ["", "Targets: " + "; ".join(f"{k}: {'met' if v else 'NOT met'}" if isinstance(v, bool) else
                                          f"{k}: " + ", ".join(f"{a} {'met' if b else 'NOT met'}" for a, b in v.items())
                                          for k, v in targets.items())]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cues", nargs="+", choices=sorted(CUES), default=None)
    p.add_argument("--strengths", type=float, nargs="+", default=None)
    p.add_argument("--seeds", type=int, nargs="+", default=None)
    p.add_argument("--reduced", action="store_true", help="4 cues × 1 strength × 1 seed")
    p.add_argument("--all-masktune", action="store_true", help="also the other threshold rules, a 35 %% mask, "
                                                                 "rounds and the paper's head / batch-norm handling")
    p.add_argument("--methods", nargs="+", default=None, help="only these method labels (prefix match)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--family", choices=sorted(FAMILY_CLASS_NAMES), default="mnist",
                   help="the images the cues are planted on (default: %(default)s)")
    p.add_argument("--data", type=Path, default=None,
                   help=f"folder of the MNIST IDX files (default: {DATA}) or of CIFAR-10's class folders "
                        f"(default: {CIFAR_DATA})")
    p.add_argument("--json", type=Path)
    p.add_argument("--markdown", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cues = args.cues or (REDUCED["cues"] if args.reduced else list(CUES))
    strengths = args.strengths or (REDUCED["strengths"] if args.reduced else list(STRENGTHS))
    seeds = args.seeds if args.seeds is not None else (REDUCED["seeds"] if args.reduced else [0, 1, 2])
    methods = METHODS + (EXTRA_MASKTUNE if args.all_masktune else [])
    if args.methods:
        methods = [m for m in methods if any(m[0].startswith(prefix) for prefix in args.methods)]
    folder = args.data or (DATA if args.family == "mnist" else CIFAR_DATA)
    data = read_family(args.family, folder)
    if data is None:
        print(f"SKIPPED: the {args.family} files are not in {folder} (the shared data folder is absent).")
        return 0
    rgb, binary = data
    info = {"date": dt.date.today().isoformat(), "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
            "torch": torch.__version__, "command": "python benchmarks/cue_variants.py " + " ".join(argv or sys.argv[1:]),
            "sizes": SIZES, "erm_epochs": ERM_EPOCHS, "family": args.family}
    rows: list[dict] = []
    t0 = time.perf_counter()
    for cue_name in cues:
        for strength in strengths:
            for seed in seeds:
                rows += run_cell(rgb, binary, cue_name, strength, seed, methods, lambda m: print(m, flush=True),
                                 args.family)
                table, targets = summary(rows)
                text = markdown(rows, table, targets)
                if args.markdown:  # rewritten after every cell: a cut-short run keeps what it did
                    args.markdown.write_text(text + "\n")
                if args.json:
                    args.json.write_text(json.dumps({"info": info, "rows": rows, "targets": targets}, indent=1,
                                                    default=float))
    print("\n" + text)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
