"""Deleting the shown project, or a model no project uses, after typing its name (admins only)."""

from __future__ import annotations

import streamlit as st

from .. import paths
from ..removal import RemovalError, delete_model, delete_project, projects_using
from .auth import allowed
from .widgets import plain


def delete_section(project) -> None:
    if not allowed("admin"):
        return
    with st.expander(":material/delete: Delete"):
        st.markdown(f"Delete the project **{plain(project.name)}**: its labels, tags, caches and extracted "
                    "features. The dataset's images and the model files stay where they are.")
        typed = st.text_input("Type the project's folder name to confirm", key="delete_project_name",
                              placeholder=project.folder.name)
        if st.button("Delete this project", type="primary", key="delete_project",
                     disabled=typed.strip() != project.folder.name):
            try:
                delete_project(project.folder.name)
            except (RemovalError, OSError) as exc:
                st.error(str(exc))
            else:
                st.session_state.pop("project", None)
                st.query_params.pop("project", None)
                st.toast(f"Project {project.folder.name} deleted")
                st.rerun()
        models = sorted(p.name for p in paths.models_dir().glob("*") if (p / "model.yaml").is_file()) \
            if paths.models_dir().is_dir() else []
        unused = [m for m in models if not projects_using(paths.models_dir() / m)]
        st.divider()
        if not unused:
            st.caption("Every model is used by a project; delete the project first to delete its model.")
            return
        model = st.selectbox("Delete a model no project uses", unused, key="delete_model_pick")
        typed_model = st.text_input("Type the model's name to confirm", key="delete_model_name", placeholder=model)
        if st.button("Delete this model", key="delete_model", disabled=typed_model.strip() != model):
            try:
                delete_model(model)
            except (RemovalError, OSError) as exc:
                st.error(str(exc))
            else:
                st.toast(f"Model {model} deleted")
                st.rerun()
