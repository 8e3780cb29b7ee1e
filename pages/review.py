"""Review features: label (class, feature) pairs core or spurious, one at a time, and check the machines.

Modelled on Salient ImageNet's annotation task: the feature's top images with their NAMs and
feature attacks, the class with a few of its images, and three answers (main object = core;
separate object or background = spurious) with a 1-5 confidence and a reason. Every answer is a
vote with the annotator's name and a timestamp; machines' proposals are votes too, and any
person's vote overrides them.
"""

from __future__ import annotations

import io
import json

import numpy as np
import streamlit as st

from spuraudit.audit import Audit
from spuraudit.autolabel import MACHINE_PREFIX, AutoLabelError, ensure_job_kinds, last_run_key, make_labeler
from spuraudit.autolabel.review_queue import (
    ANSWER_LABELS,
    FILTERS,
    clip_evidence_table,
    filter_queue,
    history_table,
    override_answer,
    progress_counts,
    queue_pairs,
    review_table,
    segmentation_evidence_table,
)
from spuraudit.data.images import load_rgb
from spuraudit.explain import upscale_for_display
from spuraudit.labels import (
    SalientCSVError,
    export_labels_json,
    export_salient_csv,
    export_spurious_map,
    import_salient_csv,
)
from spuraudit.ui.nav import page_setup
from spuraudit.ui.state import require_features, require_project
from spuraudit.ui.widgets import (cached_attack, cached_pair_evidence, image_row, image_set_picker, plain,
                                  split_picker)

EVIDENCE_PX = 84  # top images, NAMs and attacks: the default 8 per row fit the evidence column on one line

page_setup("Review features")
project = require_project()
feature_store = require_features(project)
audit = Audit(project, feature_store)
labels = project.labels()
store_key = feature_store.meta["key"]

st.title("Review features")

# ---- who is reviewing: asked once, kept in the session, the URL and the label store -------------
# The URL (?annotator=) belongs to one browser, so on a team each reviewer's reload keeps their own
# name; the label store only remembers the last name used on the project, for a visit without one.
# "review_name" is a plain session key: it outlives the widget's own state when the reviewer visits
# another page and comes back (the address then no longer carries the name).
if "reviewer" not in st.session_state:
    known = st.session_state.get("review_name") or (st.query_params.get("annotator") or "").strip()
    remembered = labels.get_setting("annotator") or project.settings.get("annotator") or ""
    st.session_state["reviewer"] = known or remembered
    st.session_state["review_name_guessed"] = bool(remembered) and not known


def _name_typed() -> None:
    st.session_state["review_name_guessed"] = False


st.sidebar.text_input("Your name", key="reviewer", on_change=_name_typed,
                      help="Every vote carries it. Kept in this page's address (bookmark it) and for the next visit.")
reviewer = st.session_state.get("reviewer", "").strip()
if reviewer.startswith(MACHINE_PREFIX):
    st.sidebar.error(f"Names starting with '{MACHINE_PREFIX}' belong to the auto-labelers; choose another.")
    reviewer = ""
st.session_state["review_name"] = reviewer
if reviewer:
    if st.session_state.get("review_name_guessed"):
        st.sidebar.caption(f"The last name used on this project. Not **{reviewer}**? Type yours before voting.")
    if st.query_params.get("annotator") != reviewer:
        st.query_params["annotator"] = reviewer
    if labels.get_setting("annotator") != reviewer:
        labels.set_setting("annotator", reviewer)  # a visit without a name in its address starts with this one

# ---- which pairs -------------------------------------------------------------------------------
split = split_picker(audit, key="review_split")
mode = image_set_picker(project, key="review_image_set")
top_k = st.sidebar.slider("Top features per class", 1, 15, int(project.settings.get("top_k", 5)), key="review_top_k")
n_images = st.sidebar.slider("Images per feature", 4, 16, 8, key="review_n_images")
how = st.sidebar.radio("Show", list(FILTERS), key="review_filter", format_func=lambda f: f"{f}: {FILTERS[f]}")
classes = st.sidebar.multiselect("Classes", list(range(len(audit.class_names))), key="review_classes",
                                 format_func=lambda c: f"{c}: {audit.class_names[c]}",
                                 help="Leave empty for every class.")
input_size = feature_store.meta.get("input_size") or [224, 224]
small_inputs = max(int(v) for v in input_size) <= 64  # attacks take a second there, minutes at 224 px on a CPU
st.session_state.setdefault("review_attacks", small_inputs)
show_attacks = st.sidebar.toggle("Feature attacks", key="review_attacks",
                                 help="Gradient ascent on the feature from each top image (100 steps; cached on "
                                      "disk). Slow for large models on a CPU.")

all_votes = labels.votes()
pairs = queue_pairs(audit, top_k, split, mode, voted=[v.pair for v in all_votes])
table = review_table(pairs, all_votes, reviewer)
shown = filter_queue(table, how, classes or None)
counts = progress_counts(filter_queue(table, "all", classes or None))

flash = st.session_state.pop("review_flash", None)
if flash:
    st.toast(flash)

c1, c2, c3, c4 = st.columns(4)
c1.metric("Reviewed (any person)", f"{counts['reviewed']} of {counts['total']}")
c2.metric("Reviewed by you", f"{counts['mine']} of {counts['total']}")
c3.metric("Machine proposals to confirm", counts["to_confirm"])
c4.metric("Showing", f"{len(shown)} pairs")
st.progress(counts["reviewed"] / counts["total"] if counts["total"] else 0.0)


@st.cache_data(show_spinner=False, max_entries=256)
def _thumbnails(folder: str, indices: tuple[int, ...]) -> list[np.ndarray]:
    """Display copies of dataset images (folder keys the cache per project)."""
    return [upscale_for_display(np.asarray(load_rgb(audit.table.paths[i])), 96) for i in indices]


def _class_examples(folder: str, class_index: int, split_name: str | None, n: int = 6) -> list[np.ndarray]:
    """A few images of the class (a fixed random draw per class), to remind the reviewer what it is."""
    sel = np.flatnonzero(audit.table.split_mask(split_name) & (audit.labels == class_index))
    pick = np.random.default_rng(class_index).choice(sel, size=min(n, len(sel)), replace=False)
    return _thumbnails(folder, tuple(int(i) for i in sorted(pick)))


# ---- actions (callbacks run before the next script run, so widgets can be reset there) ---------
def _go_to(pair) -> None:
    st.session_state["review_pair"] = None if pair is None else (int(pair[0]), int(pair[1]))


def _vote(class_index: int, feature: int, answer: str, next_pair, reason_prefix: str = "") -> None:
    name = st.session_state.get("reviewer", "").strip()
    if not name or name.startswith(MACHINE_PREFIX):
        st.session_state["review_flash"] = "Type your name in the sidebar first."
        return
    reason = st.session_state.get("review_reason", "").strip()
    reason = f"{reason_prefix} {reason}".strip() if reason_prefix else reason
    confidence = st.session_state.get("review_confidence")
    labels.add_vote(class_index, feature, answer, annotator=name, confidence=confidence, reason=reason)
    labels.set_setting("annotator", name)
    st.session_state["review_reason"] = ""
    st.session_state["review_confidence"] = None
    st.session_state["review_last_voted"] = (class_index, feature)
    st.session_state["review_flash"] = f"Class {class_index}, feature {feature}: {ANSWER_LABELS[answer]}"
    _go_to(next_pair)


def _undo() -> None:
    name = st.session_state.get("reviewer", "").strip()
    vote = labels.undo_last(name) if name and not name.startswith(MACHINE_PREFIX) else None
    if vote is None:
        st.session_state["review_flash"] = "You have no vote to retract."
        return
    st.session_state["review_flash"] = (f"Retracted your vote '{vote.answer}' on class {vote.class_index}, "
                                        f"feature {vote.feature_index}")
    _go_to(vote.pair)


# ---- the current pair --------------------------------------------------------------------------
order = list(zip(shown["class_index"].astype(int), shown["feature_index"].astype(int)))
current = st.session_state.get("review_pair")
if current is not None:
    current = (int(current[0]), int(current[1]))
if current not in order:
    current = order[0] if order else None
    st.session_state["review_pair"] = current

if current is None:
    st.success("Nothing to review under this filter. Choose another filter or class, or run an auto-labeler below.")
else:
    position = order.index(current)
    prev_pair = order[position - 1] if position > 0 else None
    next_pair = order[position + 1] if position + 1 < len(order) else (order[0] if len(order) > 1 else current)
    row = shown.iloc[position]
    c, d = current
    class_name = audit.class_names[c]

    with st.container(horizontal=True, vertical_alignment="center"):  # buttons as wide as their labels
        st.button("Previous", key="review_prev", icon=":material/arrow_back:", on_click=_go_to, args=(prev_pair,),
                  disabled=prev_pair is None, shortcut="P")
        st.button("Next", key="review_next", icon=":material/arrow_forward:", on_click=_go_to, args=(next_pair,),
                  shortcut="N")
        st.button("Undo last vote", key="review_undo", icon=":material/undo:", on_click=_undo, shortcut="U",
                  disabled=not reviewer)
        st.caption(f"Pair {position + 1} of {len(order)} shown. Keys: **M** main object, **S** separate object, "
                   "**B** background, **N** next, **P** previous, **U** undo.")

    rank = "" if row["rank"] is None or (isinstance(row["rank"], float) and np.isnan(row["rank"])) \
        else f" · rank {int(row['rank'])} in its class"
    st.subheader(f"Class {c}: {plain(class_name)} · feature {d}{rank}")
    status = row["status"] + (f" ({row['subtype']})" if row["subtype"] else "")
    st.caption(f"Current label: **{status}**" + (" (machine proposal, not confirmed)" if row["proposed"] else "")
               + (f" · your vote: **{ANSWER_LABELS[row['mine']]}**" if row["mine"] else "")
               + (" · annotators disagree" if row["disagreement"] else ""))

    evidence_col, class_col = st.columns([4, 1])
    with evidence_col:
        ev = cached_pair_evidence(audit, store_key, c, d, n_images, split, mode)
        acts = [f"r={a:.2f}" for a in ev.top_activation]
        st.markdown("**Top images** (highest activation of the feature among the class's images)")
        image_row(ev.images, acts, width=EVIDENCE_PX)
        st.markdown("**NAM heatmaps** (where the feature fires; red = high)")
        image_row(ev.nams, width=EVIDENCE_PX)
        if show_attacks and len(ev.top):
            st.markdown("**Feature attacks** (the image pushed to excite the feature: what it amplifies)")
            image_row(cached_attack(audit, store_key, tuple(map(int, ev.top)), d), width=EVIDENCE_PX)
    with class_col:
        st.markdown(f"**The class: {plain(class_name)}**")
        image_row(_class_examples(str(project.folder), c, split), width=60)

    # the answer
    with st.container(border=True):
        st.markdown(f"**Does feature {d} look at the {plain(class_name)} itself?**")
        answers = [("main_object", ":material/check_circle:", "M"), ("separate_object", ":material/category:", "S"),
                   ("background", ":material/landscape:", "B")]
        for column, (answer, icon, letter) in zip(st.columns(3), answers):
            # The three answers look alike (none is the suggested one); your current vote is highlighted.
            column.button(ANSWER_LABELS[answer], key=f"vote-{answer}", icon=icon, shortcut=letter,
                          type="primary" if row["mine"] == answer else "secondary",
                          on_click=_vote, args=(c, d, answer, next_pair), disabled=not reviewer, width="stretch")
        r1, r2 = st.columns([1, 3])
        r1.segmented_control("Confidence (1 = unsure, 5 = sure)", [1, 2, 3, 4, 5], key="review_confidence")
        r2.text_input("Reason (optional)", key="review_reason", placeholder="e.g. fires on the red corner square")
        if not reviewer:
            st.info("Type your name in the sidebar to vote.")

    # what the machines proposed
    machine_votes = {v.annotator: v for v in labels.votes(c, d, machine=True)}
    if machine_votes:
        st.markdown("**Machine proposals**")
    for name, vote in machine_votes.items():
        evidence = vote.evidence or {}
        with st.container(border=True):
            head, confirm, override = st.columns([4, 1, 1])
            head.markdown(f"`{name}` proposes **{ANSWER_LABELS[vote.answer]}**"
                          + (f" (confidence {vote.confidence})" if vote.confidence else "") + f": {vote.reason}")
            confirm.button("Confirm", key=f"confirm-{name}", disabled=not reviewer, width="stretch",
                           on_click=_vote, args=(c, d, vote.answer, next_pair, f"confirmed {name}."))
            flip = override_answer(vote.answer)
            override.button(f"Override: {'core' if flip == 'main_object' else 'background'}", key=f"override-{name}",
                            disabled=not reviewer, width="stretch",
                            on_click=_vote, args=(c, d, flip, next_pair, f"overrode {name}."))
            if evidence.get("labeler") == "segmentation":
                st.dataframe(segmentation_evidence_table(evidence), hide_index=True)
            elif evidence.get("labeler") == "clip":
                st.dataframe(clip_evidence_table(evidence), hide_index=True)
            images = [int(i) for i in evidence.get("images", [])]
            if images:
                with st.expander(f"The {len(images)} images {name} measured"):
                    image_row(_thumbnails(str(project.folder), tuple(images)), [f"#{i}" for i in images], width=72)

    with st.expander("Vote history of this pair"):
        history = labels.history(c, d)
        if history:
            st.dataframe(history_table(history), hide_index=True)
        else:
            st.caption("No votes yet.")

st.divider()

# ---- auto-labelers, as background jobs ---------------------------------------------------------
st.header("Auto-label")
st.caption("Machines propose labels with their evidence; every proposal waits for a person to confirm or "
           "override it. A run replaces the labeler's earlier proposals and never touches people's votes.")


def _jobs_module(quiet: bool = False):
    try:
        from spuraudit.ui import jobs as ui_jobs

        ui_jobs.queue()
        ensure_job_kinds()
        return ui_jobs
    except (ImportError, AttributeError) as exc:
        if not quiet:
            st.warning(f"Background jobs are not available in this installation ({exc}).")
        return None


def _submit(labeler: str, options: dict, title: str) -> None:
    try:
        make_labeler(labeler, **options)  # option errors show here, before anything is queued
    except AutoLabelError as exc:
        st.error(str(exc))
        return
    ui_jobs = _jobs_module()
    if ui_jobs is None:
        return
    job_id = ui_jobs.submit("autolabel.run", {"project": str(project.folder), "labeler": labeler,
                                              "options": options}, title)
    st.session_state.setdefault("review_jobs", []).append(job_id)
    st.rerun()


for name in ("segmentation", "clip"):
    last = labels.get_setting(last_run_key(name))
    if last:
        st.caption(f"`auto:{name}` last ran {last['finished']}: {last['n_proposals']} proposals "
                   f"({last['n_spurious']} spurious) with {json.dumps(last['options'])}")


def _show_jobs() -> None:
    """Auto-label jobs still running (from any session) live; this session's finished ones once more."""
    ui_jobs = _jobs_module(quiet=not st.session_state.get("review_jobs"))
    if ui_jobs is None:
        return
    queue = ui_jobs.queue()
    mine = []
    for job_id in st.session_state.get("review_jobs", []):
        try:
            mine.append(queue.get(job_id))
        except KeyError:  # the job database was reset meanwhile
            continue
    active = {j.id for kind in ("autolabel.run", "autolabel.concepts") for j in ui_jobs.active_jobs(kind)}
    active |= {j.id for j in mine if j.status in ("queued", "running")}
    for job in mine:
        if job.id not in active:
            ui_jobs.show_job(job)
    if active:
        # Polls every second and reruns the page once they have all finished: the new proposals
        # then appear, and the finished jobs are no longer active, so the polling stops.
        ui_jobs.watch(sorted(active))


_show_jobs()

seg_tab, clip_tab, concept_tab = st.tabs(["Segmentation", "CLIP", "CLIP concept scores"])
with seg_tab:
    from spuraudit.autolabel.segmentation import DEFAULT_THRESHOLDS, METRICS

    st.markdown("Compares each top image's NAM with the object's mask: **lift** = share of the NAM's mass inside "
                "the mask ÷ the mask's share of the image (1 = the feature ignores the object), **mass inside**, "
                "or **IoU** of the NAM binarised at 0.5. Below the threshold the pair is proposed spurious "
                "(background).")
    s1, s2, s3 = st.columns(3)
    metric = s1.selectbox("Metric", list(METRICS), index=list(METRICS).index("lift"), key="seg_metric")
    threshold = s2.number_input("Threshold", value=float(DEFAULT_THRESHOLDS[metric]), step=0.05,
                                key=f"seg_threshold_{metric}",
                                help="Default measured on the demo: planted-cue features score lift 1.00-1.21, "
                                     "digit features 1.48-2.08.")
    source = s3.radio("Masks from", ["dataset", "model"], key="seg_source", horizontal=True,
                      format_func=lambda s: "the dataset (mask_path)" if s == "dataset" else "a segmentation model")
    options: dict = {"metric": metric, "threshold": threshold, "mask_source": source, "images_per_pair": n_images,
                     "split": split or "all", "image_set": mode, "top_k": top_k}
    if source == "dataset" and not audit.table.has_masks:
        st.warning("This dataset has no mask_path column: use a segmentation model.")
    if source == "model":
        from spuraudit.autolabel.masks import SEGMENTATION_ARCHITECTURES

        m1, m2, m3 = st.columns(3)
        options["seg_architecture"] = m1.selectbox("Architecture", list(SEGMENTATION_ARCHITECTURES), key="seg_arch")
        options["seg_checkpoint"] = m2.text_input("Local checkpoint file", key="seg_ckpt",
                                                  placeholder="/models/deeplabv3_mobilenet_v3_large.pth")
        options["seg_target"] = m3.text_input("Object = class", value="foreground", key="seg_target",
                                              help="'foreground' (anything but class 0), a class index, or a "
                                                   "VOC name such as 'bird'.")
    if st.button("Run the segmentation labeler", key="run_seg", icon=":material/play_arrow:"):
        _submit("segmentation", options, f"Auto-label (segmentation): {project.name}")

with clip_tab:
    st.markdown("Scores the pair's top images (whole, NAM-weighted, cropped around the NAM) against concepts you "
                "name and against the class. When a concept beats the class by more than the margin on the NAM "
                "views, the pair is proposed spurious. One concept per line; end a line with `| separate_object` "
                "for objects (default: background).")
    concepts_text = st.text_area("Concepts", key="clip_concepts", placeholder="a red square | separate_object\nwater")
    prompts = {}
    if len(audit.class_names) > 12:
        st.caption("The first 12 classes can be described here; the others are described by their names.")
    cols = st.columns(min(4, len(audit.class_names)))
    for i, cname in enumerate(audit.class_names[:12]):
        text = cols[i % len(cols)].text_input(f"Class {i} as text", value=cname, key=f"clip_class_{i}")
        if text.strip() and text.strip() != cname:
            prompts[str(i)] = text.strip()
    k1, k2, k3 = st.columns(3)
    clip_model = k1.text_input("CLIP model", value="ViT-B-32", key="clip_model",
                               help="An open_clip architecture, or local-dir:/folder with open_clip_config.json.")
    pretrained = k2.text_input("Weights: pretrained tag or local file", value="openai", key="clip_pretrained",
                               help="A tag is fetched into open_clip's cache when online; offline, give the path "
                                    "of a downloaded weights file.")
    margin = k3.number_input("Margin (cosine similarity)", value=0.0, step=0.005, format="%.3f", key="clip_margin")
    clip_options = {"concepts": concepts_text, "class_prompts": prompts, "model_name": clip_model,
                    "pretrained": pretrained, "margin": margin, "images_per_pair": n_images,
                    "split": split or "all", "image_set": mode, "top_k": top_k}
    if st.button("Run the CLIP labeler", key="run_clip", icon=":material/play_arrow:"):
        _submit("clip", clip_options, f"Auto-label (CLIP): {project.name}")

with concept_tab:
    from spuraudit.autolabel.clip import load_concept_similarities

    st.markdown("A second spuriosity ranking: every image's CLIP similarity with the concepts above, z-scored "
                "within its class and averaged over the concepts. Scoring every image is a background job.")
    stored = load_concept_similarities(project)
    if stored is not None:
        st.caption(f"Stored: {len(stored.concepts)} concepts ({', '.join(stored.concepts)}) with {stored.model}, "
                   f"{stored.created}.")
    if st.button("Score every image on these concepts", key="run_concepts", icon=":material/play_arrow:"):
        ui_jobs = _jobs_module()
        if not concepts_text.strip():
            st.error("Name at least one concept in the CLIP tab.")
        elif ui_jobs is not None:
            job_id = ui_jobs.submit("autolabel.concepts", {"project": str(project.folder), "options": {
                "concepts": concepts_text, "model_name": clip_model, "pretrained": pretrained,
                "split": split}}, f"CLIP concept scores: {project.name}")
            st.session_state.setdefault("review_jobs", []).append(job_id)
            st.rerun()

st.divider()

# ---- import / export ---------------------------------------------------------------------------
st.header("Import and export")
num_classes = len(audit.class_names)
num_features = int(np.asarray(feature_store.head_weight).shape[1])
imp, exp = st.columns(2)
with imp:
    st.markdown("**Import a Salient ImageNet vote file** (CSV: WorkerId, Input.wordnet_id, Input.class_index, "
                "Input.feature_index, Input.feature_rank, Answer.main, Answer.confidence, Answer.reasons)")
    upload = st.file_uploader("Vote CSV", type=["csv"], key="salient_upload")
    if st.button("Import votes", key="salient_import", disabled=upload is None):
        try:
            data = io.BytesIO(upload.getvalue())
            data.name = upload.name  # errors name the file
            report = import_salient_csv(labels, data, num_classes, num_features)
        except SalientCSVError as exc:
            st.session_state["review_import"] = ("error", str(exc))
        else:
            st.session_state["review_import"] = ("success", report.summary())
        st.rerun()
    outcome = st.session_state.get("review_import")
    if outcome:
        (st.error if outcome[0] == "error" else st.success)(outcome[1])
with exp:
    st.markdown("**Export**")
    buffer = io.BytesIO()
    n_rows = export_salient_csv(labels, buffer)
    st.download_button(f"Votes as Salient ImageNet CSV ({n_rows} human votes)", buffer.getvalue(),
                       file_name=f"{project.folder.name}-votes.csv", mime="text/csv", key="export_csv",
                       on_click="ignore")
    st.download_button("Labels as JSON", json.dumps(export_labels_json(labels), indent=2),
                       file_name=f"{project.folder.name}-labels.json", mime="application/json", key="export_json",
                       on_click="ignore")
    st.download_button("Spurious features as JSON ({class: [features]})",
                       json.dumps(export_spurious_map(labels), indent=2),
                       file_name=f"{project.folder.name}-spurious.json", mime="application/json",
                       key="export_spurious", on_click="ignore")
