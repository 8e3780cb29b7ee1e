"""Rankings & gaps: each class's images from "cue absent" to "cue everywhere", and what it costs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from spuraudit.analysis import accuracy_along_ranking
from spuraudit.image_tags import TagStore
from spuraudit.ui import cache, gallery, url_state
from spuraudit.ui.embedding_map import embedding_map
from spuraudit.ui.nav import page_setup
from spuraudit.ui.state import load_model, require_project
from spuraudit.ui.widgets import plain, split_picker

page_setup("Rankings & gaps")
project = require_project()
audit = cache.require_audit(project)

st.title("Spuriosity rankings and gaps")
if not audit.spurious:
    st.info("No feature is labelled spurious yet. Label features on the **Features** page; the rankings "
            "and gaps appear here at once.")
    st.page_link("pages/features.py", label="Go to Features", icon=":material/manage_search:")
    st.stop()

split = split_picker(audit)
gap_k = st.sidebar.number_input("Images per end (k)", 5, 1000, int(project.settings.get("gap_k", 100)), step=5,
                                help="High = a class's k most spurious images, Low = its k least; k is clamped "
                                     "to half the class so the two never overlap.")
stats_mode = st.sidebar.radio("Spuriosity statistics", ["train", "per-split"],
                              index=["train", "per-split"].index(project.settings.get("stats", "train")),
                              help="train: mean/std of each feature fitted once on the training split (better); "
                                   "per-split: refitted on the split shown (as the original code did).")
if stats_mode != project.settings.get("stats") or gap_k != project.settings.get("gap_k"):
    project.update_settings(stats=stats_mode, gap_k=int(gap_k))

names = audit.class_names
st.caption("Spurious features: " + "; ".join(f"{plain(names[c])}: {', '.join(f'#{d}' for d in ds)}"
                                             for c, ds in sorted(audit.spurious.items())))

report = cache.gaps(audit, split, int(gap_k))
per_class = report.per_class
c1, c2, c3 = st.columns(3)
c1.metric("Pooled spurious gap", f"{report.pooled_gap:+.1f} pts",
          help=f"95 % bootstrap CI {report.pooled_ci[0]:+.1f} .. {report.pooled_ci[1]:+.1f}")
c1.caption(f"95 % CI {report.pooled_ci[0]:+.1f} .. {report.pooled_ci[1]:+.1f}")
c2.metric("Macro average gap", f"{report.macro_gap:+.1f} pts")
c3.metric("Ranked classes", len(per_class))

fig = go.Figure(go.Bar(
    x=per_class["class"], y=per_class["gap"],
    error_y=dict(type="data", symmetric=False, array=per_class["ci_high"] - per_class["gap"],
                 arrayminus=per_class["gap"] - per_class["ci_low"]),
    marker_color=np.where(per_class["gap"] >= 0, "#1f77b4", "#d62728"),
    hovertemplate="%{x}<br>gap %{y:+.1f} pts<extra></extra>",
))
fig.update_layout(height=300, margin=dict(t=30, b=10), yaxis_title="accuracy High − Low (points)",
                  title="Per-class spurious gap with 95 % bootstrap CI")
st.plotly_chart(fig, width="stretch")
st.caption("Positive: the model does better when the cue is there (a clarifying cue). Negative: the cue "
           "confuses it (often a feature that is core for another class).")
st.dataframe(per_class.drop(columns=["class_index"]), hide_index=True,
             column_config={c: st.column_config.NumberColumn(format="%.1f")
                            for c in ["acc_high", "acc_low", "gap", "ci_low", "ci_high"]})

st.header("Gallery")
ranked = [int(c) for c in per_class["class_index"]]
url_state.seed("gallery_class", "class", int, ranked)
class_index = st.selectbox("Class", ranked, format_func=lambda c: f"{c}: {names[c]}", key="gallery_class")
url_state.keep("class", class_index, ranked[0] if ranked else None)
order, scores = cache.ranking(audit, class_index, split)
correct = audit.correct[order]
score_of = {int(i): float(s) for i, s in zip(order, scores)}

# Accuracy along the ranking: where does the model start to fail?
_, _, accuracy = accuracy_along_ranking(correct)
bins = len(accuracy)
curve = pd.DataFrame({"position": [f"{int(100 * b / bins)}-{int(100 * (b + 1) / bins)} %" for b in range(bins)],
                      "correct": accuracy})
fig2 = px.line(curve, x="position", y="correct", markers=True, range_y=[0, 105],
               labels={"correct": "accuracy (%)", "position": "spuriosity percentile (low → high)"})
fig2.update_layout(height=260, margin=dict(t=10, b=10))
st.plotly_chart(fig2, width="stretch")

_, card = load_model(project.model_folder)
tags = TagStore(project.folder)
with st.expander("Map of the class's images (select with a lasso)"):
    embedding_map(audit, class_index, split, score_of)
rows = gallery.filters(audit, order, scores, tags)
gallery.grid(audit, rows, card.input_size)
gallery.actions(audit, rows, tags, score_of, names[class_index])
gallery.inspector_if_asked(audit, score_of, tags)
st.caption("The address of this page keeps the class, page and filters: copy it to share or bookmark this view.")
