"""CSV manifests: a row per image with a path, a label and optional split, groups and mask."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .. import paths
from .images import check_image
from .table import DatasetError, ImageTable, check_labels_present, drop_duplicate_rows

PATH_COLUMNS = ("path", "filepath", "file", "image", "img_filename", "filename")
LABEL_COLUMNS = ("label", "class", "y", "target")
MASK_COLUMNS = ("mask_path", "mask")
SPLIT_CODES = {"0": "train", "1": "val", "2": "test"}  # Waterbirds / CelebA numeric splits
SPLIT_WORDS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


def _pick(columns, candidates, what: str, csv_path: Path, required: bool = True) -> str | None:
    lower = {c.lower().strip(): c for c in columns}
    for name in candidates:
        if name in lower:
            return lower[name]
    if required:
        raise DatasetError(
            f"{csv_path}: no {what} column. Name one of {list(candidates)} (found {list(columns)})."
        )
    return None


def _allowed_roots(csv_path: Path) -> tuple[list[Path] | None, str]:
    """Where the manifest's rows may point: inside its own upload when it came in one (whatever the server's
    data roots), else inside the server's data roots (None: anywhere, as for a local user)."""
    upload = paths.upload_root(csv_path)
    if upload is not None:
        return [upload], "the uploaded archive it came in"
    roots = paths.data_roots()
    return roots, "the server's data roots"


def _confined(csv_path: Path, line: int, path: Path, allowed: list[Path] | None, where: str) -> Path:
    """The row's file with links resolved, refused when it lies outside `allowed`."""
    resolved = path.resolve()
    if allowed is not None and not any(r == resolved or r in resolved.parents for r in allowed):  # roots resolved
        raise DatasetError(
            f"{csv_path}, line {line}: '{path}' resolves to {resolved}, outside {where} "
            f"({', '.join(str(r) for r in allowed)}). A manifest may only name files inside "
            f"{'its own upload' if 'upload' in where else 'a data root'}; nothing was read."
        )
    return resolved


def read_manifest(
    csv_path: str | Path,
    image_root: str | Path | None = None,
    group_columns: list[str] | None = None,
    class_names: list[str] | None = None,
    verify: bool = True,
) -> ImageTable:
    """Read a CSV manifest; relative paths resolve against `image_root` (default: the CSV's folder).

    Labels may be integers (class indices) or names. Split may be train/val/test or 0/1/2.
    """
    csv_path = Path(csv_path)
    try:
        df = pd.read_csv(csv_path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{csv_path}: not a readable CSV ({exc}).") from None
    except pd.errors.EmptyDataError:
        raise DatasetError(f"{csv_path}: the file is empty.") from None
    if df.empty:
        raise DatasetError(f"{csv_path}: has a header but no rows.")
    root = Path(image_root) if image_root else csv_path.parent
    allowed, where = _allowed_roots(csv_path)
    path_col = _pick(df.columns, PATH_COLUMNS, "image path", csv_path)
    label_col = _pick(df.columns, LABEL_COLUMNS, "label", csv_path)
    mask_col = _pick(df.columns, MASK_COLUMNS, "mask", csv_path, required=False)
    split_col = _pick(df.columns, ("split", "fold", "partition"), "split", csv_path, required=False)
    group_columns = list(group_columns or [])
    missing = [g for g in group_columns if g not in df.columns]
    if missing:
        raise DatasetError(f"{csv_path}: group columns {missing} are not in the file ({list(df.columns)}).")

    raw_labels = df[label_col].str.strip()
    check_labels_present(raw_labels.tolist(), str(csv_path))
    if class_names is None:
        if raw_labels.str.fullmatch(r"-?\d+").all():
            n = int(raw_labels.astype(int).max()) + 1
            class_names = [str(i) for i in range(n)]
        else:
            class_names = sorted(set(raw_labels))
    name_index = {c: i for i, c in enumerate(class_names)}

    rows, lines, skipped = [], [], []
    for i, rec in enumerate(df.to_dict("records")):
        line = i + 2  # header is line 1
        label_text = rec[label_col].strip()
        if label_text in name_index:
            label = name_index[label_text]
        elif label_text.lstrip("-").isdigit() and 0 <= int(label_text) < len(class_names):
            label = int(label_text)
        else:
            raise DatasetError(
                f"{csv_path}, line {line}: label '{label_text}' is not a class index in "
                f"0..{len(class_names) - 1} nor one of the class names {class_names}."
            )
        rel = rec[path_col].strip()
        if not rel:
            raise DatasetError(f"{csv_path}, line {line}: empty image path.")
        path = _confined(csv_path, line, root / rel, allowed, where)
        split = "all"
        if split_col:
            value = rec[split_col].strip().lower()
            split = SPLIT_CODES.get(value) or SPLIT_WORDS.get(value)
            if split is None:
                raise DatasetError(
                    f"{csv_path}, line {line}: split '{rec[split_col]}' is not train/val/test or 0/1/2."
                )
        if not path.is_file():
            skipped.append((str(path), f"listed on line {line} but not found"))
            continue
        if verify and (reason := check_image(path)):
            skipped.append((str(path), reason))
            continue
        row = {"path": str(path), "label": label, "split": split}
        if mask_col and rec[mask_col].strip():
            row["mask_path"] = str(_confined(csv_path, line, root / rec[mask_col].strip(), allowed, where))
        for g in group_columns:
            row[g] = rec[g]
        rows.append(row)
        lines.append(line)
    rows, repeated = drop_duplicate_rows(rows, lines, str(csv_path))
    skipped += repeated
    if not rows:
        raise DatasetError(f"{csv_path}: none of the {len(df)} listed images could be used.")
    frame = pd.DataFrame(rows)
    for g in group_columns:
        # Keep integer-looking attributes as integers so group names read `place=1`, not `place=1.0`.
        if frame[g].str.fullmatch(r"-?\d+").all():
            frame[g] = frame[g].astype(int)
    return ImageTable(
        class_names=list(class_names), frame=frame, group_columns=group_columns, skipped=skipped, source=str(csv_path)
    )


def read_waterbirds(metadata_csv: str | Path, image_root: str | Path | None = None, verify: bool = True) -> ImageTable:
    """Waterbirds' `metadata.csv` (img_filename, y, split 0/1/2, place): groups = (y, place)."""
    return read_manifest(
        metadata_csv,
        image_root=image_root,
        group_columns=["place"],
        class_names=["landbird", "waterbird"],
        verify=verify,
    )
