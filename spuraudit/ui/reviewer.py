"""Who is reviewing: the one place the review page learns the annotator's name.

Asked once, kept in the session, the page's address (?annotator=) and the label store. The address
belongs to one browser, so on a team each reviewer's reload keeps their own name. The label store
remembers the last name used on the project, but a visit without a name is never filled in with it (on a
shared browser that would cast votes under someone else's name): it is offered as an "I am ..." button
the person must click. "review_name" is a plain session
key: it outlives the widget's own state when the reviewer visits another page and comes back (the
address then no longer carries the name). Swapping how identity is obtained means changing this module.
"""

from __future__ import annotations

import streamlit as st

from ..autolabel import MACHINE_PREFIX
from .state import annotator_name, signed_in_name
from .widgets import plain


def _claim_name(name: str) -> None:
    st.session_state["reviewer"] = name  # a callback runs before the field is drawn, so it may set it


def current_reviewer() -> str:
    """The name votes are cast under right now ('' when none, or when it is a machine's name); for callbacks."""
    name = annotator_name(st.session_state.get("reviewer", ""))
    return "" if name.startswith(MACHINE_PREFIX) else name


def reviewer_sidebar(project, labels) -> str:
    """Show the name field in the sidebar and return the reviewer's name ('' until one is typed)."""
    if signed_in_name() is not None:  # signed in: votes carry the sign-in's name, never the address's
        st.session_state["reviewer"] = signed_in_name()
    if "reviewer" not in st.session_state:
        known = st.session_state.get("review_name") or (st.query_params.get("annotator") or "").strip()
        st.session_state["reviewer"] = known
    st.sidebar.text_input("Your name", key="reviewer", disabled=signed_in_name() is not None,
                          help="Every vote carries it. Kept in this page's address (bookmark it) and offered on "
                               "the next visit.")
    reviewer = annotator_name(st.session_state.get("reviewer", ""))
    if reviewer.startswith(MACHINE_PREFIX):
        st.sidebar.error(f"Names starting with '{MACHINE_PREFIX}' belong to the auto-labelers; choose another.")
        reviewer = ""
    st.session_state["review_name"] = reviewer
    if not reviewer and signed_in_name() is None:
        remembered = (labels.get_setting("annotator") or project.settings.get("annotator") or "").strip()
        if remembered and not remembered.startswith(MACHINE_PREFIX):
            st.sidebar.button(f"I am {plain(remembered)}", key="review_claim_name", on_click=_claim_name,
                              args=(remembered,), help="The last name used on this project. Not you? Type yours.")
    if reviewer:
        if st.query_params.get("annotator") != reviewer:
            st.query_params["annotator"] = reviewer
        if labels.get_setting("annotator") != reviewer:
            labels.set_setting("annotator", reviewer)  # a visit without a name in its address starts with this one
    return reviewer
