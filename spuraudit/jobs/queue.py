"""The job queue: one SQLite file shared by the web app, worker processes and job processes.

A job is a row. The app submits rows and polls them; workers claim queued rows atomically
(`BEGIN IMMEDIATE` takes the database's write lock before reading, so two workers can never
claim the same row) and run each in a child process that reports progress into the row.
Every call opens its own short-lived connection, so a `JobQueue` is safe to share between
threads and cheap to create in any process.

Statuses: queued -> running -> done | failed | cancelled (queued -> cancelled directly).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .job import ACTIVE, CANCELLED, DONE, FAILED, FINISHED, QUEUED, RUNNING, STATUSES, Job
from .kinds import target_for
from .util import age_seconds, pid_alive, utc_now

__all__ = ["ACTIVE", "CANCELLED", "DONE", "FAILED", "FINISHED", "QUEUED", "RUNNING", "STATUSES", "Job", "JobQueue"]

# A running job whose heartbeat is older than this is treated as orphaned even if a process with
# its worker's pid exists: pids get reused, and a live worker beats every couple of seconds.
DEFAULT_STALE_AFTER_S = 120.0
# Worker rows not refreshed for this long are not counted as live workers (same pid-reuse reason).
WORKER_STALE_AFTER_S = 60.0
BUSY_TIMEOUT_S = 30.0

_READY: set[Path] = set()  # databases this process has already set up

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    kind             TEXT NOT NULL,
    target           TEXT,
    title            TEXT,
    params           TEXT NOT NULL DEFAULT '{}',
    status           TEXT NOT NULL DEFAULT 'queued',
    progress         REAL NOT NULL DEFAULT 0.0,
    message          TEXT NOT NULL DEFAULT '',
    created          TEXT NOT NULL,
    started          TEXT,
    finished         TEXT,
    worker_pid       INTEGER,
    runner_pid       INTEGER,
    heartbeat        TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    log_path         TEXT,
    result           TEXT,
    error            TEXT
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, id);
CREATE TABLE IF NOT EXISTS workers (
    pid       INTEGER PRIMARY KEY,
    started   TEXT NOT NULL,
    last_seen TEXT NOT NULL
);
"""


class JobQueue:
    """The jobs table of one SQLite file.

    Args:
        db_path: the database file (created with its folder on first use).
        jobs_dir: where per-job folders (`<jobs_dir>/<id>/`, holding `log.txt`) go; default: a
            folder next to the database named after it (`jobs.db` -> `jobs/`).
        stale_after: heartbeat age (seconds) after which `recover_stale` gives up on a running job.
    """

    def __init__(self, db_path: str | Path, jobs_dir: str | Path | None = None,
                 stale_after: float = DEFAULT_STALE_AFTER_S) -> None:
        self.db_path = Path(db_path).resolve()
        self.jobs_dir = Path(jobs_dir).resolve() if jobs_dir else self.db_path.parent / self.db_path.stem
        self.stale_after = float(stale_after)
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self._init_schema()

    def __repr__(self) -> str:
        return f"JobQueue({str(self.db_path)!r})"

    # ---- connections -----------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        """A connection to a usable database: a deleted, emptied or damaged file is first recreated
        (see `_recover`), so every caller either works or gets a clear error, never "no such table"."""
        if not self.db_path.exists():
            self._recover("the job database was missing (deleted?)")
        try:
            conn = self._open()
            try:
                conn.execute("SELECT 1 FROM jobs LIMIT 0")
            except BaseException:
                conn.close()
                raise
            return conn
        except sqlite3.DatabaseError as exc:
            if not _is_damage(exc):
                raise
            self._recover(f"the job database could not be used ({exc})")
        return self._open()

    def _problem(self) -> str | None:
        """Why the file is not a usable job database (missing table, not SQLite, damaged), or None.
        A busy database is not a problem here: that error goes to the caller."""
        try:
            conn = self._open()
            try:
                conn.execute("SELECT 1 FROM jobs LIMIT 0")
            finally:
                conn.close()
        except sqlite3.DatabaseError as exc:
            if not _is_damage(exc):
                raise
            return str(exc)
        return None

    def _open(self) -> sqlite3.Connection:
        # isolation_level=None: no implicit transactions; every write below opens its own explicitly.
        conn = sqlite3.connect(self.db_path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        conn.execute("PRAGMA synchronous = NORMAL")  # safe with WAL; a crash loses at most the last commit
        return conn

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that holds the write lock from its first statement (no lost updates)."""
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            conn.close()

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        conn = self._connect()
        try:
            yield conn
        finally:
            conn.close()

    def _init_schema(self) -> None:
        # Pages build a JobQueue on every refresh; set the file up once per process, not each time.
        if self.db_path in _READY and self.db_path.exists():
            return
        if not self.db_path.exists() and self._high_water() > 0:
            self._recover("the job database was missing (deleted?)")
            return
        try:
            self._create_schema()
        except sqlite3.DatabaseError as exc:
            if not _is_damage(exc):
                raise
            self._recover(f"the job database could not be used ({exc})")

    def _create_schema(self) -> None:
        conn = self._open()
        try:
            # WAL lets the app read rows while a job writes progress; the mode is stored in the file.
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                try:
                    conn.execute("PRAGMA journal_mode = WAL")
                except sqlite3.OperationalError:
                    pass  # another process is switching it at this moment; the file ends up in WAL anyway
        finally:
            conn.close()
        conn = self._open()
        try:
            conn.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            # Ids continue after the highest ever handed out, even in a recreated file: a new job never
            # takes a lost job's id, nor its folder and log.
            high = self._high_water()
            seq = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'jobs'").fetchone()
            if seq is None:
                conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('jobs', ?)", (high,))
            elif seq[0] < high:
                conn.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'jobs'", (high,))
            conn.execute("COMMIT")
        finally:
            conn.close()
        _READY.add(self.db_path)

    # ---- a lost or damaged database -------------------------------------------------------------------
    @property
    def lost_path(self) -> Path:
        """Notes on each time the database was lost and recreated (one line each, oldest first)."""
        return self.jobs_dir / "lost.txt"

    def lost_notes(self) -> list[str]:
        try:
            return self.lost_path.read_text(encoding="utf-8").splitlines()
        except OSError:
            return []

    def reset_since(self, moment: str | None) -> bool:
        """Whether the database was recreated at or after `moment` (a `utc_now` time; None: ever)."""
        return any(moment is None or line.split(" ", 1)[0] >= moment for line in self.lost_notes())

    def _high_water(self, folders: bool = True) -> int:
        """The highest job id ever used here: the id file kept beside the job folders, or the folders."""
        best = 0
        try:
            best = int((self.jobs_dir / _LAST_ID).read_text().strip() or 0)
        except (OSError, ValueError):
            pass
        if not folders:
            return best
        try:
            best = max([best] + [int(p.name) for p in self.jobs_dir.iterdir() if p.name.isdigit()])
        except OSError:
            pass
        return best

    def _note_id(self, job_id: int) -> None:
        """Raise the kept high-water mark to `job_id` (under the lock, so it only ever grows)."""
        try:
            with _file_lock(self._lock_path):
                if job_id > self._high_water(folders=False):
                    _write_atomic(self.jobs_dir / _LAST_ID, f"{job_id}\n")
        except OSError:
            pass  # the job folders still bound the ids; a full disk must not stop a submit that worked

    @property
    def _lock_path(self) -> Path:
        return self.jobs_dir / ".lock"

    def _recover(self, reason: str) -> None:
        """Recreate a missing, empty or damaged database with its schema, once, whichever process sees it
        first. A damaged file is kept aside (`jobs.db.damaged-<time>`) rather than deleted; the jobs it
        held are lost, which a line in `lost.txt` and on stderr says."""
        with _file_lock(self._lock_path):
            damaged = False
            if self.db_path.exists():
                problem = self._problem()
                if problem is None:
                    return  # another process recreated it meanwhile
                damaged = "no such table" not in problem
                # Say what the file is now: it may have changed since the caller saw its error.
                reason = f"the job database could not be used ({problem})"
            now = utc_now()
            stamp = now.replace(":", "").replace("-", "")[:15]
            aside = None
            if damaged:
                aside = self.db_path.with_name(f"{self.db_path.name}.damaged-{stamp}")
                os.replace(self.db_path, aside)
            # A write-ahead log left by the lost file must not be replayed into the new one.
            for suffix in ("-wal", "-shm"):
                extra = self.db_path.with_name(self.db_path.name + suffix)
                if aside is not None and extra.exists():
                    os.replace(extra, aside.with_name(aside.name + suffix))
                else:
                    extra.unlink(missing_ok=True)
            _READY.discard(self.db_path)
            self._create_schema()
            kept = f"; the damaged file is kept as {aside.name}" if aside else ""
            line = (f"{now} {reason}: recreated {self.db_path.name} empty; jobs queued or running before "
                    f"(ids up to {self._high_water()}) are lost from the list{kept}. New jobs start at id "
                    f"{self._high_water() + 1}.")
            if damaged or self._high_water() > 0:  # else nothing was ever in it
                _append_line(self.lost_path, line)
                print(f"spuraudit jobs: {line}", file=sys.stderr, flush=True)

    def restore_if_lost(self, job: Job, note: str) -> bool:
        """Put back the row of a running job that vanished because the database was recreated meanwhile
        (a running job cannot be deleted, so a missing row means the file was lost). Returns whether
        the row is there now, restored or not; False when it was not lost in a reset."""
        with self._read() as conn:
            if conn.execute("SELECT 1 FROM jobs WHERE id = ?", (int(job.id),)).fetchone():
                return True
        if not self.reset_since(job.started or job.created):
            return False
        now = utc_now()
        with self._tx() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO jobs (id, kind, target, title, params, status, progress, message, created,"
                " started, worker_pid, runner_pid, heartbeat, log_path)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (int(job.id), job.kind, job.target, job.title, json.dumps(job.params), RUNNING, job.progress, note,
                 job.created, job.started or now, job.worker_pid, job.runner_pid, now, job.log_path))
        if job.log_path:
            _append_line(job.log_path, f"{now} {note}")
        return True

    # ---- submitting and reading -----------------------------------------------------------------
    def submit(self, kind: str, params: dict[str, Any] | None = None, title: str | None = None) -> int:
        """Queue a job of `kind` (a registered name or "package.module:function") with JSON params.

        The kind is resolved to its import path now, so a bad kind fails here rather than in a worker,
        and kinds registered at run time in this process also work in the worker's processes.
        """
        params = dict(params or {})
        encoded = json.dumps(params)  # fail now on params that cannot reach the job
        target = target_for(kind)
        with self._tx() as conn:
            cur = conn.execute(
                "INSERT INTO jobs (kind, target, title, params, status, created) VALUES (?, ?, ?, ?, ?, ?)",
                (kind, target, title, encoded, QUEUED, utc_now()))
            job_id = int(cur.lastrowid)
        self._note_id(job_id)
        return job_id

    def get(self, job_id: int) -> Job:
        """The job's current row; KeyError when there is no such job."""
        with self._read() as conn:
            row = conn.execute("SELECT * FROM jobs WHERE id = ?", (int(job_id),)).fetchone()
        if row is None:
            raise KeyError(f"no job {job_id} in {self.db_path}")
        return Job.from_row(row)

    def list(self, status: str | Iterable[str] | None = None, kind: str | None = None,
             limit: int | None = 100) -> list[Job]:
        """Jobs newest first, optionally only those with the given status(es) and/or kind."""
        clauses: list[str] = []
        args: list[Any] = []
        if status is not None:
            wanted = [status] if isinstance(status, str) else [str(s) for s in status]
            clauses.append(f"status IN ({', '.join('?' * len(wanted))})")
            args += wanted
        if kind is not None:
            clauses.append("kind = ?")
            args.append(kind)
        sql = "SELECT * FROM jobs"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(int(limit))
        with self._read() as conn:
            return [Job.from_row(r) for r in conn.execute(sql, args).fetchall()]

    def counts(self) -> dict[str, int]:
        """How many jobs have each status."""
        with self._read() as conn:
            rows = conn.execute("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status").fetchall()
        out = {s: 0 for s in STATUSES}
        out.update({r["status"]: r["n"] for r in rows})
        return out

    def work_dir(self, job_id: int) -> Path:
        """The job's own folder (not created here)."""
        return self.jobs_dir / str(int(job_id))

    # ---- the worker's side ------------------------------------------------------------------------
    def claim(self, worker_pid: int) -> Job | None:
        """Atomically take the oldest queued job and mark it running for `worker_pid`.

        The select and the update happen inside one `BEGIN IMMEDIATE` transaction, which holds the
        write lock throughout, so concurrent workers each get a different job (or None).
        """
        # A cheap read first: idle workers poll often and need not take the write lock to find nothing.
        with self._read() as conn:
            if conn.execute("SELECT 1 FROM jobs WHERE status = ? LIMIT 1", (QUEUED,)).fetchone() is None:
                return None
        now = utc_now()
        with self._tx() as conn:
            row = conn.execute("SELECT id FROM jobs WHERE status = ? ORDER BY id LIMIT 1", (QUEUED,)).fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE jobs SET status = ?, started = ?, heartbeat = ?, worker_pid = ?, runner_pid = NULL,"
                " message = 'starting' WHERE id = ?",
                (RUNNING, now, now, int(worker_pid), row["id"]))
            return Job.from_row(conn.execute("SELECT * FROM jobs WHERE id = ?", (row["id"],)).fetchone())

    def set_runner(self, job_id: int, runner_pid: int, log_path: str | Path | None = None) -> None:
        """Record the child process running the job (and its log file)."""
        with self._tx() as conn:
            conn.execute("UPDATE jobs SET runner_pid = ?, log_path = COALESCE(?, log_path), heartbeat = ?"
                         " WHERE id = ?", (int(runner_pid), str(log_path) if log_path else None, utc_now(),
                                           int(job_id)))

    def set_progress(self, job_id: int, fraction: float | None, message: str | None = None) -> bool:
        """Store progress (clamped to 0..1) and/or a message of a running job; also a heartbeat.

        Returns False when the job is no longer running (a late report is ignored).
        """
        sets = ["heartbeat = ?"]
        args: list[Any] = [utc_now()]
        if fraction is not None:
            sets.append("progress = ?")
            args.append(min(max(float(fraction), 0.0), 1.0))
        if message is not None:
            sets.append("message = ?")
            args.append(str(message))
        with self._tx() as conn:
            cur = conn.execute(f"UPDATE jobs SET {', '.join(sets)} WHERE id = ? AND status = ?",
                               (*args, int(job_id), RUNNING))
            return cur.rowcount == 1

    def heartbeat(self, job_id: int) -> bool:
        """Mark a running job as still looked after; False when it is no longer running."""
        return self.set_progress(job_id, None, None)

    def finish(self, job_id: int, result: Any = None, message: str | None = None) -> bool:
        """Mark a running job done with its (JSON) result and progress 1.0."""
        encoded = json.dumps(result)
        return self._end(job_id, DONE, message if message is not None else "done",
                         {"result": encoded, "progress": 1.0})

    def fail(self, job_id: int, error: str, message: str | None = None) -> bool:
        """Mark a running job failed; `error` is the full text (traceback), `message` a one-liner."""
        if message is None:
            lines = [ln for ln in str(error).strip().splitlines() if ln.strip()]
            message = lines[-1].strip() if lines else "failed"
        return self._end(job_id, FAILED, message, {"error": str(error)})

    def mark_cancelled(self, job_id: int, message: str = "cancelled") -> bool:
        """Mark a running job cancelled (after its process stopped)."""
        return self._end(job_id, CANCELLED, message, {})

    def _end(self, job_id: int, status: str, message: str, extra: dict[str, Any]) -> bool:
        # Only a running job can end: a row already failed by `recover_stale` or cancelled stays so.
        sets = ["status = ?", "message = ?", "finished = ?", "heartbeat = ?"] + [f"{k} = ?" for k in extra]
        now = utc_now()
        with self._tx() as conn:
            cur = conn.execute(f"UPDATE jobs SET {', '.join(sets)} WHERE id = ? AND status = ?",
                               (status, message, now, now, *extra.values(), int(job_id), RUNNING))
            return cur.rowcount == 1

    # ---- the user's side ---------------------------------------------------------------------------
    def cancel(self, job_id: int) -> bool:
        """Cancel a job: a queued one at once; a running one is flagged and its worker stops it.

        Returns False when the job had already finished.
        """
        now = utc_now()
        with self._tx() as conn:
            cur = conn.execute("UPDATE jobs SET status = ?, message = 'cancelled', finished = ? "
                               "WHERE id = ? AND status = ?", (CANCELLED, now, int(job_id), QUEUED))
            if cur.rowcount:
                return True
            cur = conn.execute("UPDATE jobs SET cancel_requested = 1, message = 'cancelling' "
                               "WHERE id = ? AND status = ?", (int(job_id), RUNNING))
            return cur.rowcount == 1

    def cancel_requested(self, job_id: int) -> bool:
        """Whether someone asked to cancel the job (or it is no longer running at all)."""
        with self._read() as conn:
            row = conn.execute("SELECT status, cancel_requested FROM jobs WHERE id = ?", (int(job_id),)).fetchone()
        if row is None:
            # A running job's row cannot be deleted; gone after the file was recreated, its worker puts
            # it back (`restore_if_lost`), so that is no reason to stop.
            return not self.reset_since(None)
        return bool(row["cancel_requested"]) or row["status"] != RUNNING

    def retry(self, job_id: int) -> int:
        """Submit a finished job's kind, params and title again as a new job; returns the new id."""
        job = self.get(job_id)
        if not job.is_finished:
            raise ValueError(f"job {job_id} is {job.status}; only finished jobs can be run again")
        with self._tx() as conn:
            cur = conn.execute(
                "INSERT INTO jobs (kind, target, title, params, status, created) VALUES (?, ?, ?, ?, ?, ?)",
                (job.kind, job.target, job.title, json.dumps(job.params), QUEUED, utc_now()))
            new_id = int(cur.lastrowid)
        self._note_id(new_id)
        return new_id

    def delete(self, job_id: int) -> bool:
        """Remove a job that is not running, and its folder; False when there was no such job."""
        with self._tx() as conn:
            row = conn.execute("SELECT status FROM jobs WHERE id = ?", (int(job_id),)).fetchone()
            if row is None:
                return False
            if row["status"] == RUNNING:
                raise ValueError(f"job {job_id} is running; cancel it before deleting it")
            conn.execute("DELETE FROM jobs WHERE id = ?", (int(job_id),))
        shutil.rmtree(self.work_dir(job_id), ignore_errors=True)
        return True

    # ---- recovery ----------------------------------------------------------------------------------
    def recover_stale(self, stale_after: float | None = None) -> list[int]:
        """Mark running jobs whose worker is gone as failed ("worker died"); returns their ids.

        A worker is gone when its pid no longer exists on this machine, or (fallback for reused
        pids) when the job's heartbeat is older than `stale_after` seconds. Such jobs are failed,
        not re-queued: a job that crashes its worker would otherwise crash every worker in turn.
        The user can run it again (`retry`). The orphaned job process notices its worker's death
        by itself and stops; it is not killed from here, because by the time this runs its pid
        may belong to an unrelated process.
        """
        limit = self.stale_after if stale_after is None else float(stale_after)
        recovered: list[int] = []
        # Pages call this on every refresh: look without the write lock first; nearly always all is well.
        with self._read() as conn:
            if not _find_stale(conn, limit):
                return recovered
        with self._tx() as conn:
            now = utc_now()
            for row in _find_stale(conn, limit):  # again, under the lock: the rows may have moved on
                reason = row["reason"]
                conn.execute("UPDATE jobs SET status = ?, message = 'worker died', finished = ?, "
                             "error = COALESCE(error, ?) WHERE id = ? AND status = ?",
                             (FAILED, now, reason, row["id"], RUNNING))
                recovered.append(int(row["id"]))
                if row["log_path"]:
                    _append_line(row["log_path"], f"{now} {reason}: marked failed")
        return recovered

    # ---- worker registry ------------------------------------------------------------------------------
    def register_worker(self, pid: int, conn: sqlite3.Connection | None = None) -> None:
        """Record (or refresh) a worker process serving this database."""
        now = utc_now()
        sql = ("INSERT INTO workers (pid, started, last_seen) VALUES (?, ?, ?) "
               "ON CONFLICT (pid) DO UPDATE SET last_seen = excluded.last_seen")
        if conn is not None:
            conn.execute(sql, (int(pid), now, now))
            return
        with self._tx() as c:
            c.execute(sql, (int(pid), now, now))

    def touch_worker(self, pid: int, job_id: int | None = None) -> None:
        """A worker's periodic sign of life (and the heartbeat of the job it is running)."""
        now = utc_now()
        with self._tx() as conn:
            # An upsert: the row may have been pruned while this worker was blocked for a long time.
            conn.execute("INSERT INTO workers (pid, started, last_seen) VALUES (?, ?, ?) "
                         "ON CONFLICT (pid) DO UPDATE SET last_seen = excluded.last_seen", (int(pid), now, now))
            if job_id is not None:
                conn.execute("UPDATE jobs SET heartbeat = ? WHERE id = ? AND status = ?", (now, int(job_id), RUNNING))

    def unregister_worker(self, pid: int, only_if_idle: bool = False) -> bool:
        """Remove a worker's row. With `only_if_idle`, only when no job is queued (checked in the same
        transaction, so a job submitted just before is never left without a worker); returns
        whether the row was removed."""
        with self._tx() as conn:
            if only_if_idle and conn.execute("SELECT 1 FROM jobs WHERE status = ? LIMIT 1", (QUEUED,)).fetchone():
                return False
            conn.execute("DELETE FROM workers WHERE pid = ?", (int(pid),))
            return True

    def live_worker_or_start(self, start: Callable[[], int]) -> tuple[int, bool]:
        """The pid of a live worker, or else the pid `start()` returns, registered as a worker.

        Checking and registering happen in one write transaction, so two processes calling this at
        the same moment start one worker between them. Returns (pid, whether it was started now).
        """
        with self._tx() as conn:
            live = self.live_worker_pids(conn)
            if live:
                return live[0], False
            pid = int(start())
            self.register_worker(pid, conn)
            return pid, True

    def live_worker_pids(self, conn: sqlite3.Connection | None = None) -> list[int]:
        """Pids of registered workers that are alive and were seen recently; forgets dead ones."""
        if conn is None:
            with self._tx() as c:
                return self.live_worker_pids(c)
        rows = conn.execute("SELECT pid, last_seen FROM workers ORDER BY pid").fetchall()
        live: list[int] = []
        for row in rows:
            age = age_seconds(row["last_seen"])
            if pid_alive(row["pid"]) and (age is None or age <= WORKER_STALE_AFTER_S):
                live.append(int(row["pid"]))
            else:
                conn.execute("DELETE FROM workers WHERE pid = ?", (row["pid"],))
        return live


def _find_stale(conn: sqlite3.Connection, limit: float) -> list[dict[str, Any]]:
    """Running jobs whose worker is gone, each with the reason it counts as gone."""
    rows = conn.execute("SELECT id, worker_pid, heartbeat, log_path FROM jobs WHERE status = ?", (RUNNING,)).fetchall()
    stale = []
    for row in rows:
        age = age_seconds(row["heartbeat"])
        if not pid_alive(row["worker_pid"]):
            reason = f"worker died (process {row['worker_pid']} is gone)"
        elif age is not None and age > limit:
            reason = f"worker died (no heartbeat for {age:.0f} s)"
        else:
            continue
        stale.append({**dict(row), "reason": reason})
    return stale


def _append_line(path: str | Path, line: str) -> None:
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line.rstrip("\n") + "\n")
    except OSError:
        pass  # the log is a convenience; never fail a state change over it


_LAST_ID = "last-id"
# Errors that mean the file is not (or no longer) a job database, as opposed to a busy one.
_DAMAGE = ("no such table", "not a database", "malformed", "disk image", "file is encrypted")


def _is_damage(exc: sqlite3.DatabaseError) -> bool:
    return any(text in str(exc).lower() for text in _DAMAGE)


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between processes (fcntl.flock on a side file; a no-op where there is none)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            yield
            return
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
