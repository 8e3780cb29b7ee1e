"""The home page's "Check the images" panel: which image files went missing or changed since extraction."""

from __future__ import annotations

import streamlit as st

from .widgets import plain

_NAMES_SHOWN = 5


def image_check_panel(project) -> None:
    """A button (admins only) that re-checks every image file against the record kept at extraction."""
    from .auth import allowed

    if not allowed("admin"):
        return
    if not st.button("Check the images", key="check_images",
                     help="Compare every image file with its size and time when its features were extracted"):
        return
    from ..verify import verify_dataset

    with st.spinner("Checking the image files..."):
        report = verify_dataset(project)
    if report.store is None:
        st.info(report.note)
        return
    if report.ok:
        note = " (no record was kept; today's files are now the record)" if report.baseline_recorded else ""
        st.success(f"All {report.checked:,} images are as they were when their features were extracted{note}.")
        return
    st.warning(f"Of {report.checked:,} images, {report.n_missing:,} are missing and {report.n_changed:,} changed "
               "since their features were extracted: restore them, or extract the features again.")
    for kind, names in (("Missing", report.missing), ("Changed", report.changed)):
        if names:
            st.markdown(f"**{kind}** (first ones): " + "; ".join(plain(n) for n in names[:_NAMES_SHOWN]))
