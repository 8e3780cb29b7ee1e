"""Exporting a selection of dataset images: a CSV of their rows, a zip of the files, or an ImageFolder zip.

Every file written into an archive must lie inside the dataset's root (a manifest row pointing at
/etc/passwd is not exported), and every name inside an archive is rebuilt from safe characters, so
an archive never holds an absolute path, a `..`, or two entries with the same name.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_ARCHIVE_FILES = 20_000  # a zip built in memory for a browser download; larger selections go as CSV


class ExportError(ValueError):
    """A selection that cannot be exported as asked; the message says why and what to do."""


def safe_name(text: str, fallback: str = "item") -> str:
    """A file or folder name made only of letters, digits, '.', '_' and '-', never starting with a dot."""
    name = _UNSAFE.sub("_", str(text)).strip("._") or fallback
    return name[:120]


def selection_frame(table, indices, preds: np.ndarray | None = None, scores: dict[int, float] | None = None,
                    tags: dict[str, list[str]] | None = None) -> pd.DataFrame:
    """One row per selected image: index, path, label (name), split, prediction, correct, spuriosity, the
    group columns and tags. Reads only the selected rows of the table."""
    indices = np.asarray(list(indices), dtype=np.int64)
    frame = table.frame
    names = table.class_names
    rows = frame.iloc[indices]
    out = pd.DataFrame({"index": indices, "path": rows["path"].astype(str).to_numpy(),
                        "label": [names[int(c)] for c in rows["label"]], "split": rows["split"].to_numpy()})
    if preds is not None:
        p = np.asarray(preds[indices]) if len(indices) else np.zeros(0, dtype=np.int64)
        out["prediction"] = [names[int(c)] for c in p]
        out["correct"] = p == rows["label"].to_numpy()
    if scores is not None:
        out["spuriosity"] = [scores.get(int(i), float("nan")) for i in indices]
    for column in getattr(table, "group_columns", []):
        out[column] = rows[column].to_numpy()
    if tags is not None:
        out["tags"] = [";".join(tags.get(p, [])) for p in out["path"]]
    return out


def to_csv_bytes(frame: pd.DataFrame) -> bytes:
    # Cells starting with a formula sign would run as formulas in a spreadsheet: prefix them with a quote.
    def guard(value):
        return "'" + value if isinstance(value, str) and value[:1] in ("=", "+", "-", "@") else value

    buffer = io.StringIO()
    frame.map(guard).to_csv(buffer, index=False, quoting=csv.QUOTE_MINIMAL)
    return buffer.getvalue().encode("utf-8")


def _confined(path: str, root: Path | None) -> Path:
    """The file's real path, refused when it lies outside the dataset root or is not a regular file."""
    real = Path(path).resolve()
    if root is not None:
        base = Path(root).resolve()
        if real != base and base not in real.parents:
            raise ExportError(f"{path}: outside the dataset root {base}; it is not exported.")
    if not real.is_file():
        raise ExportError(f"{path}: not a readable file; relocate the dataset (`spuraudit relocate`) and retry.")
    return real


def zip_bytes(frame: pd.DataFrame, root: Path | None, layout: str = "flat") -> bytes:
    """A zip of the selected files. layout "flat": `images/<index>_<name>`; "imagefolder":
    `<split>/<label>/<index>_<name>` (the folders torchvision's ImageFolder reads), plus selection.csv."""
    if layout not in ("flat", "imagefolder"):
        raise ValueError(f"layout must be 'flat' or 'imagefolder', got {layout!r}")
    if len(frame) > MAX_ARCHIVE_FILES:
        raise ExportError(f"{len(frame):,} images are more than {MAX_ARCHIVE_FILES:,} for one download; "
                          "export the CSV of paths instead, or narrow the filter.")
    buffer = io.BytesIO()
    used: set[str] = set()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:  # images are compressed already
        for row in frame.itertuples(index=False):
            source = _confined(row.path, root)
            base = f"{int(row.index)}_{safe_name(source.name, 'image')}"
            if layout == "imagefolder":
                name = f"{safe_name(row.split, 'all')}/{safe_name(row.label, 'class')}/{base}"
            else:
                name = f"images/{base}"
            while name in used:  # the index prefix makes this rare; never overwrite an entry
                name = name + "_"
            used.add(name)
            archive.write(source, arcname=name)
        archive.writestr("selection.csv", to_csv_bytes(frame))
    return buffer.getvalue()
