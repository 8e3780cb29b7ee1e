"""Aggregated labels as JSON, for scripts and for sharing an audit's conclusions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..atomic import write_text_atomic
from .store import LabelStore

LABELS_JSON_FORMAT = "spuraudit-labels"
LABELS_JSON_VERSION = 1


def export_labels_json(store: LabelStore) -> dict[str, Any]:
    """Every aggregated label, compactly: {"format", "version", "labels": [{class_index, ...}, ...]}."""
    labels = [
        {
            "class_index": label.class_index,
            "feature_index": label.feature_index,
            "status": label.status,
            "subtype": label.subtype,
            "n_votes": label.n_votes,
            "proposed": label.proposed,
        }
        for label in store.labels().values()
    ]
    return {"format": LABELS_JSON_FORMAT, "version": LABELS_JSON_VERSION, "labels": labels}


def export_spurious_map(store: LabelStore, include_proposed: bool = True) -> dict[str, list[int]]:
    """{"<class index>": [spurious feature indices]}; string keys because JSON object keys are strings."""
    return {str(c): features for c, features in store.spurious_features(include_proposed=include_proposed).items()}


def write_json(obj: Any, path: str | Path) -> Path:
    """Write `obj` as indented JSON, atomically (readers never see a half-written file)."""
    return write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
