"""A worker started by the app is collected as soon as it exits: no <defunct> children pile up."""

from __future__ import annotations

import time
from pathlib import Path

from spuraudit.jobs import JobQueue
from spuraudit.jobs.launch import start_worker_process


def _state(pid: int) -> str | None:
    """The process state letter from /proc (Z = zombie), or None once the pid is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return None


def test_an_idle_worker_that_exits_is_reaped_without_anyone_polling_it(tmp_path):
    db = tmp_path / "jobs.db"
    JobQueue(db)
    proc = start_worker_process(db, idle_exit=0.2, poll_interval=0.1)
    deadline = time.monotonic() + 120
    while proc.returncode is None and time.monotonic() < deadline:  # set by the reaper thread, not by us
        time.sleep(0.2)
    assert proc.returncode == 0
    assert _state(proc.pid) is None  # collected: no zombie entry left in the process table


def test_a_finished_jobs_result_reads_as_one_line():
    from spuraudit.ui.jobs import result_summary

    line = result_summary({"model_folder": "/home/ana/spuraudit/models/demo-digitnet-dfr-20261202", "method": "dfr",
                           "worst_group_accuracy": 91.25, "per_class": [1, 2], "key": "abc", "ok": True})
    assert line == "model folder demo-digitnet-dfr-20261202 · method dfr · worst group accuracy 91.2 · ok yes"
    assert result_summary(None) == "" and result_summary({}) == ""
    assert result_summary({"name": "[x](http://evil)"}) == "name \\[x\\]\\(http\\://evil\\)"
