"""The review page's queue: which pairs are shown (sidebar choices), in what order, and the progress."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import streamlit as st

from ..autolabel.review_queue import FILTERS, filter_queue, progress_counts, queue_pairs, review_table
from .widgets import image_set_picker, split_picker


@dataclass
class QueueView:
    """What the sidebar chose and the pairs it leaves, in review order."""

    split: str | None
    mode: str
    top_k: int
    n_images: int
    show_attacks: bool
    shown: pd.DataFrame  # rows of `review_table` passing the filter

    @property
    def order(self) -> list[tuple[int, int]]:
        return list(zip(self.shown["class_index"].astype(int), self.shown["feature_index"].astype(int)))


def queue_sidebar(project, audit, labels, feature_store, reviewer: str) -> QueueView:
    """The sidebar's choices of pairs, then the queue and its progress metrics above the page."""
    split = split_picker(audit, key="review_split")
    mode = image_set_picker(project, key="review_image_set")
    top_k = st.sidebar.slider("Top features per class", 1, 15, int(project.settings.get("top_k", 5)),
                              key="review_top_k")
    n_images = st.sidebar.slider("Images per feature", 4, 16, 8, key="review_n_images")
    how = st.sidebar.radio("Show", list(FILTERS), key="review_filter", format_func=lambda f: f"{f}: {FILTERS[f]}")
    classes = st.sidebar.multiselect("Classes", list(range(len(audit.class_names))), key="review_classes",
                                     format_func=lambda c: f"{c}: {audit.class_names[c]}",
                                     help="Leave empty for every class.")
    # Off by default: on a CPU an attack takes a minute or more per pair. When on, they are computed in the
    # background (the next pairs' too) and never hold up a vote.
    show_attacks = st.sidebar.toggle("Feature attacks", key="review_attacks",
                                     help="Gradient ascent on the feature from each top image (100 steps), computed "
                                          "in the background for this pair and the next ones, kept on disk.")

    all_votes = labels.votes()
    pairs = queue_pairs(audit, top_k, split, mode, voted=[v.pair for v in all_votes])
    table = review_table(pairs, all_votes, reviewer)
    shown = filter_queue(table, how, classes or None)
    counts = progress_counts(filter_queue(table, "all", classes or None))

    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Reviewed (any person)", f"{counts['reviewed']} of {counts['total']}")
    c2.metric("Reviewed by you", f"{counts['mine']} of {counts['total']}")
    c3.metric("Machine proposals to confirm", counts["to_confirm"])
    c4.metric("Showing", f"{len(shown)} pairs")
    st.progress(counts["reviewed"] / counts["total"] if counts["total"] else 0.0)
    return QueueView(split, mode, top_k, n_images, show_attacks, shown)
