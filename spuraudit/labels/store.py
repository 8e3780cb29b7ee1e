"""`LabelStore`: the votes of a project, in one SQLite file (`labels.db`).

The store is used from Streamlit (which runs each script in its own thread), from the CLI and
from background jobs in other processes, all at the same time. Hence:

* a new connection for every call, so no connection is ever shared between threads;
* WAL mode, so readers never block the writer and the writer never blocks readers;
* a generous busy timeout, so a writer waits for another instead of failing;
* every write in `BEGIN IMMEDIATE ... COMMIT`: the write lock is taken up front, which is what
  lets SQLite's busy handler wait for it (a read transaction that later upgrades can fail at
  once with "database is locked").

WAL needs a local file system (not a network share), like SQLite itself recommends.
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import closing, contextmanager
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from .aggregate import aggregate, aggregate_pair, spurious_map
from .vote import (
    ANSWERS,
    MAX_CONFIDENCE,
    MIN_CONFIDENCE,
    SOURCE_APP,
    NewVote,
    Pair,
    PairLabel,
    Vote,
    check_annotator,
    check_index,
    evidence_to_json,
)

SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 30.0

_ANSWER_LIST = ", ".join(f"'{a}'" for a in ANSWERS)

# The CHECKs repeat the Python checks on purpose: other tools (sqlite3 shell, scripts) may write
# to the file too, and a bad row would otherwise only show up later as a wrong label.
_SCHEMA_V1: tuple[str, ...] = (
    """
    CREATE TABLE IF NOT EXISTS imports (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        file_name  TEXT NOT NULL,
        sha256     TEXT NOT NULL,
        n_votes    INTEGER NOT NULL,
        imported   TEXT NOT NULL
    )
    """,
    f"""
    CREATE TABLE IF NOT EXISTS votes (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        class_index   INTEGER NOT NULL CHECK (class_index >= 0),
        feature_index INTEGER NOT NULL CHECK (feature_index >= 0),
        answer        TEXT NOT NULL CHECK (answer IN ({_ANSWER_LIST})),
        confidence    INTEGER CHECK (confidence IS NULL
                                     OR confidence BETWEEN {MIN_CONFIDENCE} AND {MAX_CONFIDENCE}),
        reason        TEXT NOT NULL DEFAULT '',
        annotator     TEXT NOT NULL CHECK (length(annotator) > 0),
        is_machine    INTEGER NOT NULL DEFAULT 0 CHECK (is_machine IN (0, 1)),
        evidence      TEXT,
        created       TEXT NOT NULL,
        retracted     INTEGER NOT NULL DEFAULT 0 CHECK (retracted IN (0, 1)),
        retracted_at  TEXT,
        wordnet_id    TEXT,
        feature_rank  INTEGER,
        source        TEXT NOT NULL DEFAULT '{SOURCE_APP}',
        import_id     INTEGER REFERENCES imports (id),
        source_row    TEXT
    )
    """,
    "CREATE INDEX IF NOT EXISTS votes_by_pair ON votes (class_index, feature_index)",
    "CREATE INDEX IF NOT EXISTS votes_by_annotator ON votes (annotator, id)",
    """
    CREATE TABLE IF NOT EXISTS settings (
        key    TEXT PRIMARY KEY,
        value  TEXT NOT NULL
    )
    """,
)

_VOTE_COLUMNS = (
    "id, class_index, feature_index, answer, confidence, reason, annotator, is_machine, evidence, "
    "created, retracted, wordnet_id, feature_rank, source"
)


class LabelStoreError(RuntimeError):
    """The file cannot be used as a label store (e.g. written by a newer spuraudit)."""


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _enable_wal(conn: sqlite3.Connection) -> None:
    """Switch the file to WAL mode (persistent: later connections use it without asking).

    Switching needs an exclusive lock, and SQLite answers "database is locked" at once instead
    of calling the busy handler when several processes open a new file together; so retry with
    a short backoff until the busy timeout. If the file system cannot do WAL, SQLite keeps the
    old journal mode, which is slower under concurrency but still correct.
    """
    if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
        return
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    delay = 0.005
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.25)


def _row_to_vote(row: sqlite3.Row) -> Vote:
    return Vote(
        id=row["id"],
        class_index=row["class_index"],
        feature_index=row["feature_index"],
        answer=row["answer"],
        annotator=row["annotator"],
        confidence=row["confidence"],
        reason=row["reason"],
        is_machine=bool(row["is_machine"]),
        evidence=None if row["evidence"] is None else json.loads(row["evidence"]),
        created=row["created"],
        retracted=bool(row["retracted"]),
        wordnet_id=row["wordnet_id"],
        feature_rank=row["feature_rank"],
        source=row["source"],
    )


def _machine_vote(annotator: str, item: NewVote | Mapping[str, Any]) -> NewVote:
    """A machine annotator's vote from a NewVote or a dict with class_index, feature_index, answer, ..."""
    if isinstance(item, NewVote):
        return replace(item, annotator=annotator, is_machine=True, source_row=None).checked()
    if not isinstance(item, Mapping):
        raise ValueError(f"a machine vote must be a dict or NewVote; got {type(item).__name__}.")
    unknown = set(item) - {"class_index", "feature_index", "answer", "confidence", "reason", "evidence"}
    if unknown:
        raise ValueError(f"unknown machine vote field(s): {', '.join(sorted(unknown))}.")
    missing = {"class_index", "feature_index", "answer"} - set(item)
    if missing:
        raise ValueError(f"machine vote lacks {', '.join(sorted(missing))}: {dict(item)!r}.")
    return NewVote(
        class_index=item["class_index"],
        feature_index=item["feature_index"],
        answer=item["answer"],
        annotator=annotator,
        confidence=item.get("confidence"),
        reason=item.get("reason") or "",
        evidence=item.get("evidence"),
        is_machine=True,
    ).checked()


class LabelStore:
    """Votes on (class, feature) pairs and their aggregated labels, kept in a SQLite file.

    Safe to use from several threads and processes at once; every method opens and closes its
    own connection, so instances are cheap and hold no open file.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._ensure_schema()

    def __repr__(self) -> str:
        return f"LabelStore({str(self.path)!r})"

    # ---- connections -------------------------------------------------------------------
    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        # isolation_level=None: no implicit transactions; writes open theirs explicitly.
        conn = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_S, isolation_level=None)
        with closing(conn):
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            conn.execute("PRAGMA foreign_keys = ON")
            yield conn

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: all of it is committed, or (on any exception) none of it."""
        with self._connection() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _ensure_schema(self) -> None:
        with self._connection() as conn:
            _enable_wal(conn)
            if self._schema_version(conn) == SCHEMA_VERSION:
                return  # the common case: no write lock needed just to open the store
        with self._transaction() as conn:
            version = self._schema_version(conn)  # again: another process may have created it meanwhile
            if version < 1:
                for statement in _SCHEMA_V1:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _schema_version(self, conn: sqlite3.Connection) -> int:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise LabelStoreError(
                f"{self.path}: label schema version {version} is newer than this spuraudit supports "
                f"({SCHEMA_VERSION}); upgrade spuraudit to open it."
            )
        return version

    # ---- writing votes -----------------------------------------------------------------
    def add_vote(
        self,
        class_index: int,
        feature_index: int,
        answer: str,
        annotator: str,
        confidence: int | None = None,
        reason: str = "",
        evidence: Mapping[str, Any] | None = None,
        is_machine: bool = False,
        *,
        wordnet_id: str | None = None,
        feature_rank: int | None = None,
    ) -> int:
        """Record one vote and return its id; ValueError (nothing written) when a field is invalid."""
        vote = NewVote(
            class_index=class_index,
            feature_index=feature_index,
            answer=answer,
            annotator=annotator,
            confidence=confidence,
            reason=reason,
            evidence=evidence,
            is_machine=is_machine,
            wordnet_id=wordnet_id,
            feature_rank=feature_rank,
        )
        return self.add_votes([vote])[0]

    def add_votes(self, votes: Iterable[NewVote]) -> list[int]:
        """Record several votes in one transaction (all or none) and return their ids in order."""
        checked = [vote.checked() for vote in votes]  # validate everything before touching the file
        with self._transaction() as conn:
            return self._insert(conn, checked, import_id=None)

    def import_votes(self, votes: Iterable[NewVote], *, file_name: str, sha256: str) -> int:
        """Record the votes read from one file, and the import itself, in one transaction.

        Returns the import's id (see `imports`).
        """
        checked = [vote.checked() for vote in votes]
        with self._transaction() as conn:
            import_id = conn.execute(
                "INSERT INTO imports (file_name, sha256, n_votes, imported) VALUES (?, ?, ?, ?)",
                (file_name, sha256, len(checked), utc_now()),
            ).lastrowid
            self._insert(conn, checked, import_id=import_id)
        return int(import_id)

    @staticmethod
    def _insert(conn: sqlite3.Connection, votes: list[NewVote], import_id: int | None) -> list[int]:
        created = utc_now()
        ids: list[int] = []
        for vote in votes:
            cursor = conn.execute(
                "INSERT INTO votes (class_index, feature_index, answer, confidence, reason, annotator, "
                "is_machine, evidence, created, wordnet_id, feature_rank, source, import_id, source_row) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    vote.class_index,
                    vote.feature_index,
                    vote.answer,
                    vote.confidence,
                    vote.reason,
                    vote.annotator,
                    int(vote.is_machine),
                    None if vote.evidence is None else evidence_to_json(vote.evidence),
                    created,
                    vote.wordnet_id,
                    vote.feature_rank,
                    vote.source,
                    import_id,
                    None if vote.source_row is None else json.dumps(list(vote.source_row)),
                ),
            )
            ids.append(int(cursor.lastrowid))
        return ids

    def undo_last(self, annotator: str) -> Vote | None:
        """Retract the annotator's latest vote that is still in force; None when there is none.

        The vote stays in `history`, marked retracted, so an undo can be audited.
        """
        annotator = check_annotator(annotator)
        with self._transaction() as conn:
            row = conn.execute(
                f"SELECT {_VOTE_COLUMNS} FROM votes WHERE annotator = ? AND retracted = 0 "
                "ORDER BY id DESC LIMIT 1",
                (annotator,),
            ).fetchone()
            if row is None:
                return None
            conn.execute("UPDATE votes SET retracted = 1, retracted_at = ? WHERE id = ?", (utc_now(), row["id"]))
        return replace(_row_to_vote(row), retracted=True)

    def retract(self, vote_id: int) -> Vote | None:
        """Retract one vote by id; returns it, or None when no such vote is in force."""
        with self._transaction() as conn:
            row = conn.execute(
                f"SELECT {_VOTE_COLUMNS} FROM votes WHERE id = ? AND retracted = 0", (int(vote_id),)
            ).fetchone()
            if row is None:
                return None
            conn.execute("UPDATE votes SET retracted = 1, retracted_at = ? WHERE id = ?", (utc_now(), row["id"]))
        return replace(_row_to_vote(row), retracted=True)

    def replace_machine_votes(self, annotator: str, votes: Iterable[NewVote | Mapping[str, Any]]) -> int:
        """Atomically replace every vote of one machine annotator (an auto-labeler that re-ran).

        `votes` are dicts with class_index, feature_index, answer and optionally confidence, reason
        and evidence (or `NewVote`s, whose annotator is overridden). Old votes of this annotator
        are deleted, not retracted: a re-run supersedes them and they carry no human decision.
        Returns the number of votes written; on a ValueError nothing changes.
        """
        annotator = check_annotator(annotator)
        checked = [_machine_vote(annotator, item) for item in votes]
        with self._transaction() as conn:
            conn.execute("DELETE FROM votes WHERE annotator = ? AND is_machine = 1", (annotator,))
            self._insert(conn, checked, import_id=None)
        return len(checked)

    # ---- reading votes -----------------------------------------------------------------
    def votes(
        self,
        class_index: int | None = None,
        feature_index: int | None = None,
        include_retracted: bool = False,
        *,
        annotator: str | None = None,
        machine: bool | None = None,
    ) -> list[Vote]:
        """Votes, oldest first; each filter left as None matches everything.

        `machine=True` gives only machine votes, `machine=False` only human ones.
        """
        where, params = [], []
        if class_index is not None:
            where.append("class_index = ?")
            params.append(check_index(class_index, "class_index"))
        if feature_index is not None:
            where.append("feature_index = ?")
            params.append(check_index(feature_index, "feature_index"))
        if not include_retracted:
            where.append("retracted = 0")
        if annotator is not None:
            where.append("annotator = ?")
            params.append(annotator.strip())
        if machine is not None:
            where.append("is_machine = ?")
            params.append(int(machine))
        sql = f"SELECT {_VOTE_COLUMNS} FROM votes"
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._connection() as conn:
            rows = conn.execute(sql + " ORDER BY id", params).fetchall()
        return [_row_to_vote(row) for row in rows]

    def vote(self, vote_id: int) -> Vote | None:
        """One vote by id (retracted or not), or None."""
        with self._connection() as conn:
            row = conn.execute(f"SELECT {_VOTE_COLUMNS} FROM votes WHERE id = ?", (int(vote_id),)).fetchone()
        return None if row is None else _row_to_vote(row)

    def history(self, class_index: int, feature_index: int) -> list[Vote]:
        """Every vote ever cast on a pair, retracted ones and machine ones included, oldest first."""
        return self.votes(class_index, feature_index, include_retracted=True)

    def count_votes(self, include_retracted: bool = False, *, machine: bool | None = None) -> int:
        where = [] if include_retracted else ["retracted = 0"]
        params: list[Any] = []
        if machine is not None:
            where.append("is_machine = ?")
            params.append(int(machine))
        sql = "SELECT COUNT(*) FROM votes" + (" WHERE " + " AND ".join(where) if where else "")
        with self._connection() as conn:
            return int(conn.execute(sql, params).fetchone()[0])

    def annotators(self, machine: bool | None = False) -> list[str]:
        """Sorted names of annotators with a vote in force (people only by default)."""
        sql = "SELECT DISTINCT annotator FROM votes WHERE retracted = 0"
        params: list[Any] = []
        if machine is not None:
            sql += " AND is_machine = ?"
            params.append(int(machine))
        with self._connection() as conn:
            return sorted(row[0] for row in conn.execute(sql, params))

    def votes_with_source_rows(self, machine: bool | None = False) -> list[tuple[Vote, tuple[str, ...] | None]]:
        """Votes in force, oldest first, each with the CSV cells it was imported from (or None)."""
        sql = f"SELECT {_VOTE_COLUMNS}, source_row FROM votes WHERE retracted = 0"
        params: list[Any] = []
        if machine is not None:
            sql += " AND is_machine = ?"
            params.append(int(machine))
        with self._connection() as conn:
            rows = conn.execute(sql + " ORDER BY id", params).fetchall()
        return [
            (_row_to_vote(row), None if row["source_row"] is None else tuple(json.loads(row["source_row"])))
            for row in rows
        ]

    # ---- labels ------------------------------------------------------------------------
    def labels(self, class_index: int | None = None) -> dict[Pair, PairLabel]:
        """Aggregated label of every pair with a counted vote, keyed by (class, feature)."""
        return aggregate(self.votes(class_index))

    def label(self, class_index: int, feature_index: int) -> PairLabel | None:
        """The aggregated label of one pair, or None when nobody (person or machine) voted on it."""
        return aggregate_pair(self.votes(class_index, feature_index))

    def spurious_features(self, include_proposed: bool = True) -> dict[int, list[int]]:
        """class index -> sorted spurious feature indices (labels with status 'spurious').

        `include_proposed=False` leaves out labels that only machine annotators support.
        """
        return spurious_map(self.labels(), include_proposed=include_proposed)

    def pairs_with_disagreement(self, include_subtype: bool = False) -> list[PairLabel]:
        """Labels whose counted votes split between core and spurious, in (class, feature) order.

        With `include_subtype`, a split between background and separate_object counts too.
        """
        return [
            label
            for label in self.labels().values()
            if (label.any_disagreement if include_subtype else label.disagreement)
        ]

    def proposed_labels(self) -> list[PairLabel]:
        """Labels that only machine annotators support, awaiting a person's review."""
        return [label for label in self.labels().values() if label.proposed]

    def reviewed_pairs(self, annotator: str | None = None) -> set[Pair]:
        """Pairs with a human vote in force (by `annotator`, when given)."""
        sql = "SELECT DISTINCT class_index, feature_index FROM votes WHERE retracted = 0 AND is_machine = 0"
        params: list[Any] = []
        if annotator is not None:
            sql += " AND annotator = ?"
            params.append(annotator.strip())
        with self._connection() as conn:
            return {(row[0], row[1]) for row in conn.execute(sql, params)}

    # ---- imports -----------------------------------------------------------------------
    def imports(self) -> list[dict[str, Any]]:
        """Files imported so far, oldest first: id, file_name, sha256, n_votes, imported (UTC time)."""
        with self._connection() as conn:
            rows = conn.execute("SELECT id, file_name, sha256, n_votes, imported FROM imports ORDER BY id")
            return [dict(row) for row in rows]

    def find_import(self, sha256: str) -> dict[str, Any] | None:
        """The earliest import of a file with this content hash, or None."""
        return next((record for record in self.imports() if record["sha256"] == sha256), None)

    # ---- settings ----------------------------------------------------------------------
    def get_setting(self, key: str, default: Any = None) -> Any:
        with self._connection() as conn:
            row = conn.execute("SELECT value FROM settings WHERE key = ?", (str(key),)).fetchone()
        return default if row is None else json.loads(row[0])

    def set_setting(self, key: str, value: Any) -> None:
        """Store a JSON-serialisable value under `key` (replacing any earlier one)."""
        try:
            text = json.dumps(value)
        except (TypeError, ValueError) as err:
            raise ValueError(f"setting {key!r} cannot be stored as JSON: {err}") from None
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO settings (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(key), text),
            )

    def delete_setting(self, key: str) -> None:
        with self._transaction() as conn:
            conn.execute("DELETE FROM settings WHERE key = ?", (str(key),))

    def settings(self) -> dict[str, Any]:
        with self._connection() as conn:
            return {row[0]: json.loads(row[1]) for row in conn.execute("SELECT key, value FROM settings ORDER BY key")}


__all__ = ["BUSY_TIMEOUT_S", "SCHEMA_VERSION", "LabelStore", "LabelStoreError", "utc_now"]
