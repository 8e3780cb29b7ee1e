"""Jobs: everything running in the background, with live progress, logs, errors and cancel."""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from spuraudit import paths
from spuraudit.ui import jobs as ui_jobs
from spuraudit.ui.auth import allowed
from spuraudit.ui.nav import page_setup

page_setup("Jobs")
st.title("Background jobs")
st.caption(
    "Jobs run in worker processes, not in the web server: closing the browser or restarting the app "
    "loses nothing. A worker that dies marks its job failed (its output never appears half-written)."
)

queue = ui_jobs.queue()
queue.recover_stale()

lost = queue.lost_notes()
if lost:  # the job list was lost and recreated: say so, or those jobs would silently vanish from the list
    st.warning(f"The job list was lost and recreated {len(lost)} time{'s' if len(lost) != 1 else ''}; "
               "jobs listed before that are no longer shown (their folders and logs are kept).")
    with st.expander("What was lost"):
        st.code("\n".join(lost[-50:]), language="text")

from spuraudit.jobs import live_workers  # noqa: E402

workers = live_workers(paths.jobs_db())
c1, c2 = st.columns([3, 1])
c1.write(f"**{len(workers)}** worker process{'es' if len(workers) != 1 else ''} alive "
         f"({', '.join(str(w) for w in workers) or 'none; one starts when a job is submitted'}).")
if c2.button("Start a worker", disabled=bool(workers) or not allowed("admin")) and allowed("admin"):
    from spuraudit.jobs import ensure_worker

    ensure_worker(paths.jobs_db())
    st.rerun()

from spuraudit.jobs import ray_backend  # noqa: E402

if ray_backend.backend_name() == "ray":
    st.write(f"Backend: **Ray cluster** (`{os.environ.get(ray_backend.ADDRESS_ENV) or 'auto'}`): "
             "workers send each job to the cluster as a task; Cancel stops the task there.")
else:
    st.write("Backend: **local processes** (one per job, started by the worker).")

status_filter = st.segmented_control("Show", ["active", "all", "failed"], default="all", key="jobs_filter")


def _where(job) -> str:
    """'Ray · host · cuda:0' from the note the job's process leaves in its folder ('' before it starts)."""
    place = ray_backend.read_placement(queue.work_dir(job.id))
    if not place:
        return ""
    backend = "Ray" if place.get("backend") == "ray" else "local"
    parts = [backend, place.get("host"), place.get("device")]
    return " · runs on " + " · ".join(str(p) for p in parts if p)


def _when(timestamp: str | None) -> str:
    """A job timestamp (ISO, UTC, milliseconds) as 'YYYY-MM-DD HH:MM:SS UTC'."""
    return "–" if not timestamp else timestamp[:19].replace("T", " ") + " UTC"


@st.fragment(run_every=1.0)
def job_list() -> None:
    jobs = queue.list(limit=50)
    if status_filter == "active":
        jobs = [j for j in jobs if j.status in ("queued", "running")]
    elif status_filter == "failed":
        jobs = [j for j in jobs if j.status == "failed"]
    if not jobs:
        st.info("No jobs yet.")
        return
    for job in jobs:
        with st.container(border=True):
            top, buttons = st.columns([5, 1])
            with top:
                ui_jobs.show_job(job)
                st.caption(f"{job.kind}{_where(job)} · created {_when(job.created)} · started {_when(job.started)} · "
                           f"finished {_when(job.finished)}")
            with buttons:
                if job.status in ("queued", "running"):
                    if st.button("Cancel", key=f"cancel-{job.id}", disabled=not allowed("admin")) and allowed("admin"):
                        queue.cancel(job.id)
                        st.rerun()
                elif st.button("Run again", key=f"retry-{job.id}", disabled=not allowed("admin")) and allowed("admin"):
                    # retry() reuses the import path stored in the row: a kind registered by another
                    # page (or process) need not be registered in this one.
                    from spuraudit.jobs import ensure_worker

                    queue.retry(job.id)
                    ensure_worker(queue.db_path)
                    st.rerun()
            with st.expander("Details"):
                st.json({"params": job.params, "result": job.result})
                if job.log_path and Path(job.log_path).is_file():
                    lines = Path(job.log_path).read_text(errors="replace").splitlines()
                    st.code("\n".join(lines[-200:]) or "(empty log)", language="text")


job_list()
