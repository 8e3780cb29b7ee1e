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
