"""The feature store and the audit at ImageNet size, against plain NumPy on the same memory map.

Builds a synthetic project in the project's own format (dataset.csv whose paths need not exist, a
model folder, a float16 store with its statistics, labels.db with spurious votes through LabelStore)
and times, in one run, each question the pages ask, once through `Audit` and once as the shortest
NumPy code that answers it from the same memory-mapped arrays:

    python benchmarks/scale.py --n 100000 --folder /tmp/scale-100k
    python benchmarks/scale.py --n 1281167 --folder /tmp/scale-1m --keep      # 10 GB on disk
    python benchmarks/scale.py --folder /tmp/scale-100k --reuse --pages       # + the two pages (AppTest)
    python benchmarks/scale.py --extraction 200000                            # extraction memory vs N

Memory: VmHWM is the peak resident set; RssAnon is the private memory, i.e. what is resident beyond
pages of the memory-mapped store (those are file-backed and the kernel drops them as needed).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

N_FEATURES, N_CLASSES, N_PAIRS, N_SPURIOUS_CLASSES = 2048, 1000, 630, 357
N_IMAGE_FILES = 64


def memory() -> dict[str, float]:
    """VmHWM, VmRSS, RssAnon, RssFile in MiB, from /proc/self/status."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
            out[key] = int(value.split()[0]) / 1024
    return out


class AnonPeak:
    """Largest RssAnon seen at the sampling points (after each timed call)."""

    def __init__(self):
        self.peak = 0.0

    def sample(self) -> None:
        self.peak = max(self.peak, memory().get("RssAnon", 0.0))


def _timed(fn, repeat: int = 1, peak: AnonPeak | None = None) -> tuple[float, object]:
    best, value = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - t)
        if peak:
            peak.sample()
    return best, value


# ---- building the synthetic project ------------------------------------------------------------
def build(folder: Path, n: int, seed: int = 0, chunk: int = 32768) -> Path:
    """A project folder at `folder` with a complete store; returns the project folder."""
    import pandas as pd
    import torch

    from spuraudit.data.table import ImageTable
    from spuraudit.features import write_store
    from spuraudit.featurestats import build_stats
    from spuraudit.labels import LabelStore, NewVote
    from spuraudit.modelio import ModelCard, build_audit_model, save_model
    from spuraudit.project import Project

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"n{c:08d}" for c in range(N_CLASSES)]
    labels = np.sort(rng.integers(0, N_CLASSES, n))  # ImageNet's csv lists images class by class
    split = np.where(rng.random(n) < 50_000 / 1_331_167, "val", "train")
    # A few real image files, shared by all rows, so the pages can draw thumbnails; the API never opens them.
    from PIL import Image

    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    for j in range(N_IMAGE_FILES):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(images / f"{j}.jpg")
    frame = pd.DataFrame({"path": [str(images / f"{i % N_IMAGE_FILES}.jpg") for i in range(n)],
                          "label": labels, "split": split})
    project_folder = folder / "projects" / "scale"  # folder is the home: the app finds it there
    project_folder.mkdir(parents=True, exist_ok=True)
    ImageTable(class_names=names, frame=frame, source="synthetic").save(project_folder)
    del frame

    model_folder = folder / "model"
    if not (model_folder / "model.yaml").is_file():
        card = ModelCard(name="synthetic-resnet50", architecture="torchvision:resnet50", class_names=names)
        torch.manual_seed(seed)
        save_model(build_audit_model(card), card, model_folder)
    project = Project(folder=project_folder, name="scale", model=str(model_folder))
    project.save()
    project = Project.open(project_folder)
    path = project.feature_store_path()

    weight = rng.normal(scale=0.02, size=(N_CLASSES, N_FEATURES)).astype(np.float32)

    def blocks():
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            feats = rng.standard_exponential((stop - start, N_FEATURES), dtype=np.float32)
            logits = rng.standard_normal((stop - start, N_CLASSES), dtype=np.float32)
            right = rng.random(stop - start) < 0.76  # about ResNet-50's top-1
            logits[np.flatnonzero(right), labels[start:stop][right]] += 10.0
            yield feats, logits

    t = time.perf_counter()
    store = write_store(path, n, weight, np.zeros(N_CLASSES), blocks(), meta={"synthetic": True})
    print(f"store written in {time.perf_counter() - t:.1f} s", flush=True)
    t = time.perf_counter()
    build_stats(store, project.table)
    print(f"statistics pass in {time.perf_counter() - t:.1f} s", flush=True)

    classes = np.sort(rng.choice(N_CLASSES, N_SPURIOUS_CLASSES, replace=False))
    per_class = np.ones(N_SPURIOUS_CLASSES, dtype=int)
    extra = rng.choice(N_SPURIOUS_CLASSES, N_PAIRS - N_SPURIOUS_CLASSES)
    np.add.at(per_class, extra, 1)
    votes = [NewVote(class_index=int(c), feature_index=int(d), answer="background", annotator="bench")
             for c, k in zip(classes, per_class) for d in rng.choice(N_FEATURES, k, replace=False)]
    LabelStore(project.labels_path).add_votes(votes)
    return project_folder


# ---- the plain NumPy baseline --------------------------------------------------------------------
class Baseline:
    """The same questions answered with a few lines of NumPy on the memory-mapped arrays."""

    def __init__(self, store_path: Path, weight: np.ndarray, spurious: dict[int, list[int]]):
        self.features = np.load(store_path / "features.npy", mmap_mode="r")
        self.preds = np.load(store_path / "preds.npy")
        self.labels = np.load(store_path / "stats" / "labels.npy").astype(np.int64)
        self.split_ids = np.load(store_path / "stats" / "split_ids.npy")
        self.train = self.split_ids == 0
        self.weight = weight
        self.spurious = spurious
        self.correct = self.preds == self.labels

    def rows(self, c: int) -> np.ndarray:
        return np.flatnonzero((self.labels == c) & self.train)

    def top_features(self, c: int, k: int = 5, triage_k: int = 25):
        rows = self.rows(c)
        x = np.asarray(self.features[rows], dtype=np.float32)
        ok = self.preds[rows] == c
        imp = x[ok].mean(0, dtype=np.float64) * self.weight[c]
        top = np.argpartition(-imp, k)[:k]
        top = top[np.argsort(-imp[top])]
        order = np.argsort(x[:, top], axis=0, kind="stable")
        corr = self.correct[rows]
        return top, corr[order[-triage_k:]].mean(0) - corr[order[:triage_k]].mean(0)

    def scores(self, c: int):
        rows = self.rows(c)
        x = np.asarray(self.features[rows][:, self.spurious[c]], dtype=np.float64)
        mu, sd = x.mean(0), x.std(0)
        return rows, ((x - mu) / np.where(sd > 0, sd, 1)).mean(1)

    def ranking(self, c: int):
        rows, s = self.scores(c)
        order = np.argsort(s, kind="stable")
        return rows[order], s[order]

    def gaps(self, k: int = 100, n_boot: int = 1000):
        rng = np.random.default_rng(0)
        out = {}
        for c in self.spurious:
            rows, s = self.scores(c)
            kc = min(k, len(rows) // 2)
            if kc == 0:
                continue
            order = np.argsort(s, kind="stable")
            hi, lo = self.correct[rows[order[-kc:]]], self.correct[rows[order[:kc]]]
            boot = (rng.binomial(kc, hi.mean(), n_boot) - rng.binomial(kc, lo.mean(), n_boot)) / kc
            out[c] = (hi.mean() - lo.mean(), np.quantile(boot, [0.025, 0.975]))
        return out


# ---- the run ------------------------------------------------------------------------------------
def measure(project_folder: Path, n_classes_timed: int = 5) -> dict:
    from spuraudit.audit import Audit
    from spuraudit.project import Project

    before = memory()
    peak = AnonPeak()

    def open_audit():
        project = Project.open(project_folder)
        audit = Audit.open(project)
        audit.correct  # labels, predictions and statistics: what every page needs first
        audit.spurious
        return audit

    results: dict = {"memory_before": before}
    results["open"], audit = _timed(open_audit, peak=peak)
    store = audit.store
    results["store_bytes"] = sum(os.path.getsize(store.path / name) for name in ("features.npy", "logits.npy"))
    results["open_numpy"], base = _timed(lambda: Baseline(store.path, store.head_weight, audit.spurious), peak=peak)
    results["table_load"], _ = _timed(lambda: audit.table, peak=peak)  # the CSV, parsed when paths are needed
    classes = sorted(audit.spurious)[:: max(1, len(audit.spurious) // n_classes_timed)][:n_classes_timed]
    top, top_np, rank, rank_np = [], [], [], []
    for c in classes:
        t, table = _timed(lambda: audit.top_features(c, 5, "train"), repeat=2, peak=peak)
        top.append(t)
        t, (ids, _) = _timed(lambda: base.top_features(c), repeat=2, peak=peak)
        top_np.append(t)
        assert set(ids.tolist()) == set(table["feature"].tolist())
        t, (order, _) = _timed(lambda: audit.ranking(c, "train"), repeat=2, peak=peak)
        rank.append(t)
        t, (order_np, _) = _timed(lambda: base.ranking(c), repeat=2, peak=peak)
        rank_np.append(t)
        assert len(order) == len(order_np)
    results.update(top5=float(np.median(top)), top5_numpy=float(np.median(top_np)),
                   ranking=float(np.median(rank)), ranking_numpy=float(np.median(rank_np)))
    # How to read one class's spurious columns from the map: all its rows then the columns, or
    # a (rows x columns) fancy index.
    c = classes[0]
    rows, cols = audit.class_rows(c, "train"), np.asarray(audit.spurious[c])
    results["read_rows_then_cols"], _ = _timed(lambda: np.asarray(store.features[rows][:, cols]), repeat=3)
    results["read_rows_cols_fancy"], _ = _timed(lambda: np.asarray(store.features[rows[:, None], cols]), repeat=3)
    results["gaps"], report = _timed(lambda: audit.gaps("train", k=100, n_boot=1000), peak=peak)
    results["gaps_numpy"], _ = _timed(lambda: base.gaps(), peak=peak)
    results["gap_classes"] = int(len(report.per_class))
    results["memory_after"] = memory()
    results["rss_anon_peak_mib"] = peak.peak
    return results


def pages(project_folder: Path) -> dict:
    """First and cached render of the Features and Rankings pages, under AppTest."""
    from streamlit.testing.v1 import AppTest

    os.environ["SPURAUDIT_HOME"] = str(project_folder.parent.parent)
    app = str(Path(__file__).resolve().parents[1] / "app.py")
    out = {}
    for page in ("pages/features.py", "pages/rankings.py"):
        at = AppTest.from_file(app, default_timeout=600)
        at.query_params["project"] = project_folder.name
        at.run()
        times = []
        for _ in range(2):
            t = time.perf_counter()
            at.switch_page(page)
            at.run()
            times.append(time.perf_counter() - t)
        out[page] = {"first": times[0], "again": times[1],
                     "exceptions": [str(e.value)[:200] for e in at.exception]}
    out["memory"] = memory()
    return out


def extraction_memory(n: int, batch: int = 512, chunk_rows: int = 4096) -> dict:
    """RSS while a chunked extraction writes n rows of 2,048 features and 1,000 logits (tiny model)."""
    import tempfile

    import torch
    from torch import nn

    from spuraudit.features import run_extraction
    from spuraudit.modelio.adapter import AuditModel

    torch.manual_seed(0)
    model = AuditModel(nn.Conv2d(3, N_FEATURES, 1), nn.Linear(N_FEATURES, N_CLASSES), [0.5] * 3, [0.25] * 3).eval()
    marks = {}
    x = torch.rand(batch, 3, 8, 8)

    def batches():
        for start in range(0, n, batch):
            b = min(batch, n - start)
            yield x[:b], torch.arange(start, start + b)

    def progress(fraction, message):
        for mark in (0.1, 0.25, 0.5, 0.75, 1.0):
            if fraction >= mark and mark not in marks:
                marks[mark] = memory()

    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        t = time.perf_counter()
        run_extraction(model, batches(), n, torch.device("cpu"), progress, folder=tmp, chunk_rows=chunk_rows)
        seconds = time.perf_counter() - t
        size = sum(f.stat().st_size for f in Path(tmp).iterdir())
    in_ram_before = n * (N_FEATURES + N_CLASSES) * 4
    return {"n": n, "seconds": seconds, "store_mib": size / 2**20, "old_in_ram_mib": in_ram_before / 2**20,
            "memory_at_fraction": {str(k): v for k, v in marks.items()}}


def _in_child(what: str, project_folder: Path) -> dict:
    import subprocess
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        subprocess.run([sys.executable, __file__, "--child", what, "--folder", str(project_folder.parents[1]),
                        "--out", out.name], check=True)
        return json.loads(Path(out.name).read_text())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--folder", type=Path, default=Path("/tmp/spuraudit-scale"))
    p.add_argument("--reuse", action="store_true", help="use the project already built in --folder")
    p.add_argument("--keep", action="store_true", help="keep the folder (default: delete it at the end)")
    p.add_argument("--pages", action="store_true", help="also time the Features and Rankings pages")
    p.add_argument("--extraction", type=int, default=0, help="only measure extraction memory for this N")
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    p.add_argument("--child", choices=["measure", "pages"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        fn = measure if args.child == "measure" else pages
        args.out.write_text(json.dumps(fn(args.folder / "projects" / "scale"), default=float))
        return 0
    if args.extraction:
        result = {"extraction": extraction_memory(args.extraction)}
    else:
        project_folder = args.folder / "projects" / "scale"
        if not args.reuse:
            if args.folder.exists():
                shutil.rmtree(args.folder)
            t = time.perf_counter()
            build(args.folder, args.n)
            print(f"built in {time.perf_counter() - t:.1f} s", flush=True)
        # Measured in fresh processes, so that building leaves nothing in their memory or caches.
        result = {"n": args.n, "cpus": os.cpu_count(), "measure": _in_child("measure", project_folder)}
        if args.pages:
            result["pages"] = _in_child("pages", project_folder)
        if not args.keep:
            shutil.rmtree(args.folder, ignore_errors=True)
    text = json.dumps(result, indent=1, default=float)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
