"""The process that runs one job: `python -m spuraudit.jobs.runner DB JOB_ID [--parent PID]`.

A worker starts one runner per job (in its own session, with stdout/stderr going to the job's log)
and watches it. The runner imports the job's function, calls it with a `JobContext`, and writes
the outcome into the row itself: the result (done), the full traceback (failed), or cancelled.

- SIGTERM (the worker's cancel) becomes `JobCancelled` in the job, so `finally` blocks and
  `spuraudit.atomic.atomic_dir` clean up before the process exits.
- If the worker dies, the runner notices (its parent changes), stops the job the same way and
  marks it failed: an orphaned job must not keep running, or finish, unobserved.
"""

from __future__ import annotations

import argparse
import errno
import faulthandler
import io
import json
import os
import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import Any

from .context import JobCancelled, JobContext
from .kinds import load_target, target_for
from .job import RUNNING
from .queue import JobQueue

EXIT_DONE, EXIT_FAILED, EXIT_CANCELLED = 0, 1, 2
FAILED_PREFIX = "job failed: "  # the log line that carries a failure's one-line message
_WATCH_INTERVAL_S = 0.2
_ORPHAN_GRACE_S = 10.0  # after this, an orphaned job that ignores SIGTERM is killed outright


class _State:
    """Flags shared by the main thread, the signal handler and the watch thread."""

    def __init__(self) -> None:
        self.finishing = False  # the job function has returned: do not interrupt the final writes
        self.orphaned = False
        self.stop = threading.Event()


def _watch(ctx: JobContext, state: _State, parent_pid: int | None) -> None:
    """Flush held-back progress now and then; stop the job if the worker that started it dies."""
    orphaned_at: float | None = None
    ticks = 0
    while not state.stop.wait(_WATCH_INTERVAL_S):
        ticks += 1
        if ticks % 3 == 0:
            try:
                ctx.flush()
            except Exception:  # noqa: BLE001 - a busy database must not kill the watcher
                pass
        if parent_pid is not None and os.getppid() != parent_pid and not state.finishing:
            if orphaned_at is None:
                state.orphaned = True
                orphaned_at = ticks * _WATCH_INTERVAL_S
                os.kill(os.getpid(), signal.SIGTERM)
            elif ticks * _WATCH_INTERVAL_S - orphaned_at > _ORPHAN_GRACE_S:
                os.kill(os.getpid(), signal.SIGKILL)


def run_job(db_path: str | Path, job_id: int, parent_pid: int | None = None,
            jobs_dir: str | Path | None = None) -> int:
    """Run job `job_id` of the queue at `db_path` in this process; returns an exit code."""
    queue = JobQueue(db_path, jobs_dir=jobs_dir)
    job = queue.get(job_id)
    if job.status != RUNNING:
        return EXIT_CANCELLED  # cancelled or recovered before this process got going
    ctx = JobContext(queue, job.id)
    state = _State()

    def on_term(signum: int, frame: Any) -> None:
        ctx.request_cancel()
        if not state.finishing:
            raise JobCancelled(f"job {job.id} was stopped")

    signal.signal(signal.SIGTERM, on_term)
    faulthandler.enable()  # a crash in native code still leaves a traceback in the log (stderr)
    watcher = threading.Thread(target=_watch, args=(ctx, state, parent_pid), daemon=True)
    watcher.start()
    try:
        ctx.log(f"job {job.id} ({job.kind}) started in process {os.getpid()}")
        _record_placement(ctx.work_dir)
        fn = load_target(job.target or target_for(job.kind))
        result = fn(ctx, **job.params)
        state.finishing = True
        ctx.flush()
        try:
            json.dumps(result)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"the job returned a result that is not JSON-able: {exc}") from exc
        _report(queue, job, lambda: queue.finish(job.id, result))
        ctx.log("done")
        return EXIT_DONE
    except JobCancelled:
        state.finishing = True
        _safe(ctx.flush)
        if state.orphaned:
            queue.fail(job.id, "worker died: its job process stopped the job", message="worker died")
            ctx.log("worker died: stopped")
            return EXIT_FAILED
        if _cancel_was_requested(queue, job.id):
            queue.mark_cancelled(job.id)
            ctx.log("cancelled")
            return EXIT_CANCELLED
        # Terminated without a cancel request: the worker is shutting down (or someone killed us).
        queue.fail(job.id, "the job process was terminated (SIGTERM) before the job finished, without a "
                           "cancel request: its worker was stopped", message="stopped")
        ctx.log("stopped: the worker was stopped")
        return EXIT_FAILED
    except BaseException as exc:  # noqa: BLE001 - every failure must reach the row, SystemExit included
        state.finishing = True
        text = traceback.format_exc()
        _safe(ctx.flush)
        _safe(lambda: ctx.log(text))
        message = _one_line(exc)
        print(f"{FAILED_PREFIX}{message}", flush=True)  # in the log, for the worker if the row cannot be written
        _report(queue, job, lambda: queue.fail(job.id, text, message=message))
        return EXIT_FAILED
    finally:
        state.stop.set()


def _record_placement(work_dir: Path) -> None:
    """Where this job runs, for the Jobs page: this machine, this process, its default device."""
    import socket

    from .ray_backend import process_device, write_placement

    try:
        write_placement(work_dir, {"backend": "local", "host": socket.gethostname(), "pid": os.getpid(),
                                   "device": process_device()})
    except Exception:  # noqa: BLE001 - a missing note must not fail the job
        pass


def _report(queue: JobQueue, job, write) -> None:
    """Write the outcome; if the row vanished because the database was recreated, put it back first so
    the outcome is not lost."""
    if not write() and queue.restore_if_lost(job, "the job database was lost while this job ran; its row "
                                                    "was restored by its job process"):
        write()


def _one_line(exc: BaseException) -> str:
    """The row's message for a failure: a full disk says so and names the file."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)):
        where = exc.filename or _file_being_written(exc) or "a file"
        return f"disk full while writing {where} ({exc.strerror}); free some space and run the job again"
    return f"{type(exc).__name__}: {exc}"


def _file_being_written(exc: BaseException) -> str | None:
    """The name of the innermost open file for writing in the failure's traceback (a write to an open
    file raises an OSError without a file name)."""
    found = None
    tb = exc.__traceback__
    while tb is not None:
        for value in tb.tb_frame.f_locals.values():
            if isinstance(value, io.IOBase) and isinstance(getattr(value, "name", None), str) \
                    and any(m in getattr(value, "mode", "") for m in "wax+"):
                found = value.name
        tb = tb.tb_next
    return found


def _cancel_was_requested(queue: JobQueue, job_id: int) -> bool:
    try:
        return queue.get(job_id).cancel_requested
    except KeyError:
        return True  # deleted: nothing to report to


def _safe(fn: Any) -> None:
    try:
        fn()
    except Exception:  # noqa: BLE001 - best effort while reporting another outcome
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spuraudit.jobs.runner", description="run one queued job")
    parser.add_argument("db")
    parser.add_argument("job_id", type=int)
    parser.add_argument("--parent", type=int, default=None, help="pid of the worker; stop if it dies")
    parser.add_argument("--jobs-dir", default=None)
    args = parser.parse_args(argv)
    return run_job(args.db, args.job_id, parent_pid=args.parent, jobs_dir=args.jobs_dir)


if __name__ == "__main__":
    sys.exit(main())
