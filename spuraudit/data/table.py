"""The dataset as one table: a row per image with its label, split, groups and object mask."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..atomic import remembered_beside, write_text_atomic

TABLE_CSV = "dataset.csv"
TABLE_META = "dataset.json"
SPLITS = ("train", "val", "test", "all")


class DatasetError(ValueError):
    """Bad dataset input; the message names the file or row and what to do."""


# Label cells that spreadsheets and pandas write for "no value": never a class name.
MISSING_LABELS = {"", "nan", "na", "n/a", "null", "none", "<na>"}


def _lines(numbers: list[int], limit: int = 10) -> str:
    shown = ", ".join(str(n) for n in numbers[:limit])
    return shown + (f" and {len(numbers) - limit} more" if len(numbers) > limit else "")


def check_labels_present(labels: list[str], source: str) -> None:
    """Refuse empty or NaN-like label cells (they would become classes '' and 'NaN'), naming their lines.

    `labels[i]` is the cell of data row i (line i + 2 of a CSV with a header)."""
    missing = [i + 2 for i, text in enumerate(labels) if str(text).strip().lower() in MISSING_LABELS]
    if missing:
        raise DatasetError(
            f"{source}: line(s) {_lines(missing)} have no label (empty or NaN). Give every row its class, "
            "or remove the rows."
        )


def drop_duplicate_rows(rows: list[dict], lines: list[int], source: str) -> tuple[list[dict], list[tuple[str, str]]]:
    """Rows listing the same image twice: the same label again is dropped (and reported in `skipped`);
    a different label is refused, naming both lines, since either label could be the wrong one."""
    first: dict[str, tuple[int, dict]] = {}
    kept, skipped = [], []
    for row, line in zip(rows, lines):
        seen = first.get(row["path"])
        if seen is None:
            first[row["path"]] = (line, row)
            kept.append(row)
        elif seen[1]["label"] != row["label"] or seen[1]["split"] != row["split"]:
            raise DatasetError(
                f"{source}: lines {seen[0]} and {line} list the same image {row['path']} with different "
                f"labels or splits ({seen[1]['label']}/{seen[1]['split']} vs {row['label']}/{row['split']}). "
                "Keep one row per image."
            )
        else:
            skipped.append((row["path"], f"listed again on line {line} (same as line {seen[0]}); counted once"))
    return kept, skipped


@dataclass
class ImageTable:
    """Images of a dataset.

    `frame` columns: `path` (absolute in memory; relative to `root` in dataset.csv), `label` (int class index), `split` (train/val/test/all),
    optional `mask_path`, and the attribute columns named in `group_columns`.
    `skipped` lists (path, reason) for files that were found but could not be used.
    """

    class_names: list[str]
    frame: pd.DataFrame
    group_columns: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    source: str = ""
    root: Path | None = None  # dataset root the saved paths are relative to (None: absolute paths)

    def __post_init__(self):
        self.frame = self.frame.reset_index(drop=True)

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def labels(self) -> np.ndarray:
        return self.frame["label"].to_numpy(dtype=np.int64)

    @property
    def paths(self) -> list[str]:
        return self.frame["path"].tolist()

    @property
    def splits(self) -> list[str]:
        present = set(self.frame["split"])
        return [s for s in SPLITS if s in present]

    @property
    def has_masks(self) -> bool:
        return "mask_path" in self.frame and self.frame["mask_path"].notna().any()

    def split_mask(self, split: str | None) -> np.ndarray:
        if split in (None, "", "any"):
            return np.ones(len(self), dtype=bool)
        return (self.frame["split"] == split).to_numpy()

    def fit_split(self) -> str | None:
        """The split spuriosity statistics are fitted on: train when there is one."""
        return "train" if "train" in self.splits else None

    def group_ids(self) -> tuple[np.ndarray, list[str]]:
        """Group index per image and group names: (class, attribute values) cells, e.g. `0-4 | cue=1`.

        Vectorised (a factorisation of the columns, then a sort of the few distinct cells): a string join per
        row took seconds on a 1.28 M-row table."""
        cols = ["label"] + list(self.group_columns)
        codes, cells = pd.MultiIndex.from_frame(self.frame[cols].astype(str)).factorize()
        cells = list(cells)

        def natural(cell):
            return [int(p) if p.lstrip("-").isdigit() else p for p in cell]

        order = sorted(range(len(cells)), key=lambda i: natural(cells[i]))
        rank = np.empty(len(cells), dtype=np.int64)
        rank[order] = np.arange(len(cells))
        pretty = []
        for i in order:
            label = self.class_names[int(cells[i][0])]
            attrs = ", ".join(f"{c}={v}" for c, v in zip(self.group_columns, cells[i][1:]))
            pretty.append(f"{label} | {attrs}" if attrs else label)
        return rank[codes], pretty

    def path(self, i: int) -> str:
        """The path of image `i` (one cell; `paths` converts the whole column)."""
        return str(self.frame["path"].iat[int(i)])

    def content_hash(self) -> str:
        """Identity of the table: the hash of its saved dataset.csv, or of its columns when not saved.

        No image file is opened or statted (a stat per image takes minutes at ImageNet size);
        `spuraudit verify` checks the images themselves when asked.
        """
        folder = getattr(self, "_folder", None)
        if folder is not None and (Path(folder) / TABLE_CSV).is_file():
            return table_identity(folder)
        h = hashlib.sha256()
        columns = [c for c in ("path", "label", "split") if c in self.frame]
        h.update(pd.util.hash_pandas_object(self.frame[columns], index=False).to_numpy().tobytes())
        return h.hexdigest()[:16]

    def legacy_content_hash(self) -> str:
        """The identity earlier versions used (paths, labels and every file's size and mtime).

        Only for finding stores made by those versions, once per project; it stats every image.
        """
        h = hashlib.sha256()
        prefix = None if self.root is None else str(self.root).rstrip("/") + "/"
        for path, label in zip(self.frame["path"], self.frame["label"]):
            try:
                st = os.stat(path)
                stamp = f"{st.st_size}:{st.st_mtime_ns}"
            except OSError:
                stamp = "missing"
            if prefix and path.startswith(prefix):  # as stored: a moved or copied project keeps its key
                path = path[len(prefix):]
            h.update(f"{path}\t{label}\t{stamp}\n".encode())
        return h.hexdigest()[:16]

    def save(self, folder: str | Path) -> None:
        """Write dataset.csv and dataset.json; image and mask paths are stored relative to a dataset root.

        The root is `self.root`, or else the folder holding all images (and masks). dataset.json records
        it relative to the project folder when it lies in the same home (they move together), else as
        an absolute path (`spuraudit relocate` points it elsewhere). Paths outside the root stay absolute.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        columns = [c for c in PATH_COLUMNS if c in self.frame]
        root = Path(self.root) if self.root is not None else _common_folder(self.frame, columns)
        frame = self.frame
        if root is not None:
            frame = frame.assign(**{c: _relative_column(frame[c], root) for c in columns})
        write_text_atomic(folder / TABLE_CSV, frame.to_csv(index=False))
        meta = {
            "class_names": self.class_names,
            "group_columns": self.group_columns,
            "skipped": [list(s) for s in self.skipped],
            "source": self.source,
        }
        if root is not None:
            meta["root"] = root_for_meta(folder, root)
        write_text_atomic(folder / TABLE_META, json.dumps(meta, indent=1))

    @classmethod
    def load(cls, folder: str | Path) -> "ImageTable":
        folder = Path(folder)
        meta = json.loads((folder / TABLE_META).read_text())
        frame = pd.read_csv(folder / TABLE_CSV, keep_default_na=True)
        frame["split"] = frame["split"].astype(str)
        root = dataset_root(folder, meta)
        if root is not None:  # tables of earlier versions hold absolute paths and no root
            for c in PATH_COLUMNS:
                if c in frame:
                    frame[c] = _absolute_column(frame[c], root, meta.get("csv_root"))
        table = cls(
            class_names=meta["class_names"],
            frame=frame,
            group_columns=meta.get("group_columns", []),
            skipped=[tuple(s) for s in meta.get("skipped", [])],
            source=meta.get("source", ""),
            root=root,
        )
        table._folder = folder  # its identity is the saved file's (content_hash)
        return table


_IDENTITY_CACHE = ".dataset-hash.json"


def table_identity(folder: str | Path) -> str:
    """sha256 of `folder/dataset.csv`, cached beside it under the file's size and mtime.

    One stat when the cache is current, one read of the file when not; never a stat per image.
    """
    folder = Path(folder)
    csv = folder / TABLE_CSV

    def digest() -> str:
        h = hashlib.sha256()
        with open(csv, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
        return h.hexdigest()[:16]

    return str(remembered_beside(csv, folder / _IDENTITY_CACHE, digest))


# ---- dataset root ---------------------------------------------------------------------------------
PATH_COLUMNS = ("path", "mask_path")


def dataset_root(folder: Path, meta: dict) -> Path | None:
    """The absolute dataset root recorded in dataset.json (relative entries: to the project folder)."""
    root = meta.get("root")
    if not root:
        return None
    root = Path(root)
    return root if root.is_absolute() else Path(os.path.normpath(folder.absolute() / root))


def root_for_meta(folder: Path, root: Path) -> str:
    """`root` as dataset.json stores it: relative to the project folder when both lie in one home."""
    folder, root = Path(os.path.abspath(folder)), Path(os.path.abspath(root))
    home = folder.parent.parent
    if root == home or home in root.parents:
        return os.path.relpath(root, folder)
    return str(root)


def _common_folder(frame: pd.DataFrame, columns: list[str]) -> Path | None:
    values = pd.concat([frame[c].dropna().astype(str) for c in columns]) if columns else pd.Series([], dtype=str)
    values = values[values.str.startswith("/")]
    if values.empty:
        return None
    parents = values.str.rsplit("/", n=1).str[0].unique()  # one entry per folder, not per image
    return Path(os.path.commonpath(list(parents)) or "/")


def _relative_column(column: pd.Series, root: Path) -> pd.Series:
    prefix = str(root).rstrip("/") + "/"
    text = column.astype(object)
    inside = text.notna() & text.astype(str).str.startswith(prefix)
    out = text.copy()
    out[inside] = text[inside].astype(str).str.slice(len(prefix))
    return out


def _absolute_column(column: pd.Series, root: Path, csv_root: str | None) -> pd.Series:
    """Stored paths -> absolute: relative ones joined to `root`; absolute ones under `csv_root` (an
    old table's own folder, recorded by `spuraudit relocate`) moved to `root`; others unchanged."""
    prefix = str(root).rstrip("/") + "/"
    text = column.astype(object)
    present = text.notna()
    strings = text[present].astype(str)
    out = text.copy()
    relative = ~strings.str.startswith("/")
    out[strings.index[relative]] = prefix + strings[relative]
    if csv_root:
        old = str(csv_root).rstrip("/") + "/"
        moved = strings.str.startswith(old)
        out[strings.index[moved]] = prefix + strings[moved].str.slice(len(old))
    return out.astype(column.dtype)  # the dtype read_csv chose, as for tables without a root
