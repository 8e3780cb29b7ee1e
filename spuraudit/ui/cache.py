"""What the pages keep between reruns and sessions: the opened audit and its per-class answers.

Streamlit reruns a page script from the top on every click. Everything expensive is therefore cached
here, in module-level functions (a cached function defined inside a page script is a new function on
every rerun: its entries pile up and keep whatever they captured alive).

* The opened `Audit` (memory-mapped feature store, predictions) is a resource, shared by every
  session, keyed by the project folder, the model folder and the versions of project.json and
  dataset.csv. It is never handed to a `st.cache_data` function as a hashed argument: those take the
  audit as `_audit` (not hashed) plus small keys that say what the answer depends on.
* Per-class answers (top features, ranking, gaps, summary) are data caches keyed by small values,
  among them a labels token that changes whenever labels.db is written, so a new label shows at once.
"""

from __future__ import annotations

import threading
from pathlib import Path

import streamlit as st

from ..audit import Audit
from ..data.table import TABLE_CSV
from ..project import PROJECT_FILE, Project
from .state import stop_without_features


def _file_stamp(path: Path) -> str:
    try:
        st_ = path.stat()
    except OSError:
        return "-"
    return f"{st_.st_size}:{st_.st_mtime_ns}"


def labels_token(project: Project) -> str:
    """Changes whenever labels.db is written (in WAL mode writes land in the -wal file first)."""
    db = project.labels_path
    return f"{_file_stamp(db)}|{_file_stamp(db.with_name(db.name + '-wal'))}"


def project_token(project: Project) -> str:
    return f"{_file_stamp(project.folder / PROJECT_FILE)}|{_file_stamp(project.folder / TABLE_CSV)}"


@st.cache_resource(show_spinner=False)
def _audits() -> tuple[dict, threading.Lock]:
    """{(project folder, model folder): (project version, Audit)}: one live audit per pair, shared by sessions.

    One entry per pair, replaced when the project changes, so an edited setting never leaves the old
    audit (and its table and memory maps) alive beside the new one.
    """
    return {}, threading.Lock()


def open_audit(project: Project, model_folder: str | Path | None = None) -> Audit | None:
    """The project's audit (opened once per project version and shared by all sessions), or None when
    its features are not extracted yet. Its spurious-feature map is refreshed when the labels change."""
    key = (str(project.folder), str(model_folder or project.model_folder))
    version = project_token(project)
    audits, lock = _audits()
    with lock:
        entry = audits.get(key)
        if entry is None or entry[0] != version:
            audits.pop(key, None)  # drop the old one before opening the new one
            store = project.feature_store(model_folder)
            if store is None:
                return None  # not remembered: looked for again on the next run
            entry = (version, Audit(project, store, spurious={}))
            audits[key] = entry
        audit = entry[1]
    token = labels_token(project)
    if getattr(audit, "_labels_token", None) != token:
        # Swap in a new dict in one assignment: a concurrent reader sees the old map or the new one.
        audit.spurious = project.spurious_features()
        audit._labels_token = token
    return audit


def require_audit(project: Project) -> Audit:
    """The audit, or a notice that extraction has not run (never computes features here)."""
    audit = open_audit(project)
    if audit is None:
        stop_without_features(project)
    return audit


def audit_key(audit: Audit) -> tuple[str, str, str, str]:
    """Small values that identify what an audit answer depends on: project, store, settings, labels."""
    project = audit.project
    labels = getattr(audit, "_labels_token", None) or labels_token(project)  # the one its spurious map was read at
    return (str(project.folder), str(audit.store.meta.get("key", audit.store.path)), project_token(project), labels)


# ---- per-class answers -----------------------------------------------------------------------------
@st.cache_data(show_spinner="Ranking features…", max_entries=256)
def _top_features(_audit: Audit, key: tuple, class_index: int, k: int, split: str | None, mode: str,
                  triage_k: int):
    return _audit.top_features(class_index, k=k, split=split, mode=mode, triage_k=triage_k)


def top_features(audit: Audit, class_index: int, k: int, split: str | None, mode: str, triage_k: int):
    return _top_features(audit, audit_key(audit), int(class_index), int(k), split, mode, int(triage_k))


@st.cache_data(show_spinner="Ranking images…", max_entries=256)
def _ranking(_audit: Audit, key: tuple, class_index: int, split: str | None):
    return _audit.ranking(class_index, split)


def ranking(audit: Audit, class_index: int, split: str | None):
    """(dataset indices of the class, low -> high spuriosity; their scores)."""
    return _ranking(audit, audit_key(audit), int(class_index), split)


@st.cache_data(show_spinner="Measuring the gaps…", max_entries=32)
def _gaps(_audit: Audit, key: tuple, split: str | None, k: int):
    return _audit.gaps(split, k=k)


def gaps(audit: Audit, split: str | None, k: int):
    return _gaps(audit, audit_key(audit), split, int(k))


@st.cache_data(show_spinner=False, max_entries=32)
def _summary(_audit: Audit, key: tuple, split: str | None):
    groups = _audit.group_table(split) if _audit.table.group_columns else None
    return _audit.summary(split), groups


def summary(audit: Audit, split: str | None):
    """(audit.summary(split), audit.group_table(split) or None when the dataset has no groups)."""
    return _summary(audit, audit_key(audit), split)


@st.cache_data(show_spinner="Comparing models…", max_entries=16)
def _compare(_project: Project, key: tuple, folders: tuple[str, ...], split: str, k: int):
    from ..mitigate.compare import compare_models

    return compare_models(_project, list(folders), split=split, k=k, extract_missing=False)


def compare(project: Project, folders: tuple[str, ...], split: str, k: int):
    """compare_models on stores already extracted, cached until project, labels or models change."""
    stamps = tuple(_file_stamp(Path(f) / "model.yaml") for f in folders)
    key = (str(project.folder), project_token(project), labels_token(project), stamps)
    return _compare(project, key, tuple(folders), split, int(k))


# ---- thumbnails ----------------------------------------------------------------------------------
def thumbnails(audit: Audit, indices, input_size, size: int | None = None) -> list[str]:
    """Files of the thumbnails of `indices` (rendered once, then read from the project's cache)."""
    from .. import thumbnails as thumbs

    size = size or thumbs.DEFAULT_SIZE
    return thumbs.thumbnails(audit.project.folder, indices, thumbs.row_path(audit.table), input_size, size)
