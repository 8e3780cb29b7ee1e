"""Small helpers shared by the job modules: UTC timestamps, process liveness, child environments."""

from __future__ import annotations

import os
import signal
import sys
from datetime import datetime, timezone
from pathlib import Path

# The folder that holds the `spuraudit` package: child processes get it on PYTHONPATH so they can
# import the package even when it is not installed (e.g. running from a source checkout).
PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def utc_now() -> str:
    """The current UTC time as ISO 8601 text with milliseconds (sorts lexicographically)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def parse_time(text: str | None) -> datetime | None:
    """The datetime of a timestamp written by `utc_now` (None stays None)."""
    if not text:
        return None
    return datetime.fromisoformat(text)


def age_seconds(text: str | None) -> float | None:
    """Seconds since a `utc_now` timestamp; None when there is no timestamp."""
    moment = parse_time(text)
    if moment is None:
        return None
    return (datetime.now(timezone.utc) - moment).total_seconds()


def pid_alive(pid: int | None) -> bool:
    """Whether a process with this id exists on this machine and is not a zombie.

    Zombies count as dead: a killed worker stays a zombie until its parent reaps it, and some
    container init processes never reap, so a bare `kill(pid, 0)` would call it alive forever.
    """
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, it just belongs to someone else
    except OSError:
        return False
    try:
        # /proc/<pid>/stat is "pid (comm) state ..."; comm may hold spaces or parentheses.
        stat = Path(f"/proc/{pid}/stat").read_text()
        state = stat.rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return True  # no /proc (not Linux): trust kill()


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for worker and runner processes.

    PYTHONPATH gets the package's root and the current folder in front, so job functions named by
    import path (e.g. "tests.jobfuncs:slow") import the same way in the child as in the parent.
    Output is unbuffered so that a job's prints reach its log file as they happen.
    """
    env = dict(os.environ)
    try:
        cwd = os.getcwd()
    except FileNotFoundError:  # the folder was removed under us; the package root still works
        cwd = str(PACKAGE_ROOT)
    parts = [str(PACKAGE_ROOT), cwd]
    parts += [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    seen: list[str] = []
    for part in parts:
        if part not in seen:
            seen.append(part)
    env["PYTHONPATH"] = os.pathsep.join(seen)
    env["PYTHONUNBUFFERED"] = "1"
    if extra:
        env.update(extra)
    return env


def kill_group(pid: int, sig: int) -> None:
    """Send `sig` to the process group led by `pid` (a runner started in its own session), so that
    processes the job itself started (e.g. data-loader workers) stop too; falls back to the pid."""
    try:
        if hasattr(os, "killpg"):
            os.killpg(pid, sig)
        else:  # pragma: no cover - Windows
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def signal_name(code: int | None) -> str:
    """A readable description of a process exit code (negative codes are signals on POSIX)."""
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def python_executable() -> str:
    """The interpreter that runs workers and runners: the one running this code."""
    return sys.executable
