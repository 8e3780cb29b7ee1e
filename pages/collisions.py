"""Collisions: spurious features of one class that are core for another, the images they pull away,
a review of the flagged images, and core cropping."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from spuraudit.analysis.collisions import DEFAULT_FLAG_CUT
from spuraudit.collisions import (INLINE_CROP_LIMIT, collision_flags, collision_report, core_cropping,
                                  crop_result_path)
from spuraudit.jobs.kinds import COLLISIONS_CROP
from spuraudit.labels.marks import MARK_TEXT, MARKS, MarkStore, marks_path
from spuraudit.ui import cache
from spuraudit.ui import jobs as ui_jobs
from spuraudit.ui.auth import allowed
from spuraudit.ui.nav import page_setup
from spuraudit.ui.reviewer import reviewer_sidebar
from spuraudit.ui.state import load_model, require_project
from spuraudit.ui.widgets import plain, split_picker

page_setup("Collisions")
project = require_project()
audit = cache.require_audit(project)

st.title("Spurious feature collisions")
st.caption("A feature labelled spurious for one class that is a top feature of another pulls the first class's "
           "images towards the second: where that happens the class's gap turns negative. The flagged images "
           "are the high-spuriosity images of those classes in which the other class's core features fire.")
if not audit.spurious:
    st.info("No feature is labelled spurious yet. Label features on the **Features** or **Review** page; "
            "collisions appear here at once.")
    st.stop()

split = split_picker(audit)
top_k = st.sidebar.number_input("Top features per class", 1, 50, 5)
gap_k = int(project.settings.get("gap_k", 100))
cut = st.sidebar.number_input("Flag from strength", 0.0, 5.0, DEFAULT_FLAG_CUT, step=0.1,
                              help="How strongly the colliding class's core features fire on the image, relative "
                                   "to their mean on that class's own images (1 = as strongly).")
names = audit.class_names
report = collision_report(audit, split, top_k=int(top_k), gap_k=gap_k)

# ---- the collisions -------------------------------------------------------------------------------
st.header("Collisions")
table = report.collisions
if table.empty:
    st.info("No labelled spurious feature is among another class's top features.")
else:
    shown = table.assign(feature=table["feature"].map(lambda d: f"#{d}"))[
        ["class", "feature", "other_class", "rank_there", "importance_there", "label_there", "flow_n", "high_n",
         "flow_pct"]].rename(columns={"class": "spurious for", "other_class": "top feature of",
                                      "rank_there": "rank there", "importance_there": "importance there",
                                      "label_there": "label there", "flow_n": "high images predicted there",
                                      "high_n": "high images", "flow_pct": "% pulled"})
    st.dataframe(shown, hide_index=True, use_container_width=True)

flows = report.flows
if not flows.empty:
    ranked = sorted(set(flows["class_index"]))
    targets = sorted(set(flows["predicted_index"]))
    labels = [f"{plain(names[c])} (high spuriosity)" for c in ranked] + [f"predicted {plain(names[c])}" for c in targets]
    fig = go.Figure(go.Sankey(
        node=dict(label=labels, pad=12),
        link=dict(source=[ranked.index(c) for c in flows["class_index"]],
                  target=[len(ranked) + targets.index(c) for c in flows["predicted_index"]],
                  value=list(flows["n"]),
                  color=["rgba(214,39,40,0.45)" if a != b else "rgba(31,119,180,0.35)"
                         for a, b in zip(flows["class_index"], flows["predicted_index"])]),
    ))
    fig.update_layout(height=360, margin=dict(t=30, b=10),
                      title="Where each ranked class's high-spuriosity images are predicted (red: another class)")
    st.plotly_chart(fig, use_container_width=True)

gaps = report.gaps.per_class
st.subheader("Classes with a negative gap")
if not report.negative:
    st.info("No ranked class has a negative gap on this split.")
for c in report.negative:
    row = gaps[gaps["class_index"] == c].iloc[0]
    own = table[(table["class_index"] == c) & table["core_there"]]
    why = ", ".join(f"#{d} is top feature {r} of {plain(o)}" for d, r, o in
                    zip(own["feature"], own["rank_there"], own["other_class"])) or "no collision among top features"
    st.markdown(f"**{plain(names[c])}**: gap {row['gap']:+.1f} points (High {row['acc_high']:.0f} %, Low "
                f"{row['acc_low']:.0f} %). Explained by: {why}.")

# ---- flagged images ---------------------------------------------------------------------------------
st.header("Flagged images: label errors and several objects")
flags = collision_flags(audit, report, split, top_k=int(top_k), cut=float(cut), gap_k=gap_k)
flagged = flags[flags["flagged"]]
store = MarkStore(marks_path(project.folder))
if flagged.empty:
    st.info("Nothing flagged: no negative-gap class, or no image reaches the cut.")
else:
    _, card = load_model(project.model_folder)
    reviewer = reviewer_sidebar(project, project.labels())
    given = store.latest()
    stored = project.table.frame["path"]
    st.caption(f"{len(flagged)} of {len(flags)} high-spuriosity images reach strength {cut:.1f}. Mark each one: "
               "a *label error*, *several objects*, or *fine*. Marks are kept with the project.")
    columns = st.columns(6)
    thumbs = cache.thumbnails(audit, flagged["row"].to_numpy(), card.input_size)
    for n, (row, thumb) in enumerate(zip(flagged.itertuples(), thumbs)):
        key = str(stored.iloc[row.row])
        with columns[n % 6]:
            st.image(thumb, width=96)
            caption = st.empty()  # written after the radio, so a mark stored on this run shows at once
            choice = st.radio("Mark", MARKS, format_func=MARK_TEXT.get, key=f"mark-{row.row}", index=None,
                              label_visibility="collapsed")
            if choice and given.get(key) != choice:
                if not reviewer or not allowed("annotator"):
                    st.warning("Type your name in the sidebar to mark images.")
                else:
                    store.add(key, int(row.class_index), choice, reviewer)
                    given[key] = choice
            marked = f" · marked {MARK_TEXT[given[key]]}" if key in given else ""
            caption.caption(f"{plain(names[row.class_index])} → predicted {plain(row.predicted)}; "
                            f"strength {row.strength:.2f}{marked}")
    st.download_button("Download the marks (CSV)", store.to_csv(), file_name=f"{project.folder.name}-marks.csv",
                       mime="text/csv")

# ---- core cropping ----------------------------------------------------------------------------------
st.header("Core cropping")
st.caption("Each image is cropped to where its class's core features fire (their NAMs as a soft mask; the square "
           "box around it), then classified again.")
to_crop = int(flags["flagged"].sum()) + sum(len(report.gaps.high[c]) for c in report.negative)
result_file = crop_result_path(project, split)
if report.negative and st.button("Crop and classify again", disabled=not allowed("annotator")):
    if to_crop <= INLINE_CROP_LIMIT:
        st.session_state[f"crop-result-{split}"] = core_cropping(audit, flags, report, split, top_k=int(top_k))
    else:  # many images: the model runs in a background job, the table lands in the project's cache
        ui_jobs.submit(COLLISIONS_CROP, {"project": str(project.folder), "split": split, "top_k": int(top_k)},
                       f"Core cropping: {project.folder.name}")
running = [j for j in ui_jobs.active_jobs(COLLISIONS_CROP) if j.params.get("project") == str(project.folder)]
if running:
    ui_jobs.watch([j.id for j in running])
result = st.session_state.get(f"crop-result-{split}")
if result is None and result_file.is_file():
    result = pd.read_csv(result_file)
    st.caption(f"From the last core-cropping job ({result_file.name}).")
if isinstance(result, pd.DataFrame) and not result.empty:
    st.dataframe(result.drop(columns=["class_index"]), hide_index=True, use_container_width=True)
    long = result.melt(id_vars=["class", "images"], value_vars=["acc_before", "acc_after"], var_name="when",
                       value_name="accuracy")
    fig = go.Figure([go.Bar(name=w.replace("acc_", ""), x=[f"{plain(c)}: {i}" for c, i in zip(part["class"], part["images"])],
                            y=part["accuracy"]) for w, part in long.groupby("when", sort=False)])
    fig.update_layout(barmode="group", height=300, yaxis_title="accuracy (%)", margin=dict(t=30, b=10),
                      title="Accuracy before and after core cropping")
    st.plotly_chart(fig, use_container_width=True)
