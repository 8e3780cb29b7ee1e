"""Features: per class, the neural features the model relies on most, with their evidence."""

from __future__ import annotations

import plotly.express as px
import streamlit as st

from spuraudit.ui import cache
from spuraudit.ui.nav import page_setup
from spuraudit.ui.auth import allowed
from spuraudit.ui.state import annotator_name, require_project, signed_in_name
from spuraudit.ui.evidence_view import attack_row, cam_row, heatmap_controls, heatmap_overlays
from spuraudit.ui.feature_traits import feature_traits, traits_caption
from spuraudit.ui.widgets import (
    cached_pair_evidence,
    class_picker,
    image_row,
    image_set_picker,
    plain,
    split_picker,
)

page_setup("Features")
project = require_project()
audit = cache.require_audit(project)
store = audit.store

st.title("Features the model relies on")
class_index = class_picker(audit)
split = split_picker(audit)
mode = image_set_picker(project)
k = st.sidebar.slider("Top features (k)", 1, 15, int(project.settings.get("top_k", 5)), key="top_k")
n_images = st.sidebar.slider("Images per feature", 4, 16, 8, key="n_images")
heat_alpha, heat_side = heatmap_controls("features_heat")

from spuraudit.explain import CAM_METHODS  # noqa: E402  (after the project checks: imports torch)

cam_method = st.sidebar.selectbox("CAM method", list(CAM_METHODS), key="cam_method")
annotator = st.sidebar.text_input("Your name (for labels)", key="annotator", disabled=signed_in_name() is not None,
                                  value=signed_in_name() or project.settings.get("annotator") or "")

triage_k = int(project.settings.get("triage_k", 25))
# CAMs of small inputs take milliseconds; at 224 px a large model on a CPU needs seconds per image
small_inputs = max(int(v) for v in (store.meta.get("input_size") or [224, 224])) <= 64
top = cache.top_features(audit, class_index, k, split, mode, triage_k)
if top.empty:
    st.warning("No images in S_c for this class and split: try another image set or split.")
    st.stop()

st.markdown(
    f"Class **{plain(audit.class_names[class_index])}**: importance `I[c,d]` = mean of `r_d(x)·W[c,d]` over "
    f"the {mode} images of the {split or 'whole'} split. The triage gap is the class's accuracy on its "
    f"{triage_k} images with the highest activation minus on the {triage_k} with the lowest (fewer when the "
    "class has fewer than twice as many): a large |gap| flags a feature whose presence changes the model's "
    "success."
)
colors = {"spurious": "#d62728", "core": "#2ca02c", "ambiguous": "#ff7f0e", "unlabelled": "#7f7f7f"}
bars = [f"#{d}" for d in top["feature"]]
fig = px.bar(top, x=bars, y="importance", color="label",
             color_discrete_map=colors, hover_data=["triage_gap", "weight"],
             labels={"x": "feature", "importance": "importance I[c, d]"})
# The bars in the cards' order (by rank), whatever the labels: colour groups would otherwise reorder them.
fig.update_layout(height=280, margin=dict(t=10, b=10), xaxis_type="category",
                  xaxis=dict(categoryorder="array", categoryarray=bars))
st.plotly_chart(fig, width="stretch")

traits = feature_traits(audit, class_index, [int(d) for d in top["feature"]], split, triage_k)

LABEL_CHOICES = {"core": "main_object", "spurious (background)": "background",
                 "spurious (separate object)": "separate_object"}

for row in top.itertuples():
    d = int(row.feature)
    with st.container(border=True):
        head, control = st.columns([1, 1])
        head.subheader(f"#{row.rank} · feature {d}")
        head.caption(f"importance {row.importance:.3f} · head weight {row.weight:+.3f} · "
                     f"triage gap {row.triage_gap:+.1f} points · label: **{row.label}**")
        what = traits_caption(traits.get(d))
        if what:
            head.caption(":material/fingerprint: " + what)
        with control:
            choice = st.segmented_control("Label", list(LABEL_CHOICES), key=f"label-{class_index}-{d}",
                                          label_visibility="collapsed")
            if st.button("Save label", key=f"save-{class_index}-{d}", disabled=choice is None or not allowed("annotator")) \
                    and allowed("annotator"):
                name = annotator_name(annotator) or "anonymous"
                project.update_settings(annotator=name)
                project.labels().add_vote(class_index, d, LABEL_CHOICES[choice], annotator=name)
                st.toast(f"Feature {d} of class {class_index} labelled {choice}")
                st.rerun()
        ev = cached_pair_evidence(audit, store.meta["key"], class_index, d, n_images, split, mode)
        acts = [f"r={a:.2f}" for a in ev.top_activation]
        tabs = st.tabs(["Top images", "NAM heatmaps", f"CAM ({cam_method})", "Feature attack", "Lowest"])
        with tabs[0]:
            image_row(ev.images, acts)
        with tabs[1]:
            image_row(heatmap_overlays(ev.images, ev.nam_maps, heat_alpha, heat_side), acts,
                      width=224 if heat_side else 112)
        with tabs[2]:
            if small_inputs or st.toggle("Compute the class activation maps", key=f"cam-{class_index}-{d}",
                                         help="A forward and backward pass per top image; seconds each for "
                                              "large models on a CPU, so asked for rather than run on every visit."):
                cam_row(audit, store.meta["key"], tuple(map(int, ev.top)), class_index, cam_method)
        with tabs[3]:
            if st.toggle("Compute the feature attack", key=f"attack-{class_index}-{d}",
                         help="Gradient ascent on this feature's activation from each top image, 100 steps, "
                              "computed in the background and kept on disk."):
                attack_row(audit, store.meta["key"], class_index, d, n_images, split, mode)
        with tabs[4]:
            image_row(ev.bottom_images, [f"r={a:.2f}" for a in ev.bottom_activation])

st.page_link("pages/rankings.py", label="Next: rank the images by their spurious features", icon=":material/leaderboard:")
