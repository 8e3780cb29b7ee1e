"""Worker processes: claim queued jobs and run each in a child process.

    python -m spuraudit.jobs.worker --db PATH [--workers N] [--once] [--idle-exit SECONDS]

A worker loops: claim the oldest queued job (atomically; any number of workers may share a
database), start `python -m spuraudit.jobs.runner` for it, and watch that process. While it runs,
the worker beats the job's heartbeat and reads the row; when a cancel is requested (or the row
stops being "running", e.g. recovered elsewhere) it sends SIGTERM to the job's process group and
SIGKILL after a grace period. When the child exits without having written an outcome, the job is
failed with the exit status and the end of its log.
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from .. import paths
from ..atomic import clean_stale_temp
from .job import CANCELLED, RUNNING, Job
from .queue import JobQueue
from .runner import FAILED_PREFIX
from .util import child_env, kill_group, python_executable, signal_name, utc_now

HEARTBEAT_EVERY_S = 2.0
RECOVER_EVERY_S = 15.0
DEFAULT_CANCEL_GRACE_S = 5.0


def _say(message: str) -> None:
    print(f"{utc_now()} worker {os.getpid()}: {message}", file=sys.stderr, flush=True)


def run_worker(db_path: str | Path, poll_interval: float = 0.5, idle_exit: float | None = None,
               once: bool = False, cancel_grace: float = DEFAULT_CANCEL_GRACE_S,
               jobs_dir: str | Path | None = None, stop: threading.Event | None = None) -> int:
    """Run jobs from the queue at `db_path` until stopped; returns how many jobs this worker ran.

    Args:
        poll_interval: seconds between looks at the queue while idle.
        idle_exit: exit after this many seconds without a job (None: never).
        once: exit as soon as the queue has no queued job.
        cancel_grace: seconds between SIGTERM and SIGKILL when stopping a job.
        jobs_dir: the queue's per-job folders (default: next to the database).
        stop: an event that stops the worker; SIGTERM/SIGINT set it too (in the main thread).
    """
    queue = JobQueue(db_path, jobs_dir=jobs_dir)
    pid = os.getpid()
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        def on_signal(signum: int, frame: Any) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    queue.register_worker(pid)
    _clean_leftovers(Path(db_path).parent)
    for job_id in queue.recover_stale():
        _say(f"job {job_id}: its worker had died; marked failed")
    _say(f"serving {queue.db_path}")
    ran = 0
    last_recover = last_touch = time.monotonic()
    idle_since = time.monotonic()
    try:
        while not stop.is_set():
            now = time.monotonic()
            if now - last_recover >= RECOVER_EVERY_S:
                queue.recover_stale()
                last_recover = now
            try:
                job = queue.claim(pid)
            except sqlite3.OperationalError as exc:
                _say(f"database busy ({exc}); retrying")
                stop.wait(poll_interval)
                continue
            if job is not None:
                run_claimed(queue, job, pid, stop, cancel_grace=cancel_grace, tick=min(poll_interval, 0.25))
                ran += 1
                idle_since = last_touch = time.monotonic()
                continue
            idle_for = time.monotonic() - idle_since
            if once or (idle_exit is not None and idle_for >= idle_exit):
                # Leave only if nothing was queued meanwhile (checked while deregistering, in one
                # transaction), so a job submitted right now is never left without a worker.
                if queue.unregister_worker(pid, only_if_idle=True):
                    break
                continue
            if now - last_touch >= HEARTBEAT_EVERY_S:
                queue.touch_worker(pid)
                last_touch = now
            stop.wait(poll_interval)
    finally:
        queue.unregister_worker(pid)
        _say(f"exiting after {ran} job(s)")
        _leave_ray()
    return ran


def _leave_ray() -> None:
    """Disconnect from Ray (stopping a private "local" instance) if this worker used it."""
    import sys as _sys

    ray = _sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


def run_claimed(queue: JobQueue, job: Job, worker_pid: int, stop: threading.Event,
                cancel_grace: float = DEFAULT_CANCEL_GRACE_S, tick: float = 0.25) -> str:
    """Run a job this worker has claimed in a child process and wait for it; returns its final status.

    With the Ray backend ($SPURAUDIT_JOBS_BACKEND=ray) the job runs as a task on the cluster instead."""
    from . import ray_backend

    if ray_backend.backend_name() == "ray":
        return ray_backend.run_claimed(queue, job, worker_pid, stop, _stop_reason, _say, cancel_grace=cancel_grace,
                                       tick=tick, heartbeat_every=HEARTBEAT_EVERY_S)
    work_dir = queue.work_dir(job.id)
    work_dir.mkdir(parents=True, exist_ok=True)
    log_path = work_dir / "log.txt"
    cmd = [python_executable(), "-m", "spuraudit.jobs.runner", str(queue.db_path), str(job.id),
           "--parent", str(worker_pid), "--jobs-dir", str(queue.jobs_dir)]
    _say(f"job {job.id} ({job.kind}) starting")
    try:
        with open(log_path, "ab") as log:
            # A session of its own: the job's process group can be stopped as a whole (it may have
            # started processes of its own), and a terminal's Ctrl-C goes to the worker only.
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    env=child_env(), start_new_session=True, close_fds=True)
    except OSError as exc:
        queue.fail(job.id, f"could not start the job process: {exc}", message="could not start")
        return queue.get(job.id).status
    queue.set_runner(job.id, proc.pid, log_path)
    job = replace(job, runner_pid=proc.pid, log_path=str(log_path))  # what a restored row must hold

    reason: str | None = None  # why the worker is stopping the child, once it is
    stopping_since = 0.0
    ended_since: float | None = None  # when the row was first seen finished while the child still ran
    last_beat = time.monotonic()
    while True:
        try:
            returncode = proc.wait(timeout=tick)
            break
        except subprocess.TimeoutExpired:
            pass
        now = time.monotonic()
        try:
            if now - last_beat >= HEARTBEAT_EVERY_S:
                queue.touch_worker(worker_pid, job.id)
                last_beat = now
            found, ended = _stop_reason(queue, job, stop) if reason is None else (None, False)
        except sqlite3.OperationalError as exc:
            # A database locked for longer than the busy timeout must not kill the worker (and orphan
            # the job); try again on the next tick.
            _say(f"job {job.id}: database busy ({exc}); retrying")
            continue
        if reason is None:
            reason = found
            if ended:
                # The row is finished: normally the child wrote its outcome and is exiting by itself;
                # only if it lingers (or the row was recovered elsewhere) is it stopped.
                ended_since = now if ended_since is None else ended_since
                if now - ended_since < cancel_grace:
                    reason = None
            if reason is not None:
                _say(f"job {job.id}: stopping its process ({reason})")
                kill_group(proc.pid, signal.SIGTERM)
                stopping_since = now
        elif now - stopping_since >= cancel_grace:
            kill_group(proc.pid, signal.SIGKILL)

    if reason is not None:
        # Processes the job started in its group may outlive it; they are part of what was stopped.
        kill_group(proc.pid, signal.SIGKILL)
    return _settle(queue, job, returncode, reason)


LOST_NOTE = "the job database was lost while this job ran; its row was restored by its worker"


def _stop_reason(queue: JobQueue, job: Job, stop: threading.Event) -> tuple[str | None, bool]:
    """Why the job's process should be stopped (None: it should not), and whether its row has ended."""
    if stop.is_set():
        return "worker stopped", False
    job_id = job.id
    try:
        row = queue.get(job_id)
    except KeyError:
        if queue.restore_if_lost(job, LOST_NOTE):
            _say(f"job {job_id}: {LOST_NOTE}")
            return None, False
        return "job deleted", False
    if row.status != RUNNING:
        return f"job is {row.status}", True
    if row.cancel_requested:
        return "cancelled", False
    return None, False


def _settle(queue: JobQueue, job: Job, returncode: int, reason: str | None) -> str:
    """Give the row its final status when the child did not write one itself."""
    job_id = job.id
    try:
        row = queue.get(job_id)
    except KeyError:
        if not queue.restore_if_lost(job, LOST_NOTE):
            return "deleted"
        row = queue.get(job_id)
    if row.status == RUNNING:
        if reason == "cancelled":
            queue.mark_cancelled(job_id)
        elif reason == "worker stopped":
            queue.fail(job_id, "the worker was stopped while the job ran", message="stopped")
        else:
            tail = row.log_tail(40)
            said = [ln[len(FAILED_PREFIX):] for ln in tail.splitlines() if ln.startswith(FAILED_PREFIX)]
            queue.fail(job_id, f"the job process ended ({signal_name(returncode)}) without reporting a result"
                               + (f"\n\nlast lines of its log:\n{tail}" if tail else ""),
                       message=(f"{said[-1]} (the job process could not record this itself)" if said
                                else f"job process ended ({signal_name(returncode)})"))
        row = queue.get(job_id)
    _say(f"job {job_id}: {row.status}" + (f" ({row.message})" if row.status != CANCELLED and row.message else ""))
    return row.status


def _spawn_workers(args: argparse.Namespace) -> int:
    """Run `args.workers` worker processes and wait for them; a signal here stops them all."""
    argv = [python_executable(), "-m", "spuraudit.jobs.worker", "--db", args.db,
            "--poll", str(args.poll), "--cancel-grace", str(args.cancel_grace)]
    if args.once:
        argv.append("--once")
    if args.idle_exit is not None:
        argv += ["--idle-exit", str(args.idle_exit)]
    procs = [subprocess.Popen(argv, env=child_env()) for _ in range(args.workers)]

    def forward(signum: int, frame: Any) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = [p.wait() for p in procs]
    return max((c for c in codes if c > 0), default=0)


def _clean_leftovers(home: Path) -> None:
    """Remove the temporary folders of outputs whose writers were killed (they are never finished)."""
    for parent in (paths.models_dir(home), paths.projects_dir(home)):
        for entry in clean_stale_temp(parent):
            _say(f"removed the unfinished output {entry}")


def main(argv: list[str] | None = None) -> int:
    """The `worker` command line."""
    parser = argparse.ArgumentParser(prog="python -m spuraudit.jobs.worker", description="run background jobs")
    parser.add_argument("--db", required=True, help="job database (SQLite file)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes to run (default 1)")
    parser.add_argument("--once", action="store_true", help="run the queued jobs, then exit")
    parser.add_argument("--idle-exit", type=float, default=None, help="exit after this many idle seconds")
    parser.add_argument("--poll", type=float, default=0.5, help="seconds between looks at an idle queue")
    parser.add_argument("--cancel-grace", type=float, default=DEFAULT_CANCEL_GRACE_S,
                        help="seconds between SIGTERM and SIGKILL when stopping a job")
    parser.add_argument("--backend", choices=("local", "ray"), default=None,
                        help="where jobs run: local processes (default) or a Ray cluster "
                             "($SPURAUDIT_RAY_ADDRESS, default 'auto'); also $SPURAUDIT_JOBS_BACKEND")
    args = parser.parse_args(argv)
    if args.backend:
        os.environ["SPURAUDIT_JOBS_BACKEND"] = args.backend
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.workers > 1:
        return _spawn_workers(args)
    run_worker(args.db, poll_interval=args.poll, idle_exit=args.idle_exit, once=args.once,
               cancel_grace=args.cancel_grace)
    return 0


if __name__ == "__main__":
    sys.exit(main())
