"""Job functions for the job-queue tests, run by real worker processes as kind "tests.jobfuncs:<name>"."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from spuraudit.atomic import atomic_dir
from spuraudit.jobs import JobContext


def _touch(path: str | None, text: str = "") -> None:
    if path:
        Path(path).write_text(text or str(os.getpid()))


def steps(ctx: JobContext, n: int = 5, delay: float = 0.01) -> dict:
    """Report progress through `n` steps, logging each; return their sum."""
    total = 0
    for i in ctx.iterate(range(n), message="step"):
        time.sleep(delay)
        ctx.log(f"step {i}")
        total += i
    print("printed by the job")  # stdout goes to the job's log too
    return {"n": n, "sum": total, "pid": os.getpid()}


def record(ctx: JobContext, path: str, delay: float = 0.02) -> dict:
    """Append this job's id to `path` (one write in append mode, so concurrent jobs never mix lines)."""
    time.sleep(delay)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, f"{ctx.job_id}\n".encode())
    finally:
        os.close(fd)
    return {"id": ctx.job_id}


def boom(ctx: JobContext, message: str = "bad input") -> dict:
    ctx.progress(0.3, "about to fail")
    raise ValueError(message)


def not_json(ctx: JobContext) -> dict:
    return {"value": object()}


def crash(ctx: JobContext) -> None:
    """Die without any chance to report (as a segfault or an out-of-memory kill would)."""
    ctx.progress(0.5, "crashing")
    os.kill(os.getpid(), signal.SIGKILL)


def spin(ctx: JobContext, seconds: float = 60.0, marker: str | None = None, cleaned: str | None = None) -> dict:
    """Busy for `seconds`, never checking for cancellation; writes `cleaned` on the way out."""
    _touch(marker)
    try:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            time.sleep(0.05)
    finally:
        _touch(cleaned, "cleaned")
    return {"spun": seconds}


def stubborn(ctx: JobContext, seconds: float = 60.0, marker: str | None = None) -> dict:
    """Ignore SIGTERM: only SIGKILL can stop this one."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _touch(marker)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.05)
    return {"spun": seconds}


def write_output(ctx: JobContext, final: str, marker: str | None = None, seconds: float = 60.0) -> dict:
    """Write a model-like folder atomically, slowly: half of it, then wait, then the rest."""
    with atomic_dir(final) as tmp:
        (tmp / "weights.bin").write_bytes(b"\0" * 1024)
        ctx.progress(0.5, "half written")
        _touch(marker)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            time.sleep(0.05)
        (tmp / "model.yaml").write_text("name: done\n")
    return {"folder": final}


def environment(ctx: JobContext) -> dict:
    return {"cwd": os.getcwd(), "work_dir": str(ctx.work_dir), "home": os.environ.get("SPURAUDIT_HOME")}


# ---- helpers for the tests (not jobs) -----------------------------------------------------------------
REPO_ROOT = Path(__file__).resolve().parents[1]


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.05, what: str = "condition"):
    """Poll `predicate` until it returns something truthy; fail the test after `timeout` seconds."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def start_worker(db: Path, *args: str, log: Path | None = None):
    """Start `python -m spuraudit.jobs.worker` as a real process (the caller waits for or stops it)."""
    import subprocess
    import sys

    from spuraudit.jobs.util import child_env

    out = open(log or db.with_suffix(".worker.log"), "ab")  # noqa: SIM115 - kept open by the child
    try:
        return subprocess.Popen([sys.executable, "-m", "spuraudit.jobs.worker", "--db", str(db), "--poll", "0.1",
                                 *args], cwd=REPO_ROOT, env=child_env(), stdout=out, stderr=subprocess.STDOUT)
    finally:
        out.close()


def stop_process(proc, timeout: float = 10.0) -> None:
    """Stop a process this test started, if it is still running, and reap it."""
    import subprocess

    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
