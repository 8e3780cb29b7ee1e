"""Point a project at images that moved: `spuraudit relocate --project P --dataset-root NEW`.

Only dataset.json changes (its `root`); dataset.csv, and with it the table's identity and its feature
stores, labels and caches, stay as they are. A project of an earlier version, whose dataset.csv holds
absolute paths, gets `csv_root` (the folder those paths share) beside `root`, so its paths are moved
from one to the other when the table is read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from .table import PATH_COLUMNS, TABLE_CSV, TABLE_META, DatasetError, dataset_root, root_for_meta

SAMPLE_ROWS = 3  # rows whose images must exist under the new root (never a stat per image)


def relocate(project_folder: str | Path, new_root: str | Path) -> dict:
    """Record `new_root` as the project's dataset root; returns {'root', 'old_root', 'checked'}.

    Raises DatasetError, changing nothing, when the folder is missing or the first, middle and last
    images of the table are not found under it.
    """
    folder = Path(project_folder)
    new_root = Path(os.path.abspath(Path(new_root).expanduser()))
    if not new_root.is_dir():
        raise DatasetError(f"{new_root}: no such folder; give the folder that now holds the dataset's images.")
    meta_file = folder / TABLE_META
    meta = json.loads(meta_file.read_text())
    columns = pd.read_csv(folder / TABLE_CSV, nrows=0).columns
    stored = pd.read_csv(folder / TABLE_CSV, usecols=[c for c in PATH_COLUMNS if c in columns], dtype=str)
    paths = stored["path"]
    if paths.empty:
        raise DatasetError(f"{folder / TABLE_CSV}: no images; nothing to relocate.")
    old_root = dataset_root(folder, meta)
    every = pd.concat([stored[c].dropna() for c in stored.columns])
    absolute = every[every.str.startswith("/")]
    updated = dict(meta)
    if len(absolute) and not meta.get("csv_root"):
        # A table of an earlier version: absolute paths. The folder they share (masks included) moved.
        folders = absolute.str.rsplit("/", n=1).str[0].unique()
        updated["csv_root"] = os.path.commonpath(list(folders))
        old_root = old_root or Path(updated["csv_root"])
    updated["root"] = root_for_meta(folder, new_root)

    checked = []
    for row in sorted({0, len(paths) // 2, len(paths) - 1})[:SAMPLE_ROWS]:
        name = paths.iat[row]
        resolved = _resolve(name, new_root, updated.get("csv_root"))
        if not Path(resolved).is_file():
            raise DatasetError(
                f"{folder / TABLE_CSV} row {row + 2}: '{name}' is not at {resolved}; --dataset-root must be "
                "the folder that holds the images as the table names them (nothing was changed)."
            )
        checked.append(resolved)

    tmp = folder / (TABLE_META + ".tmp")
    tmp.write_text(json.dumps(updated, indent=1))
    os.replace(tmp, meta_file)
    return {"root": str(new_root), "old_root": str(old_root) if old_root else None, "checked": checked}


def _resolve(stored: str, root: Path, csv_root: str | None) -> str:
    if not stored.startswith("/"):
        return str(root / stored)
    if csv_root and stored.startswith(csv_root.rstrip("/") + "/"):
        return str(root / stored[len(csv_root.rstrip("/")) + 1:])
    return stored

