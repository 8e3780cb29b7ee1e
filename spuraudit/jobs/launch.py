"""Starting workers on demand, so that submitting a job from the web app never blocks on the work.

    job_id = queue.submit("demo.build", {...})
    ensure_worker(queue.db_path)   # returns at once; a detached worker runs the job

The worker is its own session (it survives the app being stopped or restarted) and exits by
itself after `idle_exit` seconds without work. Its output goes to `<db stem>-worker.log` next to
the database.
"""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

from .queue import JobQueue
from .util import child_env, python_executable

_MAX_LOG_BYTES = 5 * 1024 * 1024

# Workers this process started: kept so they can be reaped when they exit (no zombies pile up in a
# long-running app) and so Python does not warn about dropping a running Popen.
_spawned: list[subprocess.Popen] = []


def worker_log_path(db_path: str | Path) -> Path:
    """Where workers started by `ensure_worker` write their output."""
    db = Path(db_path).resolve()
    return db.with_name(f"{db.stem}-worker.log")


def live_workers(db_path: str | Path) -> list[int]:
    """Pids of the worker processes currently serving the database at `db_path`."""
    return JobQueue(db_path).live_worker_pids()


def start_worker_process(db_path: str | Path, idle_exit: float | None = 600.0,
                         poll_interval: float = 0.5) -> subprocess.Popen:
    """Start a detached worker process for `db_path` (not registered; see `ensure_worker`)."""
    db = Path(db_path).resolve()
    log = worker_log_path(db)
    if log.is_file() and log.stat().st_size > _MAX_LOG_BYTES:
        log.replace(log.with_name(log.name + ".1"))  # keep one old log; the rest is history
    cmd = [python_executable(), "-m", "spuraudit.jobs.worker", "--db", str(db), "--poll", str(poll_interval)]
    if idle_exit is not None:
        cmd += ["--idle-exit", str(idle_exit)]
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                env=child_env(), start_new_session=True, close_fds=True)
    _spawned.append(proc)
    # Wait on it from a daemon thread: the exit status is collected the moment the worker exits, so it
    # never lingers as a <defunct> child of a long-running app.
    threading.Thread(target=_reap_when_done, args=(proc,), name=f"reap-worker-{proc.pid}", daemon=True).start()
    return proc


def _reap_when_done(proc: subprocess.Popen) -> None:
    proc.wait()
    _reap()


def ensure_worker(db_path: str | Path, idle_exit: float | None = 600.0, poll_interval: float = 0.5) -> int:
    """Make sure a worker serves `db_path`, starting a detached one if none is alive; returns its pid.

    Safe to call on every submit: checking for a live worker and registering a new one happen in one
    database transaction, so concurrent callers start at most one worker between them.
    """
    _reap()
    queue = JobQueue(db_path)
    pid, _started = queue.live_worker_or_start(
        lambda: start_worker_process(queue.db_path, idle_exit=idle_exit, poll_interval=poll_interval).pid)
    return pid


def _reap() -> None:
    _spawned[:] = [p for p in _spawned if p.poll() is None]
