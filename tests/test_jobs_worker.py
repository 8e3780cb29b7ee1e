"""Workers running jobs in real processes: results, failures, cancels, killed workers, restarts."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from spuraudit.atomic import clean_stale_temp
from spuraudit.jobs import JobQueue, ensure_worker, live_workers
from spuraudit.jobs.util import pid_alive
from tests.jobfuncs import REPO_ROOT, start_worker, stop_process, wait_for

pytestmark = pytest.mark.skipif(os.name != "posix", reason="process groups and signals are POSIX")


def _finished(queue: JobQueue, job_id: int):
    job = queue.get(job_id)
    return job if job.is_finished else None


@pytest.fixture
def db(tmp_path) -> Path:
    return tmp_path / "jobs.db"


@pytest.fixture
def worker(db):
    """A worker process serving `db` for the length of the test."""
    proc = start_worker(db)
    yield proc
    stop_process(proc)


def _kill_both(worker, runner_pid: int) -> None:
    """SIGKILL a worker and its job process as one event: both are frozen first, so neither can
    react to the other's death (the job process would otherwise stop itself cleanly)."""
    os.kill(worker.pid, signal.SIGSTOP)
    os.kill(runner_pid, signal.SIGSTOP)
    os.kill(worker.pid, signal.SIGKILL)
    os.kill(runner_pid, signal.SIGKILL)
    worker.wait(10)
    wait_for(lambda: not pid_alive(runner_pid), timeout=5, what="the job process to die")


def test_a_job_runs_and_reports(db, worker):
    queue = JobQueue(db)
    job_id = queue.submit("tests.jobfuncs:steps", {"n": 4, "delay": 0.05}, title="four steps")
    job = wait_for(lambda: _finished(queue, job_id), what="the job to finish")
    assert job.status == "done", job.error
    assert job.result["n"] == 4 and job.result["sum"] == 6
    assert job.progress == 1.0 and job.message == "done"
    assert job.worker_pid == worker.pid and job.runner_pid == job.result["pid"] != worker.pid
    assert job.started and job.finished and job.finished >= job.started
    wait_for(lambda: not pid_alive(job.runner_pid), timeout=5, what="the job process to exit")
    log = Path(job.log_path).read_text()
    assert Path(job.log_path) == queue.work_dir(job_id) / "log.txt"
    for text in ("started in process", "step 0", "step 3", "printed by the job", "done"):
        assert text in log


def test_job_functions_see_the_callers_folder_and_environment(db, tmp_path, monkeypatch):
    monkeypatch.setenv("SPURAUDIT_HOME", str(tmp_path))
    queue = JobQueue(db)
    job_id = queue.submit("tests.jobfuncs:environment", {})
    pid = ensure_worker(db, idle_exit=0.5)
    job = wait_for(lambda: _finished(queue, job_id), what="the job to finish")
    assert job.status == "done", job.error
    assert job.result == {"cwd": os.getcwd(), "work_dir": str(queue.work_dir(job_id)), "home": str(tmp_path)}
    wait_for(lambda: not pid_alive(pid), what="the idle worker to exit")


def test_a_failing_job_keeps_its_traceback(db, worker):
    queue = JobQueue(db)
    job_id = queue.submit("tests.jobfuncs:boom", {"message": "the threshold must be positive"})
    job = wait_for(lambda: _finished(queue, job_id), what="the job to fail")
    assert job.status == "failed"
    assert job.message == "ValueError: the threshold must be positive"
    assert "Traceback" in job.error and "ValueError: the threshold must be positive" in job.error
    assert "jobfuncs.py" in job.error and job.progress == pytest.approx(0.3)
    assert "ValueError: the threshold must be positive" in Path(job.log_path).read_text()

    bad = queue.submit("tests.jobfuncs:not_json", {})
    gone = queue.submit("tests.jobfuncs:no_such_function", {})
    job = wait_for(lambda: _finished(queue, bad), what="the job to fail")
    assert job.status == "failed" and "not JSON-able" in job.error
    job = wait_for(lambda: _finished(queue, gone), what="the job to fail")
    assert job.status == "failed" and "AttributeError" in job.error


def test_a_job_process_that_dies_is_failed_by_its_worker(db, worker):
    queue = JobQueue(db)
    job_id = queue.submit("tests.jobfuncs:crash", {})
    job = wait_for(lambda: _finished(queue, job_id), what="the job to fail")
    assert job.status == "failed" and "SIGKILL" in job.message and "without reporting a result" in job.error
    # The worker lives on and runs the next job.
    after = queue.submit("tests.jobfuncs:steps", {"n": 1})
    assert wait_for(lambda: _finished(queue, after)).status == "done"


def test_cancel_stops_the_job_process(db, worker, tmp_path):
    queue = JobQueue(db)
    marker, cleaned = tmp_path / "started", tmp_path / "cleaned"
    job_id = queue.submit("tests.jobfuncs:spin", {"marker": str(marker), "cleaned": str(cleaned)})
    wait_for(marker.exists, what="the job to start")
    runner = queue.get(job_id).runner_pid
    assert runner and pid_alive(runner)
    queue.cancel(job_id)
    job = wait_for(lambda: _finished(queue, job_id), what="the job to be cancelled")
    assert job.status == "cancelled"
    wait_for(lambda: not pid_alive(runner), timeout=5, what="the job process to end")
    assert cleaned.read_text() == "cleaned"  # stopped with SIGTERM first: its `finally` ran
    assert "cancelled" in Path(job.log_path).read_text()
    assert "spun" not in (job.result or {})


def test_cancel_kills_a_job_that_ignores_sigterm(db, tmp_path):
    queue = JobQueue(db)
    marker = tmp_path / "started"
    proc = start_worker(db, "--cancel-grace", "0.5")
    try:
        job_id = queue.submit("tests.jobfuncs:stubborn", {"marker": str(marker)})
        wait_for(marker.exists, what="the job to start")
        runner = queue.get(job_id).runner_pid
        queue.cancel(job_id)
        job = wait_for(lambda: _finished(queue, job_id), what="the job to be cancelled")
        assert job.status == "cancelled" and job.message == "cancelled"
        assert not pid_alive(runner)
    finally:
        stop_process(proc)


def test_stopping_a_worker_stops_its_job_cleanly(db, tmp_path):
    queue = JobQueue(db)
    final, marker = tmp_path / "models" / "fine-tuned", tmp_path / "half"
    proc = start_worker(db)
    try:
        job_id = queue.submit("tests.jobfuncs:write_output", {"final": str(final), "marker": str(marker)})
        wait_for(marker.exists, what="the job to write half its output")
        runner = queue.get(job_id).runner_pid
        proc.send_signal(signal.SIGTERM)  # as a service manager (or Ctrl-C) would
        assert proc.wait(15) == 0
    finally:
        stop_process(proc)
    job = queue.get(job_id)
    assert job.status == "failed" and job.message == "stopped" and "SIGTERM" in job.error
    assert not pid_alive(runner)
    assert not final.exists() and list(final.parent.iterdir()) == []  # its temp folder was removed
    assert live_workers(db) == []


def test_cancelling_a_queued_job_means_it_never_runs(db, tmp_path):
    queue = JobQueue(db)
    out = tmp_path / "ran.txt"
    skipped = queue.submit("tests.jobfuncs:record", {"path": str(out)})
    kept = queue.submit("tests.jobfuncs:record", {"path": str(out)})
    assert queue.cancel(skipped)
    proc = start_worker(db, "--once")
    assert proc.wait(30) == 0
    assert out.read_text().split() == [str(kept)]
    assert queue.get(skipped).status == "cancelled" and queue.get(kept).status == "done"


def test_killed_worker_and_job_leave_no_output_and_a_failed_job(db, worker, tmp_path):
    queue = JobQueue(db)
    final, marker = tmp_path / "models" / "fine-tuned", tmp_path / "half"
    job_id = queue.submit("tests.jobfuncs:write_output", {"final": str(final), "marker": str(marker)})
    wait_for(marker.exists, what="the job to write half its output")
    job = queue.get(job_id)
    assert job.status == "running" and job.progress == 0.5
    _kill_both(worker, job.runner_pid)

    assert queue.recover_stale() == [job_id]
    job = queue.get(job_id)
    assert job.status == "failed" and job.message == "worker died"
    assert not final.exists()
    leftovers = [p.name for p in final.parent.iterdir()]
    assert len(leftovers) == 1 and leftovers[0].startswith(".tmp-fine-tuned-")  # obviously temporary
    assert clean_stale_temp(final.parent) == []  # too recent: it might still be written
    assert [p.name for p in clean_stale_temp(final.parent, grace_seconds=0)] == leftovers
    assert list(final.parent.iterdir()) == []
    assert "worker died" in Path(job.log_path).read_text()


def test_a_killed_worker_takes_its_job_down_cleanly(db, worker, tmp_path):
    """Only the worker is killed: the job process notices, stops itself and cleans its temp folder."""
    queue = JobQueue(db)
    final, marker = tmp_path / "models" / "fine-tuned", tmp_path / "half"
    job_id = queue.submit("tests.jobfuncs:write_output", {"final": str(final), "marker": str(marker)})
    wait_for(marker.exists, what="the job to write half its output")
    runner = queue.get(job_id).runner_pid
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(10)
    wait_for(lambda: not pid_alive(runner), timeout=10, what="the orphaned job process to stop")
    job = queue.get(job_id)
    assert job.status == "failed" and job.message == "worker died"
    assert not final.exists() and list(final.parent.iterdir()) == []
    assert queue.recover_stale() == []  # nothing left to recover


def test_a_new_worker_recovers_the_jobs_of_a_dead_one(db, tmp_path):
    queue = JobQueue(db)
    marker = tmp_path / "started"
    first = start_worker(db)
    try:
        stuck = queue.submit("tests.jobfuncs:spin", {"marker": str(marker)})
        wait_for(marker.exists, what="the job to start")
        _kill_both(first, queue.get(stuck).runner_pid)
    finally:
        stop_process(first)
    after = queue.submit("tests.jobfuncs:steps", {"n": 2})
    second = start_worker(db, "--once")
    assert second.wait(30) == 0
    assert queue.get(stuck).status == "failed" and queue.get(stuck).message == "worker died"
    assert queue.get(after).status == "done"


def test_jobs_survive_restarts(db, tmp_path):
    """Jobs queued while no worker runs are run by the next one; a fresh JobQueue sees everything."""
    out = tmp_path / "ran.txt"
    ids = [JobQueue(db).submit("tests.jobfuncs:record", {"path": str(out)}, title=f"job {i}") for i in range(3)]
    time.sleep(0.2)
    assert all(JobQueue(db).get(i).status == "queued" for i in ids)
    proc = start_worker(db, "--once")
    assert proc.wait(30) == 0
    fresh = JobQueue(db)
    assert [j.status for j in fresh.list()] == ["done"] * 3
    assert sorted(int(x) for x in out.read_text().split()) == ids
    retried = fresh.retry(ids[0])
    assert fresh.get(retried).status == "queued" and fresh.get(retried).title == "job 0"


def test_ensure_worker_starts_one_detached_worker_that_exits_when_idle(db, tmp_path):
    queue = JobQueue(db)
    job_id = queue.submit("tests.jobfuncs:steps", {"n": 2})
    pid = ensure_worker(db, idle_exit=1.0)
    assert ensure_worker(db, idle_exit=1.0) == pid  # one worker, not two
    assert live_workers(db) == [pid]
    assert wait_for(lambda: _finished(queue, job_id)).status == "done"
    assert queue.get(job_id).worker_pid == pid
    wait_for(lambda: not pid_alive(pid), what="the idle worker to exit")
    assert live_workers(db) == []
    assert "serving" in (tmp_path / "jobs-worker.log").read_text()
    # The next submit brings a new one.
    again = queue.submit("tests.jobfuncs:steps", {"n": 1})
    new_pid = ensure_worker(db, idle_exit=0.5)
    assert new_pid != pid
    assert wait_for(lambda: _finished(queue, again)).status == "done"
    wait_for(lambda: not pid_alive(new_pid), what="the idle worker to exit")


def test_worker_command_line_runs_from_any_folder(db, tmp_path):
    import subprocess
    import sys

    from spuraudit.jobs.util import child_env

    queue = JobQueue(db)
    job_id = queue.submit("tests.jobfuncs:steps", {"n": 1})
    other = tmp_path / "elsewhere"
    other.mkdir()
    env = child_env()
    env["PYTHONPATH"] = str(REPO_ROOT)  # like an installed package: the job's module is importable
    done = subprocess.run([sys.executable, "-m", "spuraudit.jobs.worker", "--db", str(db), "--once"],
                          cwd=other, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert queue.get(job_id).status == "done"
