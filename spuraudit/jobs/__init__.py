"""Background jobs: a SQLite queue, worker processes, and what job functions get to report with.

Jobs are processes, not threads of the web server. A job is a row in SQLite; worker processes
claim rows atomically (each job runs exactly once, with any number of workers) and run each in a
child process that can really be stopped; pages poll the row. Closing the browser or restarting
the app loses nothing.

    from spuraudit.jobs import JobQueue, ensure_worker

    queue = JobQueue(paths.jobs_db())
    job_id = queue.submit("demo.build", {"base": "/data"}, title="Build the demo")
    ensure_worker(queue.db_path)
    queue.get(job_id).progress   # poll

A job function: `fn(ctx: JobContext, **params) -> dict | None` (see `context` and `kinds`).
"""

from __future__ import annotations

from .context import JobCancelled, JobContext, LocalContext
from .job import ACTIVE, CANCELLED, DONE, FAILED, FINISHED, QUEUED, RUNNING, STATUSES, Job
from .kinds import KINDS, UnknownJobKind, register_kind, resolve_kind
from .launch import ensure_worker, live_workers, start_worker_process, worker_log_path
from .queue import JobQueue

__all__ = [
    "ACTIVE", "CANCELLED", "DONE", "FAILED", "FINISHED", "KINDS", "QUEUED", "RUNNING", "STATUSES",
    "Job", "JobCancelled", "JobContext", "JobQueue", "LocalContext", "UnknownJobKind",
    "ensure_worker", "live_workers", "register_kind",
    "resolve_kind", "run_worker", "start_worker_process", "worker_log_path", "worker_main",
]


def __getattr__(name: str) -> object:
    # The worker module is imported on first use only: `python -m spuraudit.jobs.worker` imports this
    # package first, and an eager import would load the module twice (runpy warns about that).
    if name in ("run_worker", "worker_main"):
        from . import worker

        return worker.run_worker if name == "run_worker" else worker.main
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
