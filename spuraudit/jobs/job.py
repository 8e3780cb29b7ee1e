"""A job row as the rest of the program sees it, and the statuses a job moves through.

    queued -> running -> done | failed | cancelled        (queued -> cancelled directly)
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
STATUSES = (QUEUED, RUNNING, DONE, FAILED, CANCELLED)
ACTIVE = (QUEUED, RUNNING)
FINISHED = (DONE, FAILED, CANCELLED)


@dataclass(frozen=True)
class Job:
    """A snapshot of one job row; `params` and `result` are decoded from JSON."""

    id: int
    kind: str
    title: str | None
    status: str
    progress: float
    message: str
    created: str
    started: str | None
    finished: str | None
    worker_pid: int | None
    runner_pid: int | None
    heartbeat: str | None
    cancel_requested: bool
    log_path: str | None
    error: str | None
    target: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    result: Any = None

    @property
    def is_finished(self) -> bool:
        """Done, failed or cancelled: nothing will change the row any more."""
        return self.status in FINISHED

    @property
    def is_active(self) -> bool:
        """Queued or running."""
        return self.status in ACTIVE

    @property
    def label(self) -> str:
        """A short human name: "#12 Build the demo"."""
        return f"#{self.id} {self.title or self.kind}"

    def log_tail(self, lines: int = 200) -> str:
        """The last `lines` lines of the job's log file ('' when there is none yet)."""
        if not self.log_path:
            return ""
        try:
            text = Path(self.log_path).read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Job:
        return cls(
            id=row["id"], kind=row["kind"], title=row["title"], status=row["status"],
            progress=float(row["progress"] or 0.0), message=row["message"] or "", created=row["created"],
            started=row["started"], finished=row["finished"], worker_pid=row["worker_pid"],
            runner_pid=row["runner_pid"], heartbeat=row["heartbeat"],
            cancel_requested=bool(row["cancel_requested"]), log_path=row["log_path"], error=row["error"],
            target=row["target"], params=json.loads(row["params"] or "{}"),
            result=json.loads(row["result"]) if row["result"] is not None else None,
        )
