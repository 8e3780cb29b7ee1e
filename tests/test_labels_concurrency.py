"""Several processes writing to one labels.db at the same moment lose no vote."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from spuraudit.labels import BACKGROUND, MAIN_OBJECT, LabelStore

N_PROCESSES = 4
VOTES_EACH = 50


def _write_votes(path: str, writer: int, barrier) -> None:
    """Child process: wait for the others, then open the (not yet existing) store and vote."""
    barrier.wait(timeout=60)
    store = LabelStore(path)  # all children race to create the schema too
    for n in range(VOTES_EACH):
        answer = BACKGROUND if n % 2 else MAIN_OBJECT
        store.add_vote(writer, n, answer, annotator=f"writer{writer}", confidence=n % 5 + 1, reason=str(n))
        if n % 10 == 0:
            store.labels()  # readers in between writers must not break anything either


def test_concurrent_processes_lose_no_vote(tmp_path: Path):
    path = tmp_path / "labels.db"
    # 'spawn' gives each child a fresh interpreter, as separate CLI or job processes would have.
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(N_PROCESSES)
    processes = [context.Process(target=_write_votes, args=(str(path), k, barrier)) for k in range(N_PROCESSES)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert [p.exitcode for p in processes] == [0] * N_PROCESSES

    store = LabelStore(path)
    votes = store.votes()
    assert len(votes) == N_PROCESSES * VOTES_EACH
    assert len({v.id for v in votes}) == len(votes)
    assert {(v.annotator, v.reason) for v in votes} == {
        (f"writer{k}", str(n)) for k in range(N_PROCESSES) for n in range(VOTES_EACH)
    }
    assert len(store.labels()) == N_PROCESSES * VOTES_EACH
    assert store.spurious_features() == {k: list(range(1, VOTES_EACH, 2)) for k in range(N_PROCESSES)}
