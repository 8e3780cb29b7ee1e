"""Many models: several user models of the same classes on one dataset, side by side."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from spuraudit import paths
from spuraudit.jobs.kinds import MODELS_EXTRACT
from spuraudit.multimodel import model_name, model_table, models_report
from spuraudit.project import Project, ProjectError
from spuraudit.ui import cache
from spuraudit.ui import jobs as ui_jobs
from spuraudit.ui.auth import allowed
from spuraudit.ui.nav import page_setup
from spuraudit.ui.state import require_project

page_setup("Many models")
project = require_project()
cache.require_audit(project)  # the reference model's features rank the images

st.title("Many models on one dataset")
st.caption(
    "The project's own model ranks each class's images by spuriosity and fixes its High and Low sets; every "
    "model is scored on those same images. **Effective robustness**: a model on the dashed line y = x does as "
    "well on a class's high-spuriosity images as on its low-spuriosity ones. Per-class gaps that correlate "
    "strongly across models say the bias lives in the data rather than in one model. Accuracies in %."
)

models = model_table(project)
st.dataframe(models, hide_index=True, width="stretch")

# ---- add a model --------------------------------------------------------------------------------
known = {str(p.resolve()) for p in project.model_folders()}
candidates = [str(card.parent) for card in sorted(paths.models_dir().glob("*/model.yaml"))
              if not card.parent.name.startswith(".") and str(card.parent.resolve()) not in known]
with st.expander("Add a model of the same classes", expanded=len(models) < 2):
    st.caption("Models live under the home's `models/` folder (import a checkpoint with `spuraudit models add "
               "--checkpoint FILE --arch NAME`, or create a project from it on **Add data & model**).")
    choice = st.selectbox("Model folder", candidates, index=None, format_func=lambda f: model_name(f),
                          key="models_add_choice", placeholder="choose a model")
    if st.button("Add to the project", disabled=choice is None or not allowed("admin")) and choice:
        try:
            project.add_model(choice)
            st.success(f"added {model_name(choice)}")
            st.rerun()
        except ProjectError as exc:
            st.error(str(exc))

missing = models[~models["extracted"]]
if len(missing):
    st.warning("Features not extracted yet: " + ", ".join(missing["model"]))
    if st.button("Extract them in the background", disabled=not allowed("admin")):
        job = ui_jobs.submit(MODELS_EXTRACT, {"project": str(project.folder), "models": list(missing["folder"])},
                             title=f"extract {len(missing)} model(s) of {project.name}")
        st.session_state["models_jobs"] = [job]
if st.session_state.get("models_jobs"):
    ui_jobs.watch(st.session_state["models_jobs"])

# ---- the report ---------------------------------------------------------------------------------
splits = project.table.splits
split = st.sidebar.selectbox("Split", splits, index=splits.index("test") if "test" in splits else 0, key="models_split")
k = st.sidebar.number_input("Images per end (k)", 2, 1000, int(project.settings.get("gap_k", 100)), step=5,
                            key="models_k", help="High/Low set size per class, clamped to half the class.")
proxy = st.sidebar.checkbox("Rank unlabelled classes by a proxy feature", value=False, key="models_proxy",
                            help="A class without spurious labels is ranked by the one of its top features whose "
                                 "triage gap is largest in size; off: such classes are left out.")


@st.cache_data(max_entries=16, show_spinner="Scoring every model on the same images…")
def _report(folder: str, token: str, split: str, k: int, proxy: bool):
    return models_report(Project.open(folder), split=split, k=k, proxy=proxy)  # small tables only


report = _report(str(project.folder), cache.project_token(project) + cache.labels_token(project), split, int(k),
                 bool(proxy))
if report.missing:
    st.info("Left out until extracted: " + ", ".join(report.missing))
if report.per_class.empty:
    st.info("No class is ranked yet: label spurious features on **Review features**, or tick the proxy ranking.")
    st.stop()
if report.proxy_classes:
    names = [project.table.class_names[c] for c in report.proxy_classes]
    st.caption(f"Ranked by a proxy feature (no labels): {', '.join(names)}.")

st.subheader("Effective robustness")
frame = report.per_class
fig = px.scatter(frame, x="acc_high", y="acc_low", color="model", symbol="model", hover_data=["class", "k", "gap"],
                 labels={"acc_high": "accuracy on high-spuriosity images (%)",
                         "acc_low": "accuracy on low-spuriosity images (%)"})
low = float(min(frame["acc_high"].min(), frame["acc_low"].min())) - 2
fig.add_trace(go.Scatter(x=[low, 101], y=[low, 101], mode="lines", name="y = x",
                         line={"dash": "dash", "color": "grey"}))
fig.update_layout(height=480)
st.plotly_chart(fig, key="models_robustness")

st.subheader("Do the models agree on which classes are biased?")
if len(report.models) < 2:
    st.info("Add a second model to compare gaps.")
else:
    left, right = st.columns(2)
    for column, title, matrix in ((left, "Pearson r", report.pearson), (right, "Spearman ρ", report.spearman)):
        heat = px.imshow(matrix.astype(float), zmin=-1, zmax=1, color_continuous_scale="RdBu", text_auto=".2f",
                         title=f"{title} of per-class gaps")
        column.plotly_chart(heat, key=f"models_{title.split()[0].lower()}")
    st.caption("Over the classes ranked for both models; fewer than three shared classes give no value.")

with st.expander("Per-class numbers"):
    st.dataframe(pd.DataFrame(frame), hide_index=True, width="stretch")
