"""Biased MNIST (the MaskTune protocol, docs/methods.md §7.3) with real digits: ERM against the mitigations.

Data: the 10,000 real MNIST test digits in `<repo>/../shared/data/mnist/` (IDX files), split at random
with the run's seed into 7,000 train / 1,000 val / 2,000 test. Class 0 = digits 0-4, class 1 = 5-9,
grey copied to RGB. A 4×4 pure-red square overwrites the top-left corner of 99 % of the class-0 and
1 % of the class-1 training images, chosen at random with the seed. Validation is group-balanced
(the square on half of each class) so head tuning can stop on a spurious gap. Two test sets are made
from the same 2,000 test digits: 'original' (no squares) and 'biased' (a square on every class-1 image
and on no class-0 image: the cue now points to the wrong class).

Per seed: a DigitNet trained with Adam (lr 1e-3, 4 epochs: the demo's recipe) is the ERM model; the
red-square feature is labelled spurious for class 0 the way a reviewer would find it (among class 0's
top-5 features, the one whose activation best separates square / no square on val); then MaskTune
with each threshold rule, low-spuriosity head tuning, error tuning and DFR run with their defaults,
plus a control: MaskTune's fine-tuning epoch with a single pixel masked per image.

    python benchmarks/biased_mnist.py                 # 3 seeds, the quality table and the throughput ratio
    python benchmarks/biased_mnist.py --seeds 0 --json results.json
    python benchmarks/biased_mnist.py --throughput-only
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
from PIL import Image

from spuraudit.data.demo import CLASS_NAMES, CUE_COLUMN, add_square
from spuraudit.data.table import ImageTable
from spuraudit.modelio import ModelCard, build_audit_model, save_model
from spuraudit.project import Project
from spuraudit.training import predict, train_classifier

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SIZES = (7000, 1000, 2000)  # train, val, test out of the 10,000 digits
TRAIN_CUE = (0.99, 0.01)  # share of class 0 / class 1 training images with the square
ERM_EPOCHS = 4
METHODS = [
    ("masktune", {"rule": "official"}, "MaskTune, official rule"),
    ("masktune", {"rule": "all_pixels"}, "MaskTune, all-pixels rule"),
    ("masktune", {"rule": "top_fraction"}, "MaskTune, top 25 % rule (default)"),
    # Control: the same fine-tuning epoch with one pixel masked per image, to separate what the
    # masks do from what one more epoch of training does.
    ("masktune", {"rule": "top_fraction", "fraction": 0.0013}, "Control: same epoch, 1 pixel masked"),
    ("head_tuning", {}, "Low-spuriosity head tuning"),
    ("error_tuning", {}, "Error tuning"),
    ("dfr", {}, "DFR (group-balanced val)"),
]


# ---- data -----------------------------------------------------------------------------------------

def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzipped) as a NumPy array: uint8 images [N, 28, 28] or labels [N]."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_mnist(root: Path) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(root / "t10k-images-idx3-ubyte.gz")
    digits = read_idx(root / "t10k-labels-idx1-ubyte.gz").astype(np.int64)
    return images, digits


def make_splits(images: np.ndarray, digits: np.ndarray, seed: int) -> dict:
    """Splits and squares per the protocol; every random choice from one seeded generator.

    Returns {'train'|'val'|'test': (grey uint8 [n, 28, 28], labels int [n], square bool [n])}.
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(images))
    a, b, c = SIZES
    parts = {"train": order[:a], "val": order[a:a + b], "test": order[a + b:a + b + c]}
    out = {}
    for split, idx in parts.items():
        labels = (digits[idx] >= 5).astype(np.int64)
        square = np.zeros(len(idx), dtype=bool)
        for cls in (0, 1):
            members = np.flatnonzero(labels == cls)
            rate = TRAIN_CUE[cls] if split == "train" else 0.5
            square[rng.choice(members, size=int(round(rate * len(members))), replace=False)] = True
        out[split] = (images[idx], labels, square)
    return out


def rgb(grey: np.ndarray, square: np.ndarray) -> np.ndarray:
    """Grey [n, 28, 28] -> RGB uint8 [n, 28, 28, 3], the red square where `square` is True."""
    out = np.repeat(grey[..., None], 3, axis=-1)
    out[square] = add_square(out[square])
    return out


def to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255.0)


def write_project(home: Path, splits: dict, seed: int) -> Project:
    """PNG files + table + project (the mitigations read images and features through a project)."""
    folder = home / "data"
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for split, (grey, labels, square) in splits.items():
        for i, img in enumerate(rgb(grey, square)):
            path = folder / f"{split}_{i:05d}.png"
            Image.fromarray(img).save(path, compress_level=1)
            rows.append({"path": str(path), "label": int(labels[i]), "split": split, CUE_COLUMN: int(square[i])})
    table = ImageTable(class_names=list(CLASS_NAMES), frame=pd.DataFrame(rows), group_columns=[CUE_COLUMN],
                       source=f"biased MNIST benchmark, seed {seed}")
    card = ModelCard(name="erm", architecture="spuraudit:digitnet", class_names=list(CLASS_NAMES),
                     input_size=[28, 28], mean=[0.5] * 3, std=[0.5] * 3, source="trained here")
    torch.manual_seed(seed)  # the network's initial weights
    model = build_audit_model(card)
    grey, labels, square = splits["train"]
    train_classifier(model, to_tensor(rgb(grey, square)), torch.as_tensor(labels), epochs=ERM_EPOCHS, seed=seed)
    model_folder = save_model(model, card, home / "models" / "erm")
    project = Project.create("bench", table, model_folder, base=home)
    project.extract(num_workers=0)
    return project


def label_cue(project: Project) -> int:
    """Mark the square detector spurious for class 0, as a reviewer looking at class 0's top-5 would."""
    from spuraudit.analysis import auroc
    from spuraudit.audit import Audit

    audit = Audit(project, project.feature_store(), spurious={})
    val = audit.split_mask("val")
    cue = project.table.frame[CUE_COLUMN].to_numpy().astype(bool)
    top = audit.top_features(0, k=5, split="val")["feature"]
    scores = {int(d): auroc(np.asarray(audit.features[val, d]), cue[val]) for d in top}
    feature = max(scores, key=scores.get)
    project.labels().add_vote(0, feature, "background", annotator="benchmark")
    return feature


# ---- quality --------------------------------------------------------------------------------------

def test_sets(splits: dict) -> dict:
    grey, labels, _ = splits["test"]
    return {
        "original": (to_tensor(rgb(grey, np.zeros(len(grey), bool))), labels),
        "biased": (to_tensor(rgb(grey, labels == 1)), labels),
    }


def accuracy(model, x: torch.Tensor, y: np.ndarray) -> float:
    return 100.0 * float(np.mean(predict(model, x) == y))


def run_seed(images, digits, seed: int, methods, log) -> list[dict]:
    from spuraudit.mitigate import MitigationError, get_method

    splits = make_splits(images, digits, seed)
    tests = test_sets(splits)
    rows = []
    with tempfile.TemporaryDirectory(prefix="biased-mnist-") as tmp:
        t0 = time.perf_counter()
        project = write_project(Path(tmp), splits, seed)
        erm, _ = project.load_model()
        feature = label_cue(project)
        rows.append({"seed": seed, "method": "ERM", **{k: accuracy(erm, *v) for k, v in tests.items()},
                     "seconds": time.perf_counter() - t0})
        log(f"seed {seed}: ERM {rows[-1]['original']:.1f} / {rows[-1]['biased']:.1f} "
            f"(cue feature {feature}, {rows[-1]['seconds']:.0f} s)")
        for name, options, label in methods:
            method = get_method(name)
            t = time.perf_counter()
            try:
                result = method.run(project, project.model_folder,
                                    method.resolve_options({**options, "seed": seed}), lambda f, m: None)
            except MitigationError as exc:  # "did not help": the user keeps the ERM model, whose figures count
                rows.append({**rows[0], "method": label, "refused": 1, "seconds": time.perf_counter() - t})
                log(f"seed {seed}: {label} refused: {str(exc).split('.')[0]}")
                continue
            row = {"seed": seed, "method": label, **{k: accuracy(result.model, *v) for k, v in tests.items()},
                   "refused": 0, "seconds": time.perf_counter() - t}
            if name == "masktune":
                row["masked_pct"] = result.metrics["masked_share"]["mean_masked_pct"]
                row["nothing_masked_pct"] = result.metrics["masked_share"]["nothing_masked_pct"]
            rows.append(row)
            log(f"seed {seed}: {label} {row['original']:.1f} / {row['biased']:.1f} ({row['seconds']:.0f} s)")
    return rows


def summarise(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    order = list(dict.fromkeys(frame["method"]))
    agg = {"original": ["mean", "std"], "biased": ["mean", "std"], "seconds": "mean", "refused": "sum"}
    frame["refused"] = frame.get("refused", 0)
    frame["refused"] = frame["refused"].fillna(0)
    for col in ("masked_pct", "nothing_masked_pct"):
        if col in frame:
            agg[col] = "mean"
    out = frame.groupby("method").agg(agg).loc[order]
    out.columns = ["_".join(c) if c[1] in ("std",) or c[0] in ("original", "biased") else c[0] for c in out.columns]
    return out.reset_index()


def markdown(summary: pd.DataFrame, n_seeds: int) -> str:
    lines = ["| method | original test (%) | biased test (%) | masked pixels (%) | images with nothing masked (%) "
             "| refused (seeds) | s / seed |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for _, r in summary.iterrows():
        def pm(col):
            std = r[f"{col}_std"]
            return f"{r[f'{col}_mean']:.1f} ± {std:.1f}" if n_seeds > 1 else f"{r[f'{col}_mean']:.1f}"

        masked = f"{r['masked_pct']:.1f}" if "masked_pct" in r and np.isfinite(r["masked_pct"]) else ""
        nothing = f"{r['nothing_masked_pct']:.1f}" if "nothing_masked_pct" in r and np.isfinite(
            r["nothing_masked_pct"]) else ""
        lines.append(f"| {r['method']} | {pm('original')} | {pm('biased')} | {masked} | {nothing} "
                     f"| {int(r['refused'])} | {r['seconds']:.0f} |")
    return "\n".join(lines)


# ---- throughput -----------------------------------------------------------------------------------

def throughput(batch: int = 256, batches: int = 8, repeats: int = 3, seed: int = 0) -> dict:
    """Mask generation (batched XGradCAM + threshold + masking) against a bare forward + backward pass
    of the same model over the same batches; ratio = bare time / mask time (≥ 1: masking is cheaper)."""
    from spuraudit.mitigate.masking import HeatmapMaker, mask_batch

    torch.manual_seed(seed)
    card = ModelCard(name="bench", architecture="spuraudit:digitnet", class_names=["a", "b"], input_size=[28, 28],
                     mean=[0.5] * 3, std=[0.5] * 3)
    model = build_audit_model(card).eval()
    data = [torch.rand(batch, 3, 28, 28) for _ in range(batches)]

    def bare():
        for x in data:
            logits = model(x)
            score = logits.gather(1, logits.argmax(1, keepdim=True)).sum()
            model.zero_grad(set_to_none=True)
            score.backward()

    def masking():
        with HeatmapMaker(model) as make:
            for x in data:
                mask_batch(make, x, "official")

    bare(), masking()  # warm-up
    t_bare, t_mask = [], []
    for _ in range(repeats):  # interleaved, so drift on a shared machine hits both alike
        t = time.perf_counter()
        bare()
        t_bare.append(time.perf_counter() - t)
        t = time.perf_counter()
        masking()
        t_mask.append(time.perf_counter() - t)
    n = batch * batches
    return {"images": n, "batch": batch, "bare_forward_backward_img_s": round(n / min(t_bare), 1),
            "mask_generation_img_s": round(n / min(t_mask), 1), "ratio": round(min(t_bare) / min(t_mask), 3)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--json", type=Path, help="also write the raw rows and summary here")
    p.add_argument("--throughput-only", action="store_true")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    info = {"date": dt.date.today().isoformat(), "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
            "torch": torch.__version__,
            "command": "python benchmarks/biased_mnist.py " + " ".join(argv or sys.argv[1:])}
    t0 = time.perf_counter()
    result = {"info": info, "throughput": throughput()}
    print(f"mask generation vs bare forward+backward: {json.dumps(result['throughput'])}", flush=True)
    if not args.throughput_only:
        mnist = DATA / "mnist"
        if not (mnist / "t10k-images-idx3-ubyte.gz").is_file():
            print(f"SKIPPED: the MNIST files are not in {mnist} (the shared data folder is absent).")
            return 0
        images, digits = load_mnist(mnist)
        rows = []
        for seed in args.seeds:
            rows += run_seed(images, digits, seed, METHODS, lambda m: print(m, flush=True))
        summary = summarise(rows)
        table = markdown(summary, len(args.seeds))
        print("\n" + table)
        result.update(rows=rows, summary=summary.to_dict(orient="records"), table=table)
    result["info"]["seconds"] = round(time.perf_counter() - t0, 1)
    print(f"\ntotal {result['info']['seconds']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
