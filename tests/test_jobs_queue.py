"""The job queue, job context and kinds, in this process (no workers)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from contextlib import closing

import pytest

from spuraudit.jobs import (JobCancelled, JobContext, JobQueue, LocalContext, UnknownJobKind, register_kind,
                            resolve_kind)
from spuraudit.jobs.kinds import KINDS
from spuraudit.jobs.util import pid_alive

KIND = "tests.jobfuncs:steps"


@pytest.fixture
def queue(tmp_path) -> JobQueue:
    return JobQueue(tmp_path / "jobs.db")


def _dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_submit_get_list(queue, tmp_path):
    a = queue.submit(KIND, {"n": 3}, title="first")
    b = queue.submit("tests.jobfuncs:boom", {})
    job = queue.get(a)
    assert (job.kind, job.title, job.params, job.status, job.progress) == (KIND, "first", {"n": 3}, "queued", 0.0)
    assert job.is_active and not job.is_finished and job.result is None and job.label == f"#{a} first"
    assert [j.id for j in queue.list()] == [b, a]  # newest first
    assert [j.id for j in queue.list(kind=KIND)] == [a]
    assert [j.id for j in queue.list(status=("running", "done"))] == []
    assert queue.counts()["queued"] == 2
    assert queue.jobs_dir == tmp_path / "jobs"
    with pytest.raises(KeyError):
        queue.get(999)
    with closing(sqlite3.connect(tmp_path / "jobs.db")) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_submit_rejects_unknown_kinds_and_unjsonable_params(queue):
    with pytest.raises(UnknownJobKind):
        queue.submit("no.such.kind", {})
    with pytest.raises(UnknownJobKind):
        queue.submit("module:", {})
    with pytest.raises(TypeError):
        queue.submit(KIND, {"x": object()})
    assert queue.list() == []


def test_registered_kind_is_stored_as_its_target(queue, monkeypatch):
    monkeypatch.setitem(KINDS, "test.steps", KIND)
    job = queue.get(queue.submit("test.steps", {}))
    assert job.target == KIND  # a worker process resolves it even without the registration
    register_kind("test.other", "tests.jobfuncs:boom")
    try:
        assert resolve_kind("test.other").__name__ == "boom"
    finally:
        KINDS.pop("test.other")


def test_claim_takes_oldest_once_and_finish(queue):
    first = queue.submit(KIND, {})
    second = queue.submit(KIND, {})
    job = queue.claim(os.getpid())
    assert job.id == first and job.status == "running" and job.worker_pid == os.getpid() and job.started
    assert queue.claim(os.getpid()).id == second
    assert queue.claim(os.getpid()) is None
    assert queue.set_progress(first, 1.7, "almost")  # clamped
    assert queue.get(first).progress == 1.0
    assert queue.finish(first, {"ok": True})
    done = queue.get(first)
    assert done.status == "done" and done.result == {"ok": True} and done.finished and done.is_finished
    assert not queue.finish(first, {"ok": False})  # only a running job can end
    assert not queue.set_progress(first, 0.1)
    assert queue.fail(second, "Traceback...\nValueError: nope")
    assert queue.get(second).message == "ValueError: nope"


def test_claim_is_atomic_across_threads(queue):
    ids = [queue.submit(KIND, {}) for _ in range(20)]
    claimed: list[int] = []
    lock = threading.Lock()

    def grab():
        while (job := queue.claim(os.getpid())) is not None:
            with lock:
                claimed.append(job.id)

    threads = [threading.Thread(target=grab) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == ids


def test_cancel_retry_delete(queue):
    queued = queue.submit(KIND, {"n": 1}, title="t")
    assert queue.cancel(queued)
    assert queue.get(queued).status == "cancelled"
    assert not queue.cancel(queued)  # already finished
    running = queue.submit(KIND, {})
    queue.claim(os.getpid())
    assert queue.cancel(running)
    job = queue.get(running)
    assert job.status == "running" and job.cancel_requested and queue.cancel_requested(running)
    with pytest.raises(ValueError):
        queue.delete(running)
    with pytest.raises(ValueError):
        queue.retry(running)
    queue.mark_cancelled(running)
    again = queue.retry(queued)
    assert queue.get(again).status == "queued" and queue.get(again).params == {"n": 1}
    assert queue.get(again).title == "t"
    queue.work_dir(queued).mkdir(parents=True)
    assert queue.delete(queued) and not queue.work_dir(queued).exists()
    assert not queue.delete(queued)


def test_recover_stale_fails_jobs_of_dead_workers(queue):
    orphan = queue.submit(KIND, {})
    healthy = queue.submit(KIND, {})
    queue.claim(_dead_pid())
    queue.claim(os.getpid())
    assert queue.recover_stale() == [orphan]
    job = queue.get(orphan)
    assert job.status == "failed" and job.message == "worker died" and "gone" in job.error
    assert queue.get(healthy).status == "running"
    # Fallback for reused pids: a live pid with a heartbeat far in the past.
    with closing(sqlite3.connect(queue.db_path)) as conn, conn:
        conn.execute("UPDATE jobs SET heartbeat = '2000-01-01T00:00:00.000+00:00' WHERE id = ?", (healthy,))
    assert queue.recover_stale() == [healthy]
    assert "no heartbeat" in queue.get(healthy).error


def test_context_progress_is_rate_limited_but_keeps_the_last_report(queue):
    job_id = queue.submit(KIND, {})
    queue.claim(os.getpid())
    ctx = JobContext(queue, job_id, min_interval=10.0)
    assert ctx.work_dir == queue.work_dir(job_id) and ctx.work_dir.is_dir()
    ctx.progress(0.1, "first")  # written at once
    ctx.progress(0.2, "second")  # held back
    ctx.progress(0.3)  # held back; keeps "second" as the message
    assert (queue.get(job_id).progress, queue.get(job_id).message) == (0.1, "first")
    ctx.flush()
    assert (queue.get(job_id).progress, queue.get(job_id).message) == (0.3, "second")
    ctx.progress(1.0, "end")  # the end is always written
    assert queue.get(job_id).progress == 1.0


def test_context_iterate_log_and_cancel(queue):
    job_id = queue.submit(KIND, {})
    queue.claim(os.getpid())
    ctx = JobContext(queue, job_id, min_interval=0.0, cancel_poll_interval=0.0)
    assert list(ctx.iterate(["a", "b", "c", "d"], message="item", start=0.5, end=1.0)) == ["a", "b", "c", "d"]
    job = queue.get(job_id)
    assert job.progress == 1.0 and job.message == "item 4/4"
    ctx.log("hello\nworld")
    lines = ctx.log_path.read_text().splitlines()
    assert [ln.split(" ", 1)[1] for ln in lines] == ["hello", "world"] and lines[0][:4].isdigit()
    assert not ctx.cancelled()
    queue.cancel(job_id)
    assert ctx.cancelled()
    with pytest.raises(JobCancelled):
        ctx.check_cancelled()
    with pytest.raises(JobCancelled):
        list(ctx.iterate(range(3)))
    assert not isinstance(JobCancelled(), Exception)  # a job's `except Exception` cannot swallow it


def test_local_context_runs_a_job_function_without_a_queue(tmp_path):
    from tests.jobfuncs import steps

    ctx = LocalContext(tmp_path / "job")
    result = steps(ctx, n=3, delay=0)
    assert result["sum"] == 3 and ctx.reports[-1] == (1.0, "step 3/3")
    assert "step 2" in ctx.log_path.read_text()


def test_pid_alive():
    assert pid_alive(os.getpid())
    assert not pid_alive(_dead_pid())
    assert not pid_alive(None) and not pid_alive(0)
    if not (hasattr(os, "waitid") and os.path.exists("/proc")):
        return
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        os.waitid(os.P_PID, zombie.pid, os.WEXITED | os.WNOWAIT)  # exited, deliberately not reaped
        assert not pid_alive(zombie.pid)  # a zombie counts as dead
    finally:
        zombie.wait()


def test_job_row_json_roundtrip(queue):
    job_id = queue.submit(KIND, {"nested": {"a": [1, 2]}})
    queue.claim(os.getpid())
    queue.finish(job_id, [1, "two", None])
    with closing(sqlite3.connect(queue.db_path)) as conn:
        raw = conn.execute("SELECT params, result FROM jobs WHERE id = ?", (job_id,)).fetchone()
    assert json.loads(raw[0]) == {"nested": {"a": [1, 2]}} and queue.get(job_id).result == [1, "two", None]


def test_every_built_in_kind_names_a_real_job_function():
    """The pages and the CLI submit these names; each must resolve to a function taking (ctx, **params)."""
    import inspect

    from spuraudit.jobs.kinds import KINDS, resolve_kind

    assert {"demo.build", "features.extract", "mitigate.run", "autolabel.run"} <= set(KINDS)
    for kind in KINDS:
        fn = resolve_kind(kind)
        assert next(iter(inspect.signature(fn).parameters)) == "ctx", kind
