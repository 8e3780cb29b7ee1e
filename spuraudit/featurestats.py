"""What every page needs from a feature store, computed once in one streamed pass and kept beside it.

    <store>/stats/stats.json          table identity, splits, shapes
    <store>/stats/labels.npy          int32 [N]  true class per image (no CSV parse to open an audit)
    <store>/stats/split_ids.npy       int8  [N]  index into `splits`
    <store>/stats/class_order.npy     int64 [N]  image indices sorted by (split, class, index)
    <store>/stats/class_offsets.npy   int64 [S, C+1]  segment of each (split, class) in class_order
    <store>/stats/mean_<mode>.npy     float32 [S, C, D]  mean of r over S_c per split, for each image-set mode
    <store>/stats/count_<mode>.npy    int64 [S, C]  |S_c| per split
    <store>/stats/std_labelled.npy    float32 [S, C, D]  population std of r over the images labelled c

Split "all rows" (split None) is the union of the splits, so its means and stds are combined from the
per-split ones on demand (one class row at a time). The pass reads the features in row chunks through
short-lived maps, so its memory does not grow with N.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .analysis.importance import IMAGE_SET_MODES

STATS_DIR = "stats"
STATS_VERSION = 1
_ROW_CHUNK = 16384

Progress = Callable[[float, str], None]


def iter_row_chunks(features: np.ndarray, chunk: int = _ROW_CHUNK):
    """(start, rows float [b, D]) over a feature matrix in row order.

    For a memory-mapped .npy file each chunk gets its own map, dropped after use, so the pages read
    do not stay resident: a pass over a 5 GB store keeps about one chunk in memory.
    """
    n = features.shape[0]
    filename = getattr(features, "filename", None)
    offset = getattr(features, "offset", None)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        if filename is not None and offset is not None and isinstance(features, np.memmap):
            row_bytes = features.shape[1] * features.dtype.itemsize
            part = np.memmap(filename, dtype=features.dtype, mode="r", offset=offset + start * row_bytes,
                             shape=(stop - start, features.shape[1]))
            yield start, np.array(part)
            del part
        else:
            yield start, np.asarray(features[start:stop])


def _segments(owner: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """(row order grouping equal owners, [(owner, start, stop)] in that order); rows with owner -1 dropped."""
    keep = np.flatnonzero(owner >= 0)
    order = keep[np.argsort(owner[keep], kind="stable")]
    sorted_owner = owner[order]
    starts = np.flatnonzero(np.r_[True, sorted_owner[1:] != sorted_owner[:-1]]) if order.size else np.zeros(0, int)
    stops = np.r_[starts[1:], order.size]
    return order, [(int(sorted_owner[a]), int(a), int(b)) for a, b in zip(starts, stops)]


class _Moments:
    """Count, mean and sum of squared deviations per cell, merged chunk by chunk (Chan et al.).

    Each chunk's segment is summed in float32 (`np.add.reduce(..., dtype=np.float32)`, a fast
    contiguous reduction) and merged into float64 running values; deviations are taken from the
    segment's own mean, so the variance does not suffer the cancellation of E[x²] − E[x]².
    """

    def __init__(self, cells: int, d: int):
        self.n = np.zeros(cells, dtype=np.int64)
        self.mean = np.zeros((cells, d))
        self.m2 = np.zeros((cells, d))

    def add(self, cell: int, block: np.ndarray) -> None:
        nb = block.shape[0]
        mean_b = np.add.reduce(block, axis=0, dtype=np.float32) / np.float32(nb)
        dev = block - mean_b
        m2_b = np.add.reduce(dev * dev, axis=0, dtype=np.float32).astype(np.float64)
        mean_b = mean_b.astype(np.float64)
        na = self.n[cell]
        if na == 0:
            self.mean[cell], self.m2[cell] = mean_b, m2_b
        else:
            total = na + nb
            delta = mean_b - self.mean[cell]
            self.mean[cell] += delta * (nb / total)
            self.m2[cell] += m2_b + delta * delta * (na * nb / total)
        self.n[cell] = na + nb


def compute_stats(features: np.ndarray, preds: np.ndarray, labels: np.ndarray, split_names: list[str],
                  split_ids: np.ndarray, num_classes: int, progress: Progress | None = None) -> dict[str, np.ndarray]:
    """The arrays listed in the module docstring, from one pass over `features` [N, D]."""
    n, d = features.shape
    s = len(split_names)
    cells = s * num_classes
    labels = np.asarray(labels, dtype=np.int64)
    preds = np.asarray(preds, dtype=np.int64)
    split_ids = np.asarray(split_ids, dtype=np.int64)
    labelled_owner = split_ids * num_classes + labels
    predicted_owner = split_ids * num_classes + preds
    labelled = _Moments(cells, d)
    sums = {"correct": np.zeros((cells, d)), "predicted": np.zeros((cells, d))}
    for start, rows in iter_row_chunks(features):
        stop = start + len(rows)
        x = rows.astype(np.float32, copy=False)
        right = labels[start:stop] == preds[start:stop]
        order, segments = _segments(labelled_owner[start:stop])
        block, block_right = x[order], right[order]
        for cell, a, b in segments:
            labelled.add(cell, block[a:b])
            sums["correct"][cell] += np.add.reduce(block[a:b][block_right[a:b]], axis=0, dtype=np.float32)
        order, segments = _segments(predicted_owner[start:stop])
        block = x[order]
        for cell, a, b in segments:
            sums["predicted"][cell] += np.add.reduce(block[a:b], axis=0, dtype=np.float32)
        if progress:
            progress(stop / max(n, 1), f"statistics: {stop}/{n} rows")
    counts = {
        "labelled": labelled.n,
        "correct": np.bincount(labelled_owner[labels == preds], minlength=cells).astype(np.int64),
        "predicted": np.bincount(predicted_owner, minlength=cells).astype(np.int64),
    }
    with np.errstate(invalid="ignore", divide="ignore"):
        means = {
            "labelled": np.where(labelled.n[:, None] > 0, labelled.mean, np.nan),  # NaN for an empty S_c
            "correct": sums["correct"] / counts["correct"][:, None],
            "predicted": sums["predicted"] / counts["predicted"][:, None],
        }
        std = np.sqrt(labelled.m2 / labelled.n[:, None])  # population std (ddof 0)
    out: dict[str, np.ndarray] = {}
    for mode in IMAGE_SET_MODES:
        out[f"mean_{mode}"] = means[mode].reshape(s, num_classes, d).astype(np.float32)
        out[f"count_{mode}"] = counts[mode].reshape(s, num_classes)
    out["std_labelled"] = std.reshape(s, num_classes, d).astype(np.float32)
    order = np.lexsort((np.arange(n), labels, split_ids))
    cell_counts = np.bincount(split_ids * num_classes + labels, minlength=s * num_classes).reshape(s, num_classes)
    offsets = np.zeros((s, num_classes + 1), dtype=np.int64)
    flat_ends = np.cumsum(cell_counts.ravel()).reshape(s, num_classes)
    offsets[:, 1:] = flat_ends
    offsets[:, 0] = np.r_[0, flat_ends[:-1, -1]] if s else 0
    out["class_order"] = order.astype(np.int64)
    out["class_offsets"] = offsets
    out["labels"] = labels.astype(np.int32)
    out["split_ids"] = split_ids.astype(np.int8)
    return out


def table_split_ids(table) -> tuple[list[str], np.ndarray]:
    """(split names present, int8 [N] index of each image's split)."""
    names = table.splits
    codes = {name: i for i, name in enumerate(names)}
    ids = table.frame["split"].map(codes).to_numpy(dtype=np.int64)
    return names, ids.astype(np.int8)


def write_stats(store_path: Path, arrays: dict[str, np.ndarray], info: dict) -> Path:
    """Write the stats folder atomically (temp folder + rename); returns its path."""
    final = Path(store_path) / STATS_DIR
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-stats-", dir=store_path))
    try:
        for name, array in arrays.items():
            np.save(tmp / f"{name}.npy", array)
        (tmp / "stats.json").write_text(json.dumps({"version": STATS_VERSION, **info}, indent=1))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def build_stats(store, table, progress: Progress | None = None) -> Path:
    """Compute and save the statistics of `store` for `table` (its labels and splits)."""
    names, split_ids = table_split_ids(table)
    if len(table) != store.features.shape[0]:
        raise ValueError(f"{store.path}: the store has {store.features.shape[0]} rows but the dataset "
                         f"has {len(table)} images; extract the features again.")
    arrays = compute_stats(store.features, np.asarray(store.preds), table.labels, names, split_ids,
                           int(store.head_weight.shape[0]), progress)
    info = {"table": table.content_hash(), "splits": names, "class_names": list(table.class_names),
            "num_images": int(len(table)), "num_classes": int(store.head_weight.shape[0]),
            "num_features": int(store.features.shape[1])}
    return write_stats(store.path, arrays, info)


@dataclass
class StoreStats:
    """The stored statistics, memory-mapped; questions about one class read one class's rows."""

    path: Path
    info: dict
    labels: np.ndarray
    split_ids: np.ndarray
    class_order: np.ndarray
    class_offsets: np.ndarray
    means: dict[str, np.ndarray]
    counts: dict[str, np.ndarray]
    std_labelled: np.ndarray

    @classmethod
    def open(cls, path: str | Path) -> "StoreStats":
        path = Path(path)
        info = json.loads((path / "stats.json").read_text())
        if info.get("version") != STATS_VERSION:
            raise ValueError(f"{path}: statistics of version {info.get('version')}, expected {STATS_VERSION}")

        def load(name: str) -> np.ndarray:
            return np.load(path / f"{name}.npy", mmap_mode="r")

        return cls(
            path=path,
            info=info,
            labels=np.asarray(load("labels"), dtype=np.int64),
            split_ids=load("split_ids"),
            class_order=load("class_order"),
            class_offsets=np.asarray(load("class_offsets")),
            means={mode: load(f"mean_{mode}") for mode in IMAGE_SET_MODES},
            counts={mode: np.asarray(load(f"count_{mode}")) for mode in IMAGE_SET_MODES},
            std_labelled=load("std_labelled"),
        )

    @property
    def splits(self) -> list[str]:
        return list(self.info["splits"])

    def _split_indices(self, split: str | None) -> list[int]:
        if split in (None, "", "any"):
            return list(range(len(self.splits)))
        return [self.splits.index(split)] if split in self.splits else []

    def split_mask(self, split: str | None) -> np.ndarray:
        if split in (None, "", "any"):
            return np.ones(self.split_ids.shape[0], dtype=bool)
        idx = self._split_indices(split)
        return np.asarray(self.split_ids) == idx[0] if idx else np.zeros(self.split_ids.shape[0], dtype=bool)

    def class_rows(self, class_index: int, split: str | None) -> np.ndarray:
        """int64 [n_c] ascending indices of the images labelled `class_index` in `split`."""
        parts = [self.class_order[self.class_offsets[s, class_index]:self.class_offsets[s, class_index + 1]]
                 for s in self._split_indices(split)]
        if not parts:
            return np.zeros(0, dtype=np.int64)
        rows = np.concatenate([np.asarray(p) for p in parts])
        return np.sort(rows) if len(parts) > 1 else rows

    def class_mean(self, class_index: int, split: str | None, mode: str) -> tuple[np.ndarray, int]:
        """(mean of r over S_c in `split` float64 [D] (NaN when empty), |S_c|)."""
        idx = self._split_indices(split)
        counts = self.counts[mode][idx, class_index].astype(np.float64)
        total = counts.sum()
        d = self.means[mode].shape[2]
        if total == 0:
            return np.full(d, np.nan), 0
        means = np.asarray(self.means[mode][idx, class_index], dtype=np.float64)  # [s, D]
        used = counts > 0
        return (counts[used, None] * means[used]).sum(axis=0) / total, int(total)

    def all_means(self, split: str | None, mode: str) -> np.ndarray:
        """float64 [C, D] means of every class (NaN rows for empty S_c)."""
        idx = self._split_indices(split)
        counts = self.counts[mode][idx].astype(np.float64)  # [s, C]
        means = np.nan_to_num(np.asarray(self.means[mode][idx], dtype=np.float64))  # [s, C, D]
        total = counts.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.einsum("sc,scd->cd", counts, means) / total[:, None]

    def class_mean_std(self, class_index: int, split: str | None, feature_ids: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray, int]:
        """(μ [F], σ [F], n) of the given features over the images labelled c in `split` (ddof 0)."""
        idx = self._split_indices(split)
        counts = self.counts["labelled"][idx, class_index].astype(np.float64)
        total = counts.sum()
        if total == 0:
            nan = np.full(len(feature_ids), np.nan)
            return nan, nan.copy(), 0
        used = [s for s, n in zip(idx, counts) if n > 0]
        weights = counts[counts > 0][:, None]
        means = np.stack([np.asarray(self.means["labelled"][s, class_index][feature_ids], dtype=np.float64)
                          for s in used])
        stds = np.stack([np.asarray(self.std_labelled[s, class_index][feature_ids], dtype=np.float64)
                         for s in used])
        mean = (weights * means).sum(axis=0) / total
        if len(used) == 1:
            return mean, stds[0], int(total)
        second = (weights * (stds ** 2 + means ** 2)).sum(axis=0) / total
        return mean, np.sqrt(np.maximum(second - mean ** 2, 0.0)), int(total)


def open_or_build_stats(store, table_id: str, load_table: Callable[[], object], progress: Progress | None = None,
                        log: Callable[[str], None] | None = None) -> StoreStats:
    """The store's statistics for the table whose identity is `table_id`.

    Opening current statistics reads a few small files; only when they are missing (a store made by
    an earlier version) or were made for another table is `load_table()` called and one pass over
    the features made, and the result saved beside the store.
    """
    path = Path(store.path) / STATS_DIR
    if (path / "stats.json").is_file():
        try:
            stats = StoreStats.open(path)
            if stats.info.get("table") == table_id and stats.labels.shape[0] == store.features.shape[0]:
                return stats
        except (ValueError, OSError, KeyError):
            pass
    if log:
        log(f"{store.path.name}: computing the per-class statistics once (one pass over the features)")
    table = load_table()
    try:
        return StoreStats.open(build_stats(store, table, progress))
    except PermissionError:
        # A read-only store: keep the statistics in a private scratch folder for this process.
        scratch = Path(tempfile.mkdtemp(prefix="spuraudit-stats-"))
        view = type("ScratchStore", (), {"path": scratch, "features": store.features, "preds": store.preds,
                                         "head_weight": store.head_weight})()
        return StoreStats.open(build_stats(view, table, progress))
