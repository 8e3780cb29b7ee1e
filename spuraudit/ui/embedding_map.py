"""A per-class map of the images (2-D projection of their stored features), coloured by spuriosity,
correctness or a group column; a lasso or box on it selects those images in the gallery."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import streamlit as st

from ..analysis.projection import pca_2d
from ..audit import Audit
from .cache import audit_key

MAX_POINTS = 5_000  # a random sample of bigger classes: the map is for seeing clusters, not every image


@st.cache_data(show_spinner="Projecting the class's features…", max_entries=32)
def _coordinates(_audit: Audit, key: tuple, class_index: int, split: str | None) -> tuple[np.ndarray, np.ndarray]:
    rows = _audit.class_rows(class_index, split)
    if len(rows) > MAX_POINTS:
        rows = np.sort(np.random.default_rng(class_index).choice(rows, MAX_POINTS, replace=False))
    return rows, pca_2d(_audit.rows_of(rows))  # this class's rows only, never the whole matrix


def embedding_map(audit: Audit, class_index: int, split: str | None, score_of: dict[int, float],
                  prefix: str = "gallery") -> None:
    """The map; lasso/box-selected points join the gallery's selection."""
    from .gallery import _set_many

    rows, xy = _coordinates(audit, audit_key(audit), int(class_index), split)
    if len(rows) < 2:
        st.caption("Too few images in this class for a map.")
        return
    options = ["spuriosity", "correct"] + list(audit.table.group_columns)
    colour = st.radio("Colour by", options, horizontal=True, key=f"{prefix}_map_colour")
    frame = pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1], "index": rows,
                          "prediction": [audit.class_names[int(p)] for p in audit.preds[rows]]})
    if colour == "spuriosity":
        frame["spuriosity"] = [score_of.get(int(i), np.nan) for i in rows]
    elif colour == "correct":
        frame["correct"] = np.where(audit.correct[rows], "correct", "wrong")
    else:
        frame[colour] = audit.table.frame[colour].to_numpy()[rows].astype(str)
    fig = px.scatter(frame, x="x", y="y", color=colour, hover_data=["index", "prediction"],
                     color_continuous_scale="RdBu_r" if colour == "spuriosity" else None,
                     labels={"x": "component 1", "y": "component 2"})
    fig.update_traces(marker=dict(size=6))
    fig.update_layout(height=380, margin=dict(t=10, b=10), dragmode="lasso")
    event = st.plotly_chart(fig, key=f"{prefix}_map_{class_index}", on_select="rerun",
                            selection_mode=("lasso", "box"))
    points = (event or {}).get("selection", {}).get("points", []) if isinstance(event, dict) else \
        getattr(getattr(event, "selection", None), "points", []) or []
    picked = []
    for point in points:
        custom = point.get("customdata") if isinstance(point, dict) else None
        if custom:
            picked.append(int(custom[0]))
        elif colour == "spuriosity" and isinstance(point, dict) and "point_index" in point:
            picked.append(int(rows[int(point["point_index"])]))  # one trace: its points are in `rows` order
    seen = st.session_state.get(f"{prefix}_map_last")
    if picked and picked != seen:  # a new lasso: add its images to the selection once
        st.session_state[f"{prefix}_map_last"] = picked
        _set_many(prefix, picked, True)
        st.toast(f"{len(picked)} images from the map added to the selection")
    st.caption("Principal components of the class's stored features. Draw a lasso or a box to select images.")
