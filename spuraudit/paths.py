"""Where spuraudit keeps things: `$SPURAUDIT_HOME` (default: the current folder).

    <home>/models/<name>/      model folders (weights + model.yaml)
    <home>/projects/<name>/    audit projects (dataset table, feature stores, labels, caches)
    <home>/jobs.db             the background job queue
"""

from __future__ import annotations

import os
import re
from pathlib import Path


def home() -> Path:
    return Path(os.environ.get("SPURAUDIT_HOME") or os.getcwd()).resolve()


def models_dir(base: Path | None = None) -> Path:
    return (base or home()) / "models"


def projects_dir(base: Path | None = None) -> Path:
    return (base or home()) / "projects"


def jobs_db(base: Path | None = None) -> Path:
    return (base or home()) / "jobs.db"


def safe_name(name: str) -> str:
    """A folder name from user text: letters, digits, '-', '_' and '.'; never empty, never '..'."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", name.strip()).strip(".-")
    if not cleaned:
        raise ValueError(f"'{name}' gives an empty name; use letters or digits.")
    return cleaned


# ---- where a shared server may read data from ------------------------------------------------------
# `spuraudit app` sets this (os.pathsep-separated; default the operator's home folder). Unset, as in the
# CLI and in scripts, paths are not confined: a local user can open any file they can read anyway.
DATA_ROOTS_ENV = "SPURAUDIT_DATA_ROOTS"
# The file `extract_zip` leaves at the top of every extracted upload: a manifest below it may only name
# files inside that upload, wherever it was extracted.
UPLOAD_MARKER = ".spuraudit-upload"


class PathNotAllowed(ValueError):
    """A path outside the folders it must stay in; the message names the path and the folders."""


def data_roots() -> list[Path] | None:
    """The folders a shared server may read datasets and checkpoints from, or None when unconfined."""
    value = os.environ.get(DATA_ROOTS_ENV)
    if value is None:
        return None
    return [Path(p).expanduser().resolve() for p in value.split(os.pathsep) if p.strip()]


def is_inside(path: str | Path, root: str | Path) -> bool:
    """Whether `path`, symbolic links resolved, lies in `root` (itself resolved)."""
    resolved, base = Path(path).resolve(), Path(root).resolve()
    return resolved == base or base in resolved.parents


def upload_root(path: str | Path) -> Path | None:
    """The extracted upload holding `path` (the nearest folder above with the upload marker), else None."""
    start = Path(path).resolve()
    for folder in (start, *start.parents):
        if (folder / UPLOAD_MARKER).is_file():
            return folder
    return None


def confine(path: str | Path, roots: list[Path] | None, what: str = "path") -> Path:
    """`path` resolved, when it lies inside one of `roots` (None: no confinement); else PathNotAllowed."""
    resolved = Path(path).expanduser().resolve()
    if roots is None or any(is_inside(resolved, r) for r in roots):
        return resolved
    shown = ", ".join(str(r) for r in roots) or "(none)"
    raise PathNotAllowed(
        f"{what} {path} resolves to {resolved}, outside the data roots this server may read ({shown}). "
        "Move the files under a data root, or ask the operator to add one (spuraudit app --data-root DIR)."
    )
