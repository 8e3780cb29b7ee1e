"""Per top feature of a class, what sets it apart: the group column it tracks and its overlap with the
other top features (formulas in `spuraudit.analysis.distinctness`)."""

from __future__ import annotations

import numpy as np
import streamlit as st

from ..analysis.distinctness import group_separation, top_set_overlap
from ..audit import Audit
from .cache import audit_key


@st.cache_data(show_spinner=False, max_entries=128)
def _traits(_audit: Audit, key: tuple, class_index: int, features: tuple[int, ...], split: str | None,
            m: int) -> dict[int, dict]:
    rows = _audit.class_rows(class_index, split)  # this class's rows only
    if not len(rows) or not features:
        return {}
    acts = _audit.rows_of(rows, np.asarray(features))  # [n, k]
    frame = _audit.table.frame
    out: dict[int, dict] = {}
    overlap = top_set_overlap(acts, m)
    for j, d in enumerate(features):
        groups = []
        for column in _audit.table.group_columns:
            values = frame[column].to_numpy()[rows]
            score, value = group_separation(acts[:, j], values)
            if value is not None:
                groups.append((column, value, score))
        others = [(features[i], float(overlap[j, i])) for i in range(len(features)) if i != j]
        closest = max(others, key=lambda t: t[1]) if others else None
        out[int(d)] = {"groups": sorted(groups, key=lambda g: -g[2]), "closest": closest, "m": min(m, len(rows))}
    return out


def feature_traits(audit: Audit, class_index: int, features: list[int], split: str | None, m: int = 25):
    """{feature: {"groups": [(column, value, separation)], "closest": (feature, overlap share) | None, "m": m}}."""
    return _traits(audit, audit_key(audit), int(class_index), tuple(int(d) for d in features), split, int(m))


def traits_caption(traits: dict | None) -> str:
    """One line for a feature card."""
    if not traits:
        return ""
    parts = []
    for column, value, score in traits["groups"][:2]:
        parts.append(f"fires on `{column}={value}` (AUROC {score:.2f})")
    closest = traits["closest"]
    if closest is not None:
        share = closest[1]
        parts.append(f"shares {share:.0%} of its top {traits['m']} images with feature {closest[0]}"
                     + (" (nearly the same feature)" if share >= 0.8 else " (its own images)" if share <= 0.2 else ""))
    return " · ".join(parts)
