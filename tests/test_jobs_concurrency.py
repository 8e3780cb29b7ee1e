"""Several worker processes on one queue: every job runs exactly once."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

from spuraudit.jobs import JobQueue
from spuraudit.jobs.util import child_env
from tests.jobfuncs import REPO_ROOT


def test_three_workers_run_thirty_jobs_exactly_once(tmp_path):
    db, out = tmp_path / "jobs.db", tmp_path / "ran.txt"
    queue = JobQueue(db)
    ids = [queue.submit("tests.jobfuncs:record", {"path": str(out), "delay": 0.05}) for _ in range(30)]
    done = subprocess.run([sys.executable, "-m", "spuraudit.jobs.worker", "--db", str(db), "--workers", "3",
                           "--once", "--poll", "0.05"],
                          cwd=REPO_ROOT, env=child_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr

    runs = Counter(int(line) for line in out.read_text().split())
    assert sorted(runs) == ids and set(runs.values()) == {1}, runs
    jobs = queue.list(limit=None)
    assert {j.status for j in jobs} == {"done"}
    assert sorted(j.result["id"] for j in jobs) == ids
    # The work really was shared: jobs were claimed by more than one worker process.
    assert len({j.worker_pid for j in jobs}) >= 2
    assert queue.live_worker_pids() == []  # every worker deregistered when it left
