"""ImageFolder datasets: `root/<class>/<image>`, optionally under `train/ val/ test/`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import pandas as pd

from .images import check_image, is_image_file
from .table import DatasetError, ImageTable

SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def undecodable_name(path: Path) -> str | None:
    """Why a file name cannot be used, or None. On Linux a name that is not UTF-8 arrives with
    surrogate escapes; it cannot be written to the dataset table or shown, so the file is skipped."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        raw = os.fsencode(path.name)
        return (f"the name {raw!r} is not UTF-8 text; rename it to UTF-8 (e.g. `convmv -f latin1 -t utf8 "
                f"--notest` in its folder) to include it")
    return None


def _hidden(path: Path, top: Path) -> bool:
    """A dotfile, or a file under a dot-folder below `top` (.git, .ipynb_checkpoints, macOS ._ files)."""
    return any(part.startswith(".") for part in path.relative_to(top).parts)


def read_imagefolder(
    root: str | Path,
    class_names: list[str] | None = None,
    verify: bool = True,
    progress: Callable[[float, str], None] | None = None,
) -> ImageTable:
    """Scan an ImageFolder tree. Files that do not decode are skipped and listed, never fatal.

    When `class_names` is given (e.g. from the model), folder names must match it; otherwise the
    sorted folder names are the classes, as in torchvision.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder. Give the folder that holds one sub-folder per class.")
    top = _class_dirs(root)
    split_dirs = [d for d in top if d.name.lower() in SPLIT_NAMES]
    if split_dirs and len(split_dirs) == len(top):
        layout = [(SPLIT_NAMES[d.name.lower()], d) for d in split_dirs]
    else:
        layout = [("all", root)]
    inside = root.resolve()
    found: list[tuple[str, str, str]] = []  # (split, class name, path)
    skipped: list[tuple[str, str]] = []
    for split, folder in layout:
        for cdir in _class_dirs(folder):
            bad_folder = undecodable_name(cdir)
            for f in sorted(cdir.rglob("*")):
                if _hidden(f, cdir):
                    continue
                shown = repr(os.fsencode(f)) if bad_folder or undecodable_name(f) else str(f)
                if f.is_symlink():
                    skipped.append((shown, "symbolic link (not followed)"))
                elif f.is_file():
                    bad_name = bad_folder or undecodable_name(f)
                    resolved = f.resolve()
                    if bad_name:
                        skipped.append((shown, bad_name))
                    elif inside not in resolved.parents:  # reached through a linked folder: not this dataset's
                        skipped.append((shown, f"outside {root} once links are resolved (not followed)"))
                    elif is_image_file(f):
                        found.append((split, cdir.name, str(resolved)))
                    else:
                        skipped.append((shown, "not an image file (by extension)"))
    if not found:
        raise DatasetError(
            f"{root}: found no images. Expected {root}/<class>/<image>.png (or train/ val/ test/ on top)."
        )
    names = sorted({c for _, c, _ in found})
    if class_names is None and len(names) < 2:
        raise DatasetError(
            f"{root}: has one class ({names[0]!r}); a classification dataset needs at least 2 class folders "
            f"with images, e.g. {root}/<class>/<image>.png for each class."
        )
    if class_names is not None:
        unknown = sorted(set(names) - set(class_names))
        if unknown:
            raise DatasetError(
                f"{root}: class folders {unknown} are not among the model's classes {class_names}. "
                "Rename the folders or give the model's class names in the same spelling."
            )
        names = list(class_names)
    index = {c: i for i, c in enumerate(names)}
    rows = []
    for i, (split, cname, path) in enumerate(found):
        if verify:
            reason = check_image(path)
            if reason:
                skipped.append((path, reason))
                continue
        rows.append({"path": path, "label": index[cname], "split": split})
        if progress and i % 200 == 0:
            progress(i / len(found), f"checked {i}/{len(found)} images")
    if not rows:
        raise DatasetError(f"{root}: none of the {len(found)} image files could be decoded.")
    return ImageTable(class_names=names, frame=pd.DataFrame(rows), skipped=skipped, source=str(root))
