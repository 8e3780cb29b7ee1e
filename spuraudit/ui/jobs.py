"""Submitting background jobs from a page and watching them with a polling fragment."""

from __future__ import annotations

import streamlit as st

from .. import paths


def queue():
    from ..jobs import JobQueue

    return JobQueue(paths.jobs_db())


def submit(kind: str, params: dict, title: str) -> int:
    """Queue a job and make sure a worker process is there to run it (admins only, where people sign in)."""
    from ..jobs import ensure_worker
    from .auth import allowed

    if not allowed("admin"):
        raise PermissionError("Launching jobs needs the admin role on this server; ask the operator for it.")

    q = queue()
    job_id = q.submit(kind, params, title=title)
    ensure_worker(paths.jobs_db())
    return job_id


def active_jobs(kind: str | None = None) -> list:
    q = queue()
    q.recover_stale()
    return [j for j in q.list(kind=kind, limit=50) if j.status in ("queued", "running")]


def show_job(job, container=None) -> None:
    """One job as a progress bar with its message; errors with their traceback."""
    box = container or st
    label = f"#{job.id} {job.title or job.kind}"
    if job.status in ("queued", "running"):
        box.progress(min(max(job.progress or 0.0, 0.0), 1.0), text=f"{label}: {job.message or job.status}")
    elif job.status == "done":
        extra = job.message if job.message and job.message != "done" else ""
        box.success(f"{label}: done" + (f". {extra}" if extra else ""))
        summary = result_summary(getattr(job, "result", None))
        if summary:
            box.caption(f"Result: {summary}")
    elif job.status == "cancelled":
        box.warning(f"{label}: cancelled")
    else:
        box.error(f"{label}: {job.status}. {job.message or ''}")
        if job.error:
            with box.expander("Traceback"):
                st.code(job.error)


_RESULT_SKIP = {"key", "store", "created", "params_hash"}  # bookkeeping, not what the person asked for


def result_summary(result, limit: int = 8) -> str:
    """A finished job's result as one line of its short values (numbers rounded, paths as file names),
    so the outcome shows without opening the job's details."""
    if not isinstance(result, dict):
        return "" if result in (None, "", [], {}) else _short(result)
    parts = []
    for name, value in result.items():
        if name in _RESULT_SKIP or isinstance(value, (dict, list, tuple)) or value is None:
            continue
        parts.append(f"{name.replace('_', ' ')} {_short(value)}")
        if len(parts) == limit:
            break
    return " · ".join(parts)


def _short(value) -> str:
    from pathlib import PurePath

    from .widgets import plain

    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1 else f"{value:,.1f}"
    text = str(value)
    if "/" in text and len(text) > 40:
        text = PurePath(text).name
    return plain(text if len(text) <= 60 else text[:57] + "…")


def watch(job_ids: list[int], on_done_rerun: bool = True) -> None:
    """Poll the given jobs every second; rerun the whole page once they have all finished.

    Jobs that are already finished are shown once and not polled (rerunning the page for them would
    rerun it forever)."""
    q = queue()
    if all(job.status not in ("queued", "running") for job in (q.get(i) for i in job_ids)):
        for i in job_ids:
            show_job(q.get(i))
        return

    @st.fragment(run_every=1.0)
    def _poll():
        q = queue()
        jobs = [q.get(i) for i in job_ids]
        for job in jobs:
            show_job(job)
        if on_done_rerun and all(j.status not in ("queued", "running") for j in jobs):
            st.session_state.pop("watching", None)
            st.rerun()

    _poll()
