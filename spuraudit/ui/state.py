"""Which project the browser is looking at, and the cached objects pages share."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from .. import paths
from ..project import Project, ProjectError, list_projects


def _stamp(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


@st.cache_resource(show_spinner=False, max_entries=8)
def _open_project(folder: str, stamp: float) -> Project:
    return Project.open(folder)


def open_project(folder: str | Path) -> Project:
    """A Project, reopened when its project.json changes."""
    folder = Path(folder)
    return _open_project(str(folder), _stamp(folder / "project.json"))


@st.cache_resource(show_spinner=False, max_entries=4)
def _load_model(folder: str, stamp: float):
    from ..modelio import load_model

    return load_model(folder)


def load_model(folder: str | Path):
    """(AuditModel, ModelCard), cached per model folder."""
    folder = Path(folder)
    return _load_model(str(folder), _stamp(folder / "model.yaml"))


def project_choice() -> Project | None:
    """Sidebar project picker; the choice lives in the URL (?project=name) so reloads keep it."""
    folders = list_projects()
    if not folders:
        return None
    names = [f.name for f in folders]
    wanted = st.query_params.get("project") or st.session_state.get("project")
    index = names.index(wanted) if wanted in names else 0
    name = st.sidebar.selectbox("Project", names, index=index, key="project_picker")
    st.session_state["project"] = name
    if st.query_params.get("project") != name:
        st.query_params["project"] = name
    try:
        return open_project(paths.projects_dir() / name)
    except ProjectError as exc:
        st.sidebar.error(str(exc))
        return None


def require_project() -> Project:
    """The chosen project, or a pointer to the home page and a stop."""
    project = project_choice()
    if project is None:
        st.info("No project yet. Build the demo or open your own data on the **Home** page.")
        st.page_link("app.py", label="Go to Home", icon=":material/home:")
        st.stop()
    return project


def require_features(project: Project, model_folder: str | Path | None = None):
    """The project's feature store, or a notice that extraction has not run (never computes here)."""
    store = project.feature_store(model_folder)
    if store is None:
        stop_without_features(project)
    return store


def stop_without_features(project: Project) -> None:
    """Say that extraction has not run, point at Home, and stop the page."""
    st.warning(
        "Features for this model and dataset have not been extracted yet. Start the extraction on the "
        "**Home** page (it runs in the background) or run `spuraudit extract --project "
        f"{project.folder.name}`."
    )
    st.page_link("app.py", label="Go to Home", icon=":material/home:")
    st.stop()


# ---- who is voting ---------------------------------------------------------------------------------
def signed_in_name() -> str | None:
    """The signed-in person's name when this server has sign-in, else None (names are typed locally)."""
    from .auth import current_user, sign_in_required

    if not sign_in_required():
        return None
    user = current_user()
    return user.name if user is not None else ""


def annotator_name(typed: str | None = "") -> str:
    """The name a vote carries: with sign-in, the signed-in person's (a typed name or `?annotator=` in the
    address is ignored), or "" when their role may not vote; without sign-in, what the person typed."""
    from .auth import allowed

    fixed = signed_in_name()
    if fixed is None:
        return (typed or "").strip()
    return fixed if allowed("annotator") else ""
