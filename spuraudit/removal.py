"""Deleting a project or a model folder, only inside spuraudit's own folders, and never half-way.

The folder is first renamed to a hidden name beside it (one atomic step: from then on no page lists it
and no job finds it), then removed. A crash in between leaves a `.deleting-*` folder that the next
deletion sweeps away, never a half-deleted project that still shows up.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from . import paths


class RemovalError(ValueError):
    """A deletion refused; the message says why."""


def _inside(folder: Path, root: Path) -> Path:
    real, base = Path(folder).resolve(), Path(root).resolve()
    if real.parent != base:
        raise RemovalError(f"{folder}: not a folder directly under {base}; nothing deleted.")
    return real


def _remove(folder: Path) -> None:
    hidden = folder.with_name(f".deleting-{folder.name}-{time.time_ns()}")
    folder.rename(hidden)  # atomic: the name disappears at once
    shutil.rmtree(hidden, ignore_errors=True)
    for leftover in folder.parent.glob(".deleting-*"):  # an earlier deletion cut short
        shutil.rmtree(leftover, ignore_errors=True)


def delete_project(name: str, base: Path | None = None) -> Path:
    """Delete the project folder `name` (its labels, tags, caches and features); returns the folder.
    The models it used stay (other projects may use them)."""
    root = paths.projects_dir(base)
    folder = _inside(root / name, root)
    if not (folder / "project.json").is_file():
        raise RemovalError(f"{folder}: not a spuraudit project (no project.json); nothing deleted.")
    _remove(folder)
    return folder


def _strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def projects_using(model_folder: Path, base: Path | None = None) -> list[str]:
    """Names of the projects whose project.json refers to this model folder (by name or by path)."""
    folder = Path(model_folder).resolve()
    users = []
    root = paths.projects_dir(base)
    for meta in sorted(root.glob("*/project.json")) if root.is_dir() else []:
        try:
            values = _strings(json.loads(meta.read_text()))
        except (OSError, ValueError):
            users.append(meta.parent.name)  # unreadable: assume it may use the model rather than break it
            continue
        if any(v == folder.name or (v.startswith("/") and Path(v).resolve() == folder) for v in values):
            users.append(meta.parent.name)
    return users


def delete_model(name: str, base: Path | None = None) -> Path:
    """Delete the model folder `name` under the models folder, refused while a project uses it."""
    root = paths.models_dir(base)
    folder = _inside(root / name, root)
    if not (folder / "model.yaml").is_file():
        raise RemovalError(f"{folder}: not a spuraudit model (no model.yaml); nothing deleted.")
    users = projects_using(folder, base)
    if users:
        raise RemovalError(f"model '{name}' is used by project{'s' if len(users) > 1 else ''} "
                           f"{', '.join(users)}; delete or switch those first.")
    _remove(folder)
    return folder
