"""Review features: label (class, feature) pairs core or spurious, one at a time, and check the machines.

Modelled on Salient ImageNet's annotation task: the feature's top images with their NAMs and
feature attacks, the class with a few of its images, and three answers (main object = core;
separate object or background = spurious) with a 1-5 confidence and a reason. Every answer is a
vote with the annotator's name and a timestamp; machines' proposals are votes too, and any
person's vote overrides them.
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from spuraudit.audit import Audit
from spuraudit.autolabel.review_queue import ANSWER_LABELS, evidence_table, history_table, override_answer
from spuraudit.data.images import load_rgb
from spuraudit.explain import upscale_for_display
from spuraudit.ui.autolabel_forms import autolabel_section
from spuraudit.ui.label_io import import_export_section
from spuraudit.ui.nav import page_setup
from spuraudit.ui.review_queue import queue_sidebar
from spuraudit.ui.reviewer import current_reviewer, reviewer_sidebar
from spuraudit.ui.state import require_features, require_project
from spuraudit.ui.evidence_view import attack_row, heatmap_controls, heatmap_overlays, request_attacks
from spuraudit.ui.widgets import cached_pair_evidence, image_row, plain

EVIDENCE_PX = 84  # top images, NAMs and attacks: the default 8 per row fit the evidence column on one line

page_setup("Review features")
project = require_project()
feature_store = require_features(project)
audit = Audit(project, feature_store)
labels = project.labels()
store_key = feature_store.meta["key"]

st.title("Review features")

reviewer = reviewer_sidebar(project, labels)
view = queue_sidebar(project, audit, labels, feature_store, reviewer)
split, mode, n_images, shown = view.split, view.mode, view.n_images, view.shown
heat_alpha, heat_side = heatmap_controls("review_heat")

flash = st.session_state.pop("review_flash", None)
if flash:
    st.toast(flash)


@st.cache_data(show_spinner=False, max_entries=256)
def _thumbnails(folder: str, indices: tuple[int, ...]) -> list[np.ndarray]:
    """Display copies of dataset images (folder keys the cache per project)."""
    return [upscale_for_display(np.asarray(load_rgb(audit.table.path(i))), 96) for i in indices]


def _class_examples(folder: str, class_index: int, split_name: str | None, n: int = 6) -> list[np.ndarray]:
    """A few images of the class (a fixed random draw per class), to remind the reviewer what it is."""
    sel = np.flatnonzero(audit.table.split_mask(split_name) & (audit.labels == class_index))
    pick = np.random.default_rng(class_index).choice(sel, size=min(n, len(sel)), replace=False)
    return _thumbnails(folder, tuple(int(i) for i in sorted(pick)))


# ---- actions (callbacks run before the next script run, so widgets can be reset there) ---------
def _go_to(pair) -> None:
    st.session_state["review_pair"] = None if pair is None else (int(pair[0]), int(pair[1]))
    _remember(st.session_state["review_pair"])


def _remember(pair) -> None:
    """The pair in the address (?pair=class-feature): a reload or a shared link opens the same pair."""
    if pair is None:
        st.query_params.pop("pair", None)
    elif st.query_params.get("pair") != f"{pair[0]}-{pair[1]}":
        st.query_params["pair"] = f"{pair[0]}-{pair[1]}"


def _pair_from_address():
    try:
        c, d = st.query_params.get("pair", "").split("-")
        return int(c), int(d)
    except ValueError:
        return None


def _vote(class_index: int, feature: int, answer: str, next_pair, reason_prefix: str = "") -> None:
    name = current_reviewer()
    if not name:
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
    name = current_reviewer()
    vote = labels.undo_last(name) if name else None
    if vote is None:
        st.session_state["review_flash"] = "You have no vote to retract."
        return
    st.session_state["review_flash"] = (f"Retracted your vote '{vote.answer}' on class {vote.class_index}, "
                                        f"feature {vote.feature_index}")
    _go_to(vote.pair)


# ---- the current pair --------------------------------------------------------------------------
order = view.order
current = st.session_state.get("review_pair")
if current is None:
    current = _pair_from_address()  # a new session (a reload) picks up where the address says
if current is not None:
    current = (int(current[0]), int(current[1]))
if current not in order:
    current = order[0] if order else None
st.session_state["review_pair"] = current
_remember(current)

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
    subtype = row["subtype"] if isinstance(row["subtype"], str) and row["subtype"] else None  # NaN when none
    status = row["status"] + (f" ({subtype})" if subtype else "")
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
        image_row(heatmap_overlays(ev.images, ev.nam_maps, heat_alpha, heat_side),
                  width=EVIDENCE_PX * (2 if heat_side else 1))
        if view.show_attacks and len(ev.top):
            st.markdown("**Feature attacks** (the image pushed to excite the feature: what it amplifies)")
            attack_row(audit, store_key, c, d, n_images, split, mode, width=EVIDENCE_PX)
            request_attacks(audit, store_key, order[position + 1:position + 3], n_images, split, mode)
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
            table = evidence_table(evidence)  # as the proposing labeler declares it
            if table is not None:
                st.dataframe(table, hide_index=True)
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

autolabel_section(project, audit, labels, {"images_per_pair": n_images, "split": split or "all",
                                           "image_set": mode, "top_k": view.top_k})

st.divider()
import_export_section(project, labels, len(audit.class_names), int(np.asarray(feature_store.head_weight).shape[1]))
