"""Slow explanations (feature attacks, class activation maps) computed off the page's thread.

A page asks for a result by key; if it is not ready it gets None at once and the work is queued for one
background thread per server process, so a vote or a page turn never waits on 100 gradient steps. Pages
queue the pairs that come next too (prefetch). Results are held in a small in-memory table; the functions
queued are expected to keep their own disk cache (feature attacks do), so a restarted server refills the
table from disk in milliseconds instead of recomputing.

    got = background.result(key)            # None while not ready
    background.request(key, compute)        # queued once; compute() -> any picklable-free value
"""

from __future__ import annotations

import threading
import traceback
from collections import OrderedDict, deque
from typing import Any, Callable

_MAX_RESULTS = 256  # a few hundred rows of 8 small display images: tens of MB at most
_MAX_WAITING = 64  # older requests than this are dropped: the reviewer has moved on


class _Worker:
    """One daemon thread working through a queue of (key, compute) requests, newest first."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._waiting: deque[tuple[str, Callable[[], Any]]] = deque()
        self._queued: set[str] = set()
        self._running: str | None = None
        self._done: OrderedDict[str, Any] = OrderedDict()
        self._errors: dict[str, str] = {}
        self._thread: threading.Thread | None = None

    def result(self, key: str) -> Any | None:
        with self._lock:
            if key in self._done:
                self._done.move_to_end(key)
                return self._done[key]
            return None

    def error(self, key: str) -> str | None:
        with self._lock:
            return self._errors.get(key)

    def state(self, key: str) -> str:
        """'done', 'running', 'queued', 'failed' or 'unknown'."""
        with self._lock:
            if key in self._done:
                return "done"
            if key in self._errors:
                return "failed"
            if key == self._running:
                return "running"
            return "queued" if key in self._queued else "unknown"

    def request(self, key: str, compute: Callable[[], Any], urgent: bool = True) -> None:
        """Queue `compute` under `key` unless it is done, queued or running. Urgent requests (what the
        page shows now) go before prefetches."""
        with self._lock:
            if key in self._done or key == self._running:
                return
            if key in self._queued:
                if urgent:  # what the page shows now jumps ahead of prefetched pairs
                    self._waiting = deque(item for item in self._waiting if item[0] != key)
                    self._waiting.appendleft((key, compute))
                return
            self._errors.pop(key, None)
            (self._waiting.appendleft if urgent else self._waiting.append)((key, compute))
            self._queued.add(key)
            while len(self._waiting) > _MAX_WAITING:
                dropped, _ = self._waiting.pop()
                self._queued.discard(dropped)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="spuraudit-explain", daemon=True)
                self._thread.start()
            self._wake.notify()

    def _loop(self) -> None:
        while True:
            with self._lock:
                while not self._waiting:
                    if not self._wake.wait(timeout=60.0) and not self._waiting:
                        self._thread = None  # idle a minute: let the thread go; request() starts another
                        return
                key, compute = self._waiting.popleft()
                self._queued.discard(key)
                self._running = key
            try:
                value = compute()
            except Exception:  # noqa: BLE001  (kept and shown on the page rather than killing the thread)
                with self._lock:
                    self._errors[key] = traceback.format_exc(limit=3)
                    self._running = None
                continue
            with self._lock:
                self._done[key] = value
                while len(self._done) > _MAX_RESULTS:
                    self._done.popitem(last=False)
                self._running = None

    def wait(self, key: str, timeout: float) -> Any | None:
        """Block up to `timeout` seconds for `key` (scripts and tests; pages never wait)."""
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.state(key) in ("done", "failed"):
                break
            time.sleep(0.05)
        return self.result(key)


_worker = _Worker()
result = _worker.result
error = _worker.error
state = _worker.state
request = _worker.request
wait = _worker.wait
