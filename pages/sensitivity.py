"""Feature sensitivity: corrupt a feature's region and see what the model loses."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st

from spuraudit.explain.corrupt import CORRUPTIONS
from spuraudit.jobs.kinds import SENSITIVITY_RUN
from spuraudit.multimodel import model_name
from spuraudit.sensitivity import load_report
from spuraudit.ui import cache
from spuraudit.ui import jobs as ui_jobs
from spuraudit.ui.auth import allowed
from spuraudit.ui.nav import page_setup
from spuraudit.ui.state import require_project

page_setup("Feature sensitivity")
project = require_project()
audit = cache.require_audit(project)

st.title("Feature sensitivity")
st.caption(
    "Each corruption acts only inside a feature's soft mask (its neural activation map): **gray** removes colour, "
    "**blur** texture, **rotate** (patches turned by random multiples of 90°) shape, **noise** adds Gaussian noise "
    "(σ = 0.25 by default). Per feature: the accuracy drop (points) on the class's images where it fires most, "
    "and how much of the feature's own activation goes (%). Per class: **core accuracy** (noise on the spurious "
    "features' masks), **spurious accuracy** (noise on the core features' masks) and the relative core "
    "sensitivity, from -1 (relies on the cue) to 1 (relies on the object)."
)

folders = [f for f in project.model_folders() if project.feature_store(f) is not None]
folder = st.sidebar.selectbox("Model", folders, format_func=model_name, key="sens_model")
splits = project.table.splits
split = st.sidebar.selectbox("Split", splits, index=splits.index("test") if "test" in splits else 0, key="sens_split")
model_arg = None if folder == project.model_folder else str(folder)

with st.form("sens_run"):
    c1, c2, c3 = st.columns(3)
    k = c1.number_input("Images per feature", 5, 1000, 50, step=5)
    sigma = c2.number_input("Noise σ", 0.0, 5.0, 0.25, step=0.05)
    max_images = c3.number_input("Images per class (core/spurious)", 10, 5000, 200, step=10)
    run = st.form_submit_button("Measure in the background", type="primary", disabled=not allowed("admin"))
if run:
    job = ui_jobs.submit(SENSITIVITY_RUN, {"project": str(project.folder), "model": model_arg, "split": split,
                                           "k": int(k), "sigma": float(sigma), "max_images": int(max_images)},
                         title=f"sensitivity of {model_name(folder)}")
    st.session_state["sens_jobs"] = [job]
if st.session_state.get("sens_jobs"):
    ui_jobs.watch(st.session_state["sens_jobs"])

report = load_report(project, model_arg, split)
if report is None:
    st.info("No measurement yet for this model and split: start one above (or `spuraudit sensitivity`).")
    st.stop()
st.caption(f"Last run: σ = {report.params.get('sigma')}, {report.params.get('k')} images per feature, "
           f"seed {report.params.get('seed')}.")

features = report.features
if not features.empty:
    st.subheader("Per feature")
    classes = sorted(features["class"].unique(), key=list(audit.class_names).index)
    chosen = st.selectbox("Class", classes, key="sens_class")
    rows = features[features["class"] == chosen]
    metric = st.radio("Measure", ["accuracy drop (points)", "activation drop (%)"], horizontal=True, key="sens_metric")
    prefix = "drop_" if metric.startswith("accuracy") else "act_drop_"
    long = rows.melt(id_vars=["feature", "label"], value_vars=[f"{prefix}{c}" for c in CORRUPTIONS],
                     var_name="corruption", value_name="drop")
    long["corruption"] = long["corruption"].str.replace(prefix, "", regex=False)
    long["feature"] = long["feature"].astype(str) + " · " + long["label"]
    fig = px.bar(long, x="feature", y="drop", color="corruption", barmode="group",
                 labels={"drop": metric, "feature": "feature · label"})
    st.plotly_chart(fig, key="sens_features")
    st.dataframe(rows, hide_index=True, width="stretch")

st.subheader("Core and spurious accuracy")
classes_frame = report.classes
if classes_frame.empty:
    st.info("No class has core or spurious labels yet: label features on **Review features**, then measure again.")
else:
    long = classes_frame.melt(id_vars=["class"], value_vars=["acc_clean", "core_accuracy", "spurious_accuracy"],
                              var_name="accuracy", value_name="points")
    fig = px.bar(long, x="class", y="points", color="accuracy", barmode="group", labels={"points": "accuracy (%)"})
    st.plotly_chart(fig, key="sens_core")
    st.dataframe(pd.DataFrame(classes_frame), hide_index=True, width="stretch")
