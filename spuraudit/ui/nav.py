"""Every page's frame: page config, the grouped sidebar navigation, and the project picker."""

from __future__ import annotations

from pathlib import Path

import streamlit as st
from streamlit.errors import StreamlitPageNotFoundError

REPO = Path(__file__).resolve().parents[2]

# (section, page script relative to the app folder, label, icon). Pages whose file is absent are skipped.
PAGES = [
    ("Audit", "app.py", "Home", ":material/home:"),
    ("Audit", "pages/features.py", "Features", ":material/manage_search:"),
    ("Audit", "pages/rankings.py", "Rankings & gaps", ":material/leaderboard:"),
    ("Audit", "pages/collisions.py", "Collisions", ":material/call_split:"),
    ("Audit", "pages/sensitivity.py", "Feature sensitivity", ":material/blur_on:"),
    ("Audit", "pages/models.py", "Many models", ":material/stacked_line_chart:"),
    ("Label", "pages/review.py", "Review features", ":material/label:"),
    ("Fix", "pages/mitigate.py", "Mitigate", ":material/build:"),
    ("Fix", "pages/compare.py", "Compare models", ":material/compare:"),
    ("Data", "pages/data.py", "Add data & model", ":material/upload_file:"),
    ("Data", "pages/jobs.py", "Jobs", ":material/schedule:"),
]


def page_setup(title: str) -> None:
    """Call first on every page. A page run as its own entry point (`streamlit run pages/…`, or
    `AppTest.from_file` on it) goes without the navigation: links resolve from app.py only."""
    # An emoji favicon is drawn by the browser itself; a ":material/…:" one is fetched from Google's font
    # server, which fails (and logs console errors) on a machine without internet.
    st.set_page_config(page_title=f"{title} · spuraudit", page_icon="🔎", layout="wide")
    from .auth import gate

    gate()  # a shared server shows nothing but its sign-in form until the browser has signed in
    with st.sidebar:
        st.markdown("### :material/manage_search: spuraudit")
        section = None
        for sec, script, label, icon in PAGES:
            if not (REPO / script).is_file():
                continue
            if sec != section:
                st.caption(sec.upper())
                section = sec
            try:
                st.page_link(script, label=label, icon=icon)
            except StreamlitPageNotFoundError:
                return
        st.divider()


def link(script: str, label: str, icon: str) -> None:
    """A link to another page; plain text when this page runs on its own."""
    try:
        st.page_link(script, label=label, icon=icon)
    except StreamlitPageNotFoundError:
        st.caption(f"{label}: see `{script}`")
