"""The review page's auto-label section: one tab per registered labeler, built from its declared options,
each run queued as a background job; and CLIP's concept scores of every image.

A labeler registered by a plug-in (`spuraudit.autolabel.register_labeler`) gets its tab here without any
change to this module or the page.
"""

from __future__ import annotations

import json
from typing import Any

import streamlit as st

from ..autolabel import AutoLabelError, ensure_job_kinds, labeler_classes, labeler_reference, last_run_key, make_labeler
from ..autolabel.base import COMMON_OPTIONS
from ..jobs.kinds import AUTOLABEL_CONCEPTS, AUTOLABEL_RUN
from .options import option_widget

JOBS_KEY = "review_jobs"  # this session's auto-label jobs


def _jobs_module(quiet: bool = False):
    try:
        from . import jobs as ui_jobs

        ui_jobs.queue()
        ensure_job_kinds()
        return ui_jobs
    except (ImportError, AttributeError) as exc:
        if not quiet:
            st.warning(f"Background jobs are not available in this installation ({exc}).")
        return None


def _submit(project, name: str, values: dict[str, Any], title: str) -> None:
    try:
        labeler = make_labeler(name, **values)  # option errors show here, before anything is queued
    except AutoLabelError as exc:
        st.error(str(exc))
        return
    # Options left unset on the form (None) are stored as the labeler filled them in (e.g. the metric's
    # threshold), so the job records what it will run with.
    used = labeler.options()
    options = {key: used.get(key) if value is None else value for key, value in values.items()}
    ui_jobs = _jobs_module()
    if ui_jobs is None:
        return
    job_id = ui_jobs.submit(AUTOLABEL_RUN, {"project": str(project.folder), "labeler": labeler_reference(name),
                                             "options": options}, title)
    st.session_state.setdefault(JOBS_KEY, []).append(job_id)
    st.rerun()


def _show_jobs() -> None:
    """Auto-label jobs still running (from any session) live; this session's finished ones once more."""
    ui_jobs = _jobs_module(quiet=not st.session_state.get(JOBS_KEY))
    if ui_jobs is None:
        return
    queue = ui_jobs.queue()
    mine = []
    for job_id in st.session_state.get(JOBS_KEY, []):
        try:
            mine.append(queue.get(job_id))
        except KeyError:  # the job database was reset meanwhile
            continue
    active = {j.id for kind in (AUTOLABEL_RUN, AUTOLABEL_CONCEPTS) for j in ui_jobs.active_jobs(kind)}
    active |= {j.id for j in mine if j.status in ("queued", "running")}
    for job in mine:
        if job.id not in active:
            ui_jobs.show_job(job)
    if active:
        # Polls every second and reruns the page once they have all finished: the new proposals
        # then appear, and the finished jobs are no longer active, so the polling stops.
        ui_jobs.watch(sorted(active))


def labeler_form(project, audit, cls, common: dict[str, Any]) -> dict[str, Any]:
    """The fields of one labeler's declared options (those whose `when` holds); returns all its values."""
    prefix = cls.short or cls.name
    if cls.description:
        st.markdown(cls.description)
    values: dict[str, Any] = dict(common)
    plain = [o for o in cls.declared_options if not o.per_class and not o.multiline]
    for option in cls.declared_options:  # long fields first, on their own line
        if option.multiline:
            values[option.name] = option_widget(option, key=f"{prefix}_{option.name}")
    for option in cls.declared_options:
        if option.per_class:
            values[option.name] = option_widget(option, key=f"{prefix}_{option.name}",
                                                class_names=audit.class_names)
    shown = [o for o in plain if o.when is None]
    for start in range(0, len(shown), 3):
        for column, option in zip(st.columns(3), shown[start:start + 3]):
            values[option.name] = option_widget(option, key=f"{prefix}_{option.name}", container=column)
    dependent = [o for o in plain if o.when is not None and values.get(o.when[0]) == o.when[1]]
    for start in range(0, len(dependent), 3):
        for column, option in zip(st.columns(3), dependent[start:start + 3]):
            values[option.name] = option_widget(option, key=f"{prefix}_{option.name}", container=column)
    warning = cls.form_warning(audit, values)
    if warning:
        st.warning(warning)
    return values


def autolabel_section(project, audit, labels, common: dict[str, Any]) -> None:
    """`common`: the values of COMMON_OPTIONS the page's sidebar chose (the pairs on show)."""
    assert set(common) <= {o.name for o in COMMON_OPTIONS}
    st.header("Auto-label")
    st.caption("Machines propose labels with their evidence; every proposal waits for a person to confirm or "
               "override it. A run replaces the labeler's earlier proposals and never touches people's votes.")
    classes = labeler_classes()
    for name in classes:
        last = labels.get_setting(last_run_key(name))
        if last:
            st.caption(f"`auto:{name}` last ran {last['finished']}: {last['n_proposals']} proposals "
                       f"({last['n_spurious']} spurious) with {json.dumps(last['options'])}")
    _show_jobs()

    tabs = st.tabs([cls.label or cls.name for cls in classes.values()] + ["CLIP concept scores"])
    for tab, (name, cls) in zip(tabs, classes.items()):
        with tab:
            values = labeler_form(project, audit, cls, common)
            label = cls.label or cls.name
            if st.button(f"Run the {label} labeler", key=f"run_{cls.short or name}", icon=":material/play_arrow:"):
                _submit(project, name, values, f"Auto-label ({label}): {project.name}")
    with tabs[-1]:
        concept_scores_form(project, common.get("split"))


def concept_scores_form(project, split: str | None) -> None:
    """CLIP's second ranking: every image scored on the concepts named in the CLIP tab (a background job)."""
    from ..autolabel.clip import DEFAULT_MODEL, DEFAULT_PRETRAINED, load_concept_similarities

    st.markdown("A second spuriosity ranking: every image's CLIP similarity with the concepts above, z-scored "
                "within its class and averaged over the concepts. Scoring every image is a background job.")
    stored = load_concept_similarities(project)
    if stored is not None:
        st.caption(f"Stored: {len(stored.concepts)} concepts ({', '.join(stored.concepts)}) with {stored.model}, "
                   f"{stored.created}.")
    if st.button("Score every image on these concepts", key="run_concepts", icon=":material/play_arrow:"):
        concepts = st.session_state.get("clip_concepts", "")
        ui_jobs = _jobs_module()
        if not concepts.strip():
            st.error("Name at least one concept in the CLIP tab.")
        elif ui_jobs is not None:
            job_id = ui_jobs.submit(AUTOLABEL_CONCEPTS, {"project": str(project.folder), "options": {
                "concepts": concepts, "model_name": st.session_state.get("clip_model_name", DEFAULT_MODEL),
                "pretrained": st.session_state.get("clip_pretrained", DEFAULT_PRETRAINED),
                "split": None if split == "all" else split}}, f"CLIP concept scores: {project.name}")
            st.session_state.setdefault(JOBS_KEY, []).append(job_id)
            st.rerun()
