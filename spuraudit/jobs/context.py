"""What a job function gets as `ctx`: progress reporting, a log, a work folder and cancellation.

    def train_job(ctx: JobContext, epochs: int = 3) -> dict:
        for epoch in ctx.iterate(range(epochs), message="epoch"):
            ctx.log(f"epoch {epoch}")
        return {"epochs": epochs}

Cancelling a running job works two ways. The worker always stops the job's process (SIGTERM,
which the runner turns into `JobCancelled` so `finally` blocks and `spuraudit.atomic.atomic_dir` clean up;
then SIGKILL after a grace period). Jobs may also poll `cancelled()` / `check_cancelled()` to stop
at a convenient point; `iterate` does so before every item.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from .util import utc_now

if TYPE_CHECKING:
    from .queue import JobQueue

T = TypeVar("T")

LOG_FILE = "log.txt"


class JobCancelled(BaseException):
    """Raised inside a job when it has been cancelled.

    A BaseException (like KeyboardInterrupt) so that a job's broad `except Exception` handlers
    do not swallow the cancellation.
    """


class JobContext:
    """The job's handle on its row in the queue.

    Args:
        queue: the queue holding the job.
        job_id: the job's id.
        work_dir: the job's folder (default `queue.work_dir(job_id)`); created.
        min_interval: least seconds between progress writes (each one is a database write);
            reports in between are kept and written later (`flush`), so the last one is never lost.
        cancel_poll_interval: least seconds between database reads by `cancelled()`.
    """

    def __init__(self, queue: JobQueue, job_id: int, work_dir: str | Path | None = None,
                 min_interval: float = 0.2, cancel_poll_interval: float = 0.25) -> None:
        self.queue = queue
        self.job_id = int(job_id)
        self.work_dir = Path(work_dir) if work_dir is not None else queue.work_dir(self.job_id)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.work_dir / LOG_FILE
        self.min_interval = float(min_interval)
        self.cancel_poll_interval = float(cancel_poll_interval)
        self._lock = threading.Lock()
        self._last_write = -math.inf
        self._pending: tuple[float | None, str | None] | None = None
        self._cancel_flag = threading.Event()
        self._last_cancel_read = -math.inf
        self._cancel_seen = False

    # ---- progress ---------------------------------------------------------------------------------
    def progress(self, fraction: float | None, message: str = "") -> None:
        """Report progress in 0..1 (None: unchanged) and an optional message ('' keeps the last one)."""
        fraction = None if fraction is None else min(max(float(fraction), 0.0), 1.0)
        msg = message or None
        with self._lock:
            if self._pending is not None:
                # Merge with the unwritten report so its message is not lost.
                old_fraction, old_msg = self._pending
                fraction = old_fraction if fraction is None else fraction
                msg = msg if msg is not None else old_msg
            now = time.monotonic()
            if now - self._last_write >= self.min_interval or (fraction is not None and fraction >= 1.0):
                self._write(fraction, msg, now)
            else:
                self._pending = (fraction, msg)

    def flush(self) -> None:
        """Write a progress report held back by the rate limit, if any."""
        with self._lock:
            if self._pending is not None:
                self._write(*self._pending, time.monotonic())

    def _write(self, fraction: float | None, message: str | None, now: float) -> None:
        self._pending = None
        self._last_write = now
        self.queue.set_progress(self.job_id, fraction, message)

    def iterate(self, iterable: Iterable[T], total: int | None = None, message: str = "",
                start: float = 0.0, end: float = 1.0) -> Iterator[T]:
        """Yield the items of `iterable`, reporting progress from `start` to `end` as they are done.

        Checks for cancellation before each item. `total` defaults to `len(iterable)` when it has one.
        """
        if total is None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except TypeError:
                total = None
        done = 0
        for item in iterable:
            self.check_cancelled()
            yield item
            done += 1
            if total:
                fraction = start + (end - start) * min(done / total, 1.0)
                self.progress(fraction, f"{message} {done}/{total}".strip())
            else:
                self.progress(None, f"{message} {done}".strip())

    # ---- log ----------------------------------------------------------------------------------------
    def log(self, message: str) -> None:
        """Append a timestamped line (or lines) to the job's log file."""
        stamp = utc_now()
        lines = str(message).rstrip("\n").splitlines() or [""]
        text = "".join(f"{stamp} {line}\n" for line in lines)
        # One write per call in append mode: lines from the job and its stdout never interleave mid-line.
        with open(self.log_path, "a", encoding="utf-8") as fh:
            fh.write(text)

    # ---- cancellation ---------------------------------------------------------------------------------
    def request_cancel(self) -> None:
        """Mark the job cancelled from inside its process (used by the runner's signal handler)."""
        self._cancel_flag.set()

    def cancelled(self) -> bool:
        """Whether the job should stop: a cancel was requested, or the job is no longer running."""
        if self._cancel_flag.is_set() or self._cancel_seen:
            return True
        now = time.monotonic()
        if now - self._last_cancel_read >= self.cancel_poll_interval:
            self._last_cancel_read = now
            self._cancel_seen = self.queue.cancel_requested(self.job_id)
        return self._cancel_seen

    def check_cancelled(self) -> None:
        """Raise `JobCancelled` when the job should stop."""
        if self.cancelled():
            raise JobCancelled(f"job {self.job_id} was cancelled")


class LocalContext:
    """A stand-in for `JobContext` that runs a job function in the current process without a queue
    (scripts, the command line, tests of job functions). Progress is kept in `reports`."""

    def __init__(self, work_dir: str | Path, echo: bool = False) -> None:
        self.job_id = 0
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.work_dir / LOG_FILE
        self.echo = echo
        self.reports: list[tuple[float | None, str]] = []
        self._cancelled = threading.Event()

    def progress(self, fraction: float | None, message: str = "") -> None:
        self.reports.append((fraction, message))
        if self.echo and message:
            print(f"[{(fraction or 0.0) * 100:5.1f}%] {message}", flush=True)

    def flush(self) -> None:
        pass

    iterate = JobContext.iterate

    def log(self, message: str) -> None:
        JobContext.log(self, message)  # type: ignore[arg-type]
        if self.echo:
            print(message, flush=True)

    def request_cancel(self) -> None:
        self._cancelled.set()

    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    check_cancelled = JobContext.check_cancelled
