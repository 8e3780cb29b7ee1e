"""The review page's import and export of votes: Salient ImageNet vote CSVs in, CSV and JSON out."""

from __future__ import annotations

import io
import json

import streamlit as st

from ..labels import SalientCSVError, export_labels_json, export_salient_csv, export_spurious_map, import_salient_csv
from .auth import allowed


def import_export_section(project, labels, num_classes: int, num_features: int) -> None:
    st.header("Import and export")
    imp, exp = st.columns(2)
    with imp:
        st.markdown("**Import a Salient ImageNet vote file** (CSV: WorkerId, Input.wordnet_id, Input.class_index, "
                    "Input.feature_index, Input.feature_rank, Answer.main, Answer.confidence, Answer.reasons)")
        upload = st.file_uploader("Vote CSV", type=["csv"], key="salient_upload")
        may_import = allowed("admin")  # imported votes carry other people's names: admins only
        if st.button("Import votes", key="salient_import", disabled=upload is None or not may_import) and may_import:
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
