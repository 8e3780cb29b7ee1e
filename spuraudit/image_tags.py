"""Tags on dataset images ("mislabelled", "check later", "watermark"), kept with the project in `tags.db`.

Keyed by the image's path relative to the dataset root as stored in dataset.csv, so tags survive the
dataset being relocated and the table being re-read in another order. SQLite in WAL mode, a new
connection per call and every write in one immediate transaction: the app's sessions, the CLI and
jobs may tag at the same time without losing a write.
"""

from __future__ import annotations

import re
import sqlite3
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Iterable, Iterator

TAGS_FILE = "tags.db"
MAX_TAG_LENGTH = 40
_TAG = re.compile(r"^[\w][\w .:/+-]*$", re.UNICODE)


class TagError(ValueError):
    """A tag that cannot be stored; the message says what a tag may look like."""


def check_tag(tag: str) -> str:
    tag = " ".join(str(tag).split())
    if not tag or len(tag) > MAX_TAG_LENGTH or not _TAG.match(tag):
        raise TagError(f"tag {tag!r}: use 1-{MAX_TAG_LENGTH} letters, digits, spaces or . : / + - _ "
                       "(starting with a letter or digit).")
    return tag


class TagStore:
    def __init__(self, project_folder: str | Path):
        self.path = Path(project_folder) / TAGS_FILE

    @contextmanager
    def _connection(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self.path, timeout=30.0, isolation_level=None)) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            if write:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.execute("CREATE TABLE IF NOT EXISTS tags (image TEXT NOT NULL, tag TEXT NOT NULL, "
                                 "PRIMARY KEY (image, tag)) WITHOUT ROWID")
                    yield conn
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            else:
                yield conn

    def add(self, images: Iterable[str], tag: str) -> int:
        """Tag the images; returns how many gained the tag."""
        tag = check_tag(tag)
        with self._connection(write=True) as conn:
            before = conn.total_changes
            conn.executemany("INSERT OR IGNORE INTO tags (image, tag) VALUES (?, ?)", [(str(i), tag) for i in images])
            return conn.total_changes - before

    def remove(self, images: Iterable[str], tag: str) -> int:
        with self._connection(write=True) as conn:
            before = conn.total_changes
            conn.executemany("DELETE FROM tags WHERE image = ? AND tag = ?", [(str(i), str(tag)) for i in images])
            return conn.total_changes - before

    def _read(self, sql: str, args: tuple = ()) -> list[tuple]:
        if not self.path.is_file():
            return []
        with self._connection() as conn:
            try:
                return conn.execute(sql, args).fetchall()
            except sqlite3.OperationalError as exc:  # a file without the table yet
                if "no such table" in str(exc):
                    return []
                raise

    def all_tags(self) -> list[str]:
        return [r[0] for r in self._read("SELECT DISTINCT tag FROM tags ORDER BY tag")]

    def images_with(self, tag: str) -> set[str]:
        return {r[0] for r in self._read("SELECT image FROM tags WHERE tag = ?", (str(tag),))}

    def tags_of(self, images: Iterable[str]) -> dict[str, list[str]]:
        """{image: sorted tags} for the given images (absent when untagged)."""
        wanted = [str(i) for i in images]
        out: dict[str, list[str]] = {}
        for start in range(0, len(wanted), 500):  # SQLite's limit on bound parameters
            chunk = wanted[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for image, tag in self._read(f"SELECT image, tag FROM tags WHERE image IN ({marks}) ORDER BY tag",
                                         tuple(chunk)):
                out.setdefault(image, []).append(tag)
        return out
