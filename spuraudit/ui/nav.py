"""Every page's frame: page config, the grouped sidebar navigation, and the project picker."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

REPO = Path(__file__).resolve().parents[2]

# (section, page script relative to the app folder, label, icon). Pages whose file is absent are skipped.
PAGES = [
    ("Audit", "app.py", "Home", ":material/home:"),
    ("Audit", "pages/features.py", "Features", ":material/manage_search:"),
    ("Audit", "pages/rankings.py", "Rankings & gaps", ":material/leaderboard:"),
    ("Label", "pages/review.py", "Review features", ":material/label:"),
    ("Fix", "pages/mitigate.py", "Mitigate", ":material/build:"),
    ("Fix", "pages/compare.py", "Compare models", ":material/compare:"),
    ("Data", "pages/data.py", "Add data & model", ":material/upload_file:"),
    ("Data", "pages/jobs.py", "Jobs", ":material/schedule:"),
]


def page_setup(title: str) -> None:
    """Call first on every page."""
    st.set_page_config(page_title=f"{title} · spuraudit", page_icon=":material/manage_search:", layout="wide")
    with st.sidebar:
        st.markdown("### :material/manage_search: spuraudit")
        section = None
        for sec, script, label, icon in PAGES:
            if not (REPO / script).is_file():
                continue
            if sec != section:
                st.caption(sec.upper())
                section = sec
            st.page_link(script, label=label, icon=icon)
        st.divider()
