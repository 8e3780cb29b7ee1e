"""Jobs on a Ray cluster (the optional `cluster` extra): a private local instance of 2 CPUs.

The queue, the pages and the job functions are the real ones; the worker's backend is Ray, so each
claimed job runs as a Ray task in a process Ray starts, and its progress and log come back through
the worker into the job's row. Skipped when Ray is not installed (`pip install -e '.[cluster]'`).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from spuraudit.jobs import JobQueue, ray_backend
from spuraudit.jobs.kinds import MITIGATE_RUN
from tests.processes import alive, processes_naming, stop_processes
from tests.test_mitigate_fixtures import private_demo

pytest.importorskip("ray")

REPO = Path(__file__).resolve().parents[1]
LOAD = 90_000  # ms for a page on a slow, shared machine
JOB = 300_000  # ms: Ray's own processes, a task process and the job's imports start before the work


@pytest.fixture
def ray_env(monkeypatch):
    """Workers started from here (and by the app) send their jobs to a private Ray instance of 2 CPUs."""
    monkeypatch.setenv(ray_backend.BACKEND_ENV, "ray")
    monkeypatch.setenv(ray_backend.ADDRESS_ENV, "local")
    monkeypatch.setenv(ray_backend.LOCAL_CPUS_ENV, "2")
    # Ray's own and its task processes import spuraudit from this checkout
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    monkeypatch.setenv("STREAMLIT_SERVER_FILE_WATCHER_TYPE", "none")


def _wait(queue: JobQueue, job_id: int, statuses, seconds: float):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        job = queue.get(job_id)
        if job.status in statuses:
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} is still {queue.get(job_id).status}: {queue.get(job_id).message}")


@pytest.mark.browser
@pytest.mark.slow
def test_mitigations_run_on_ray_and_cancel_from_the_jobs_page(demo_home, tmp_path, ray_env):
    from tests.browser_support import chromium_page, require_browser, screenshot, streamlit_server

    require_browser()
    from spuraudit import paths
    from spuraudit.jobs import ensure_worker
    from spuraudit.modelio import load_model

    home = tmp_path / "home"
    project, _ = private_demo(demo_home, home)
    db = paths.jobs_db(home)
    queue = JobQueue(db)
    # Queued the way the Mitigate page queues them: a quick head tuning, then a MaskTune long enough to stop.
    quick = queue.submit(MITIGATE_RUN, {"project": str(project.folder), "method": "head_tuning",
                                        "options": {"seed": 5}}, title="Head tuning on Ray")
    slow = queue.submit(MITIGATE_RUN, {"project": str(project.folder), "method": "masktune",
                                       "options": {"seed": 5, "rounds": 3, "batch_size": 16}},
                        title="MaskTune on Ray")
    try:
        ensure_worker(db)
        done = _wait(queue, quick, ("done", "failed", "cancelled"), JOB / 1000)
        assert done.status == "done", done.error
        model_folder = Path(done.result["model_folder"])
        assert load_model(model_folder)[1].method == "head_tuning"
        assert ray_backend.read_placement(queue.work_dir(quick))["backend"] == "ray"
        assert "(Ray)" in done.log_tail() and "Low-spuriosity head tuning" in done.log_tail()
        assert done.progress == 1.0

        running = _wait(queue, slow, ("running",), JOB / 1000)
        deadline = time.monotonic() + JOB / 1000
        while (ray_backend.read_placement(queue.work_dir(slow)) or {}).get("pid") is None:
            assert time.monotonic() < deadline, "the MaskTune task never started on Ray"
            time.sleep(0.5)
        task_pid = ray_backend.read_placement(queue.work_dir(slow))["pid"]
        assert alive(task_pid)

        with streamlit_server(home) as url, chromium_page() as page:
            page.goto(f"{url}/jobs", wait_until="domcontentloaded")
            page.get_by_role("heading", name="Background jobs").wait_for(timeout=LOAD)
            page.get_by_text("Ray cluster").first.wait_for(timeout=LOAD)
            page.get_by_text(re.compile(r"mitigate\.run · runs on Ray · .+ · cpu")).first.wait_for(timeout=LOAD)
            screenshot(page, "jobs-page-ray")
            page.locator(f".st-key-cancel-{running.id} button").click(timeout=LOAD)
            page.get_by_text(re.compile(rf"^#{slow} MaskTune on Ray: cancelled$")).wait_for(timeout=JOB)
        cancelled = queue.get(slow)
        assert cancelled.status == "cancelled"
        deadline = time.monotonic() + 30
        while alive(task_pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not alive(task_pid), "the Ray task's process still runs after Cancel"
        masktuned = [p for p in model_folder.parent.iterdir() if "masktune" in p.name]
        assert masktuned == []  # a stopped MaskTune leaves no model folder
    finally:
        workers = [pid for pid in processes_naming("spuraudit.jobs") if pid in processes_naming(str(db))]
        stop_processes(workers, grace=30)


def test_a_job_runs_on_ray_with_its_progress_and_log(tmp_path, ray_env):
    """A small job through an in-process worker: result, progress, log lines and where it ran."""
    from spuraudit.jobs.worker import run_worker

    queue = JobQueue(tmp_path / "jobs.db")
    job_id = queue.submit("tests.jobfuncs:steps", {"n": 4})
    assert run_worker(queue.db_path, once=True, poll_interval=0.1) == 1
    job = queue.get(job_id)
    assert job.status == "done", job.error
    assert job.result["sum"] == 6 and job.progress == 1.0
    log = job.log_tail()
    assert "step 3" in log and "started on" in log and "done (Ray)" in log
    place = ray_backend.read_placement(queue.work_dir(job_id))
    assert place["backend"] == "ray" and place["device"] == "cpu" and place["pid"] != __import__("os").getpid()
    import ray

    assert not ray.is_initialized()  # the worker left the private instance when it exited
