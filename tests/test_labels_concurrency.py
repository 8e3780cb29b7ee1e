"""Several processes writing to one labels.db at the same moment lose no vote."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from spuraudit.labels import BACKGROUND, MAIN_OBJECT, LabelStore

N_PROCESSES = 4
VOTES_EACH = 50
REPO = Path(__file__).resolve().parents[1]


def write_votes(path: str, writer: int, start_flag: str) -> None:
    """Child process: wait for the start flag, then open the (not yet existing) store and vote."""
    flag = Path(start_flag)
    Path(f"{start_flag}.ready{writer}").touch()
    deadline = time.monotonic() + 120
    while not flag.exists():
        if time.monotonic() > deadline:
            raise TimeoutError("the start flag never appeared")
        time.sleep(0.005)
    store = LabelStore(path)  # all children race to create the schema too
    for n in range(VOTES_EACH):
        answer = BACKGROUND if n % 2 else MAIN_OBJECT
        store.add_vote(writer, n, answer, annotator=f"writer{writer}", confidence=n % 5 + 1, reason=str(n))
        if n % 10 == 0:
            store.labels()  # readers in between writers must not break anything either


def test_concurrent_processes_lose_no_vote(tmp_path: Path):
    path = tmp_path / "labels.db"
    flag = tmp_path / "start"
    # Separate interpreters, as separate CLI, app or job processes would be (started with subprocess rather
    # than multiprocessing, whose 'spawn' re-imports whatever `__main__` is, and under pytest that can be a
    # Streamlit script left there by an AppTest).
    code = "import sys; from tests.test_labels_concurrency import write_votes; " \
           "write_votes(sys.argv[1], int(sys.argv[2]), sys.argv[3])"
    processes = [
        subprocess.Popen([sys.executable, "-c", code, str(path), str(k), str(flag)], cwd=REPO,
                         stderr=subprocess.PIPE, text=True)
        for k in range(N_PROCESSES)
    ]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"start.ready{k}").exists() for k in range(N_PROCESSES)):
        assert time.monotonic() < deadline, "writers did not start"
        assert all(p.poll() is None for p in processes), [p.communicate()[1] for p in processes]
        time.sleep(0.01)
    flag.touch()  # all writers are waiting: release them together
    errors = [p.communicate(timeout=120)[1] for p in processes]
    assert [p.returncode for p in processes] == [0] * N_PROCESSES, errors

    store = LabelStore(path)
    votes = store.votes()
    assert len(votes) == N_PROCESSES * VOTES_EACH
    assert len({v.id for v in votes}) == len(votes)
    assert {(v.annotator, v.reason) for v in votes} == {
        (f"writer{k}", str(n)) for k in range(N_PROCESSES) for n in range(VOTES_EACH)
    }
    assert len(store.labels()) == N_PROCESSES * VOTES_EACH
    assert store.spurious_features() == {k: list(range(1, VOTES_EACH, 2)) for k in range(N_PROCESSES)}
