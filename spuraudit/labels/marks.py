"""`MarkStore`: a person's verdict on a flagged image (label error, several objects, or fine).

Kept beside the votes, in the project's own SQLite file `marks.db`, with the same habits as the
vote store: a new connection per call, WAL, a busy timeout and `BEGIN IMMEDIATE` writes, so the app,
the CLI and jobs can use it at once. An image is named by its path as the project stores it
(relative to the dataset root), so marks survive a moved dataset; one mark per (image, annotator),
the latest replacing the earlier.
"""

from __future__ import annotations

import csv
import io
import sqlite3
import threading
from contextlib import closing
from datetime import datetime, timezone
from pathlib import Path

from ..atomic import write_text_atomic
from .vote import check_annotator

MARKS = ("label_error", "several_objects", "fine")
MARK_TEXT = {"label_error": "label error", "several_objects": "several objects", "fine": "fine"}
CSV_COLUMNS = ["image", "class_index", "mark", "annotator", "note", "time"]
BUSY_TIMEOUT_S = 30.0

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS marks (
    image        TEXT NOT NULL CHECK (length(image) BETWEEN 1 AND 4096),
    class_index  INTEGER NOT NULL CHECK (class_index >= 0),
    mark         TEXT NOT NULL CHECK (mark IN ({", ".join(f"'{m}'" for m in MARKS)})),
    annotator    TEXT NOT NULL,
    note         TEXT NOT NULL DEFAULT '',
    time         TEXT NOT NULL,
    PRIMARY KEY (image, annotator)
)
"""


class MarkError(ValueError):
    """A mark that cannot be stored; the message says which value and what is allowed."""


class MarkStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._ready = False
        self._setup = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        # Switching to WAL takes an exclusive lock that SQLite's busy timeout does not wait for: threads that
        # open a new file at once got "database is locked". Set the file up once per store (WAL persists in it).
        with self._setup:
            if not self._ready:
                con.execute("PRAGMA journal_mode=WAL")
                con.execute(_SCHEMA)
                self._ready = True
        return con

    def add(self, image: str, class_index: int, mark: str, annotator: str, note: str = "") -> None:
        """Store (or replace) this annotator's mark of one image."""
        if mark not in MARKS:
            raise MarkError(f"mark must be one of {', '.join(MARKS)}, got {mark!r}")
        if not isinstance(image, str) or not image or len(image) > 4096:
            raise MarkError(f"image must be the image's stored path (1-4096 characters), got {image!r}")
        if isinstance(class_index, bool) or not isinstance(class_index, int) or class_index < 0:
            raise MarkError(f"class_index must be a non-negative integer, got {class_index!r}")
        annotator = check_annotator(annotator)
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        with closing(self._connect()) as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                con.execute("INSERT OR REPLACE INTO marks VALUES (?, ?, ?, ?, ?, ?)",
                            (image, class_index, mark, annotator, str(note)[:2000], stamp))
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise

    def marks(self) -> list[dict]:
        """Every mark, oldest first."""
        if not self.path.exists():
            return []
        with closing(self._connect()) as con:
            cur = con.execute(f"SELECT {', '.join(CSV_COLUMNS)} FROM marks ORDER BY time, image, annotator")
            return [dict(zip(CSV_COLUMNS, row)) for row in cur.fetchall()]

    def latest(self) -> dict[str, str]:
        """image -> the most recent mark given to it by anyone."""
        return {m["image"]: m["mark"] for m in self.marks()}

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.marks())
        return buffer.getvalue()

    def export_csv(self, path: str | Path) -> Path:
        """Write every mark as CSV (temp file + rename)."""
        return write_text_atomic(path, self.to_csv())


def marks_path(project_folder: str | Path) -> Path:
    return Path(project_folder) / "marks.db"
