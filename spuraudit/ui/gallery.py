"""The image gallery of one class: filters, pages of thumbnails to select or inspect, tags and exports.

Everything works on the class's rows only (its indices in spuriosity order), never on the whole table.
Filters, the page and the class live in the address (see `url_state`), so a link restores the view.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import streamlit as st

from ..audit import Audit
from ..image_tags import TagError, TagStore
from . import url_state

CORRECTNESS = ["all", "correct", "wrong"]
COLUMNS = 6


@dataclass
class GalleryRows:
    order: np.ndarray  # dataset indices after the filters, in spuriosity order (low first)
    scores: np.ndarray  # their spuriosity
    total: int  # images of the class before the filters


def tag_key(audit: Audit, path: str) -> str:
    """The image's name for tags: its path relative to the dataset root (as dataset.csv stores it)."""
    root = audit.table.root
    if root is not None:
        rel = os.path.relpath(path, root)
        if not rel.startswith(".."):
            return rel
    return path


def selected(prefix: str) -> set[int]:
    return st.session_state.setdefault(f"{prefix}_selected", set())


def filters(audit: Audit, order: np.ndarray, scores: np.ndarray, tags: TagStore, prefix: str = "gallery") -> GalleryRows:
    """Filter widgets over the class's ranked rows; returns the rows that pass."""
    names = audit.class_names
    frame = audit.table.frame
    group_columns = list(audit.table.group_columns)
    cols = st.columns(2 + len(group_columns) + 1)

    url_state.seed(f"{prefix}_correct", "correct", str, CORRECTNESS)
    st.session_state.setdefault(f"{prefix}_correct", "all")  # no widget default beside a value from the address
    correctness = cols[0].segmented_control("Prediction is", CORRECTNESS, key=f"{prefix}_correct") or "all"
    url_state.keep("correct", correctness, "all")

    preds = audit.preds[order]
    present = sorted({int(p) for p in np.unique(preds)})
    url_state.seed(f"{prefix}_pred", "pred", url_state.int_list, present)
    wanted_pred = cols[1].multiselect("Predicted class", present, key=f"{prefix}_pred",
                                      format_func=lambda c: f"{c}: {names[c]}", placeholder="any")
    url_state.keep("pred", wanted_pred, [])

    keep = np.ones(len(order), dtype=bool)
    if correctness != "all":
        correct = audit.correct[order]
        keep &= correct if correctness == "correct" else ~correct
    if wanted_pred:
        keep &= np.isin(preds, wanted_pred)
    for j, column in enumerate(group_columns):
        values = frame[column].to_numpy()[order].astype(str)
        choices = sorted(set(values))
        url_state.seed(f"{prefix}_g_{column}", f"g_{column}", url_state.str_list, choices)
        picked = cols[2 + j].multiselect(column, choices, key=f"{prefix}_g_{column}", placeholder="any")
        url_state.keep(f"g_{column}", picked, [])
        if picked:
            keep &= np.isin(values, picked)
    all_tags = tags.all_tags()
    url_state.seed(f"{prefix}_tag", "tag", url_state.str_list, all_tags)
    wanted_tags = cols[-1].multiselect("Tagged", all_tags, key=f"{prefix}_tag", placeholder="any",
                                       disabled=not all_tags, help="Images carrying any of these tags.")
    url_state.keep("tag", wanted_tags, [])
    if wanted_tags:
        tagged = set().union(*(tags.images_with(t) for t in wanted_tags))
        keep &= np.array([tag_key(audit, audit.table.path(int(i))) in tagged for i in order], dtype=bool)
    return GalleryRows(order[keep], scores[keep], len(order))


def _toggle(prefix: str, index: int) -> None:
    chosen = selected(prefix)
    if st.session_state.get(f"{prefix}_sel_{index}"):
        chosen.add(index)
    else:
        chosen.discard(index)


def _set_many(prefix: str, indices, on: bool) -> None:
    chosen = selected(prefix)
    for i in indices:
        i = int(i)
        (chosen.add if on else chosen.discard)(i)
        st.session_state[f"{prefix}_sel_{i}"] = on


def _clear(prefix: str) -> None:
    _set_many(prefix, list(selected(prefix)), False)


def _inspect(prefix: str, index: int) -> None:
    st.session_state[f"{prefix}_inspect"] = int(index)


def grid(audit: Audit, rows: GalleryRows, input_size, prefix: str = "gallery") -> np.ndarray:
    """One page of thumbnails with a select box and an Inspect button each; returns the page's indices."""
    from . import cache

    page_size = st.select_slider("Images per page", [12, 24, 48], value=24, key=f"{prefix}_page_size")
    pages = max(1, -(-len(rows.order) // page_size))
    url_state.seed(f"{prefix}_page", "page", int)
    if not 1 <= int(st.session_state.get(f"{prefix}_page", 1)) <= pages:
        st.session_state[f"{prefix}_page"] = 1
    page = int(st.number_input(f"Page (1 = cue absent … {pages} = cue everywhere)", 1, pages, key=f"{prefix}_page"))
    url_state.keep("page", page, 1)
    start = (page - 1) * page_size
    chunk = rows.order[start:start + page_size]
    chosen = selected(prefix)
    b1, b2, b3, info = st.columns([1, 1, 1, 3], vertical_alignment="center")
    b1.button("Select page", key=f"{prefix}_select_page", on_click=_set_many, args=(prefix, chunk, True))
    b2.button(f"Select all {len(rows.order):,} filtered", key=f"{prefix}_select_all", on_click=_set_many,
              args=(prefix, rows.order, True))
    b3.button("Clear selection", key=f"{prefix}_clear", on_click=_clear, args=(prefix,), disabled=not chosen)
    info.caption(f"{len(rows.order):,} of {rows.total:,} images pass the filters · **{len(chosen):,} selected**")
    if not len(chunk):
        st.info("No image of this class passes the filters.")
        return chunk
    thumbs = cache.thumbnails(audit, chunk, input_size)
    for row_start in range(0, len(chunk), COLUMNS):
        for column, (i, thumb, s) in zip(st.columns(COLUMNS), list(zip(chunk, thumbs, rows.scores[start:start + page_size]))
                                         [row_start:row_start + COLUMNS]):
            i = int(i)
            with column.container(key=f"{prefix}_cell_{i}"):
                st.image(thumb, width=96, caption=f"{'✓' if audit.correct[i] else '✗'} s={s:+.2f}")
                st.session_state.setdefault(f"{prefix}_sel_{i}", i in chosen)
                st.checkbox(f"#{i}", key=f"{prefix}_sel_{i}", on_change=_toggle, args=(prefix, i))
                st.button("Inspect", key=f"{prefix}_inspect_{i}", icon=":material/zoom_in:", type="tertiary",
                          on_click=_inspect, args=(prefix, i))
    st.caption(f"Images {start + 1}-{start + len(chunk)} of {len(rows.order):,}, sorted by spuriosity. "
               "✓ correct, ✗ wrong.")
    return chunk


def actions(audit: Audit, rows: GalleryRows, tags: TagStore, score_of: dict[int, float], class_name: str,
            prefix: str = "gallery") -> None:
    """Tag the selection; export the selection or everything the filters let through."""
    from ..selection_export import ExportError, selection_frame, to_csv_bytes, zip_bytes

    chosen = sorted(selected(prefix))
    with st.container(border=True):
        st.markdown("**Tag or export**")
        t1, t2, t3 = st.columns([2, 1, 1], vertical_alignment="bottom")
        tag = t1.text_input("Tag", key=f"{prefix}_tag_text", placeholder="e.g. mislabelled")
        paths = [tag_key(audit, audit.table.path(i)) for i in chosen]
        if t2.button("Tag selected", key=f"{prefix}_tag_add", disabled=not (chosen and tag.strip())):
            try:
                n = tags.add(paths, tag)
                st.toast(f"Tagged {n} image{'s' if n != 1 else ''} '{tag.strip()}'")
            except TagError as exc:
                st.error(str(exc))
        if t3.button("Untag selected", key=f"{prefix}_tag_remove", disabled=not (chosen and tag.strip())):
            n = tags.remove(paths, tag.strip())
            st.toast(f"Removed '{tag.strip()}' from {n} image{'s' if n != 1 else ''}")

        e1, e2, e3 = st.columns([1, 1, 2], vertical_alignment="bottom")
        scope = e1.radio("Export", ["selection", "filtered"], key=f"{prefix}_export_scope",
                         format_func=lambda s: f"selection ({len(chosen):,})" if s == "selection"
                         else f"all filtered ({len(rows.order):,})")
        kind = e2.radio("As", ["CSV of paths", "zip of images", "ImageFolder zip"], key=f"{prefix}_export_kind")
        indices = chosen if scope == "selection" else [int(i) for i in rows.order]

        def build() -> bytes:  # run only when the button is pressed (a deferred download)
            keys = {audit.table.path(i): tag_key(audit, audit.table.path(i)) for i in indices}
            by_key = tags.tags_of(keys.values())
            frame = selection_frame(audit.table, indices, audit.preds, score_of,
                                    {p: by_key.get(k, []) for p, k in keys.items()})
            if kind == "CSV of paths":
                return to_csv_bytes(frame)
            try:
                return zip_bytes(frame, audit.table.root, "imagefolder" if kind == "ImageFolder zip" else "flat")
            except ExportError as exc:
                return f"export refused: {exc}\n".encode()

        from ..selection_export import safe_name

        extension = "csv" if kind == "CSV of paths" else "zip"
        e3.download_button(f"Download {len(indices):,} images' {'rows' if extension == 'csv' else 'files'}",
                           data=build, file_name=f"{safe_name(class_name, 'class')}-{scope}.{extension}",
                           mime="text/csv" if extension == "csv" else "application/zip",
                           disabled=not indices, key=f"{prefix}_download", icon=":material/download:")


def inspector_if_asked(audit: Audit, score_of: dict[int, float], tags: TagStore, prefix: str = "gallery") -> None:
    """Open the inspector dialog for the thumbnail whose Inspect button was pressed in this run."""
    index = st.session_state.pop(f"{prefix}_inspect", None)
    if index is None:
        return
    from .inspector import open_inspector

    path = audit.table.path(int(index))
    known = tags.tags_of([tag_key(audit, path)])
    open_inspector(audit, int(index), score_of, {path: known.get(tag_key(audit, path), [])})


__all__ = ["GalleryRows", "actions", "filters", "grid", "inspector_if_asked", "selected", "tag_key"]
