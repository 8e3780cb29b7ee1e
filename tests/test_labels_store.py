"""Aggregation rule, LabelStore behaviour and JSON exports, on real SQLite files."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest

from spuraudit.labels import (
    AMBIGUOUS,
    BACKGROUND,
    CORE,
    MAIN_OBJECT,
    SEPARATE_OBJECT,
    SPURIOUS,
    LabelStore,
    LabelStoreError,
    Vote,
    aggregate,
    aggregate_pair,
    decide,
    export_labels_json,
    export_spurious_map,
    write_json,
)
from spuraudit.labels.store import SCHEMA_VERSION


def make_votes(*answers: str, pair=(0, 0), machine: bool = False, start_id: int = 1) -> list[Vote]:
    """One vote per answer, each from a different annotator."""
    return [
        Vote(id=start_id + i, class_index=pair[0], feature_index=pair[1], answer=a,
             annotator=f"{'auto:x' if machine else 'w'}{start_id + i}", is_machine=machine)
        for i, a in enumerate(answers)
    ]


@pytest.fixture
def store(tmp_path: Path) -> LabelStore:
    return LabelStore(tmp_path / "labels.db")


# ---- the rule, by hand ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "answers, status, subtype",
    [
        # 5 votes, 3-2 each way
        ([BACKGROUND, BACKGROUND, BACKGROUND, MAIN_OBJECT, MAIN_OBJECT], SPURIOUS, BACKGROUND),
        ([MAIN_OBJECT, MAIN_OBJECT, MAIN_OBJECT, SEPARATE_OBJECT, BACKGROUND], CORE, None),
        # 3 spurious votes split between the two subtypes: spurious, subtype undecided
        ([BACKGROUND, BACKGROUND, SEPARATE_OBJECT, MAIN_OBJECT, MAIN_OBJECT], SPURIOUS, AMBIGUOUS),
        # 2 background + 2 separate_object + 1 main: spurious (4 of 5), no subtype majority
        ([BACKGROUND, BACKGROUND, SEPARATE_OBJECT, SEPARATE_OBJECT, MAIN_OBJECT], SPURIOUS, AMBIGUOUS),
        # 3 background vs 2 separate_object: background has more than half of all votes
        ([BACKGROUND, BACKGROUND, BACKGROUND, SEPARATE_OBJECT, SEPARATE_OBJECT], SPURIOUS, BACKGROUND),
        ([SEPARATE_OBJECT, SEPARATE_OBJECT, SEPARATE_OBJECT, BACKGROUND, MAIN_OBJECT], SPURIOUS, SEPARATE_OBJECT),
        # 2-2 tie
        ([MAIN_OBJECT, MAIN_OBJECT, BACKGROUND, SEPARATE_OBJECT], AMBIGUOUS, None),
        ([MAIN_OBJECT, BACKGROUND], AMBIGUOUS, None),
        ([MAIN_OBJECT], CORE, None),
        ([SEPARATE_OBJECT], SPURIOUS, SEPARATE_OBJECT),
    ],
)
def test_rule_hand_cases(answers, status, subtype):
    label = aggregate_pair(make_votes(*answers))
    assert (label.status, label.subtype) == (status, subtype)
    assert label.n_votes == len(answers)
    assert sum(label.counts.values()) == len(answers)
    assert not label.proposed


def test_decide_needs_a_vote():
    with pytest.raises(ValueError, match="at least one counted vote"):
        decide({MAIN_OBJECT: 0, BACKGROUND: 0, SEPARATE_OBJECT: 0})


def test_machine_only_is_proposed_and_human_overrides():
    machines = make_votes(BACKGROUND, BACKGROUND, machine=True)
    label = aggregate_pair(machines)
    assert (label.status, label.proposed) == (SPURIOUS, True)

    # One human vote outweighs any number of machine votes.
    human = make_votes(MAIN_OBJECT, start_id=10)
    label = aggregate_pair(machines + human)
    assert (label.status, label.proposed, label.n_votes) == (CORE, False, 1)
    assert label.annotators == ("w10",)


def test_latest_vote_per_annotator_counts_and_retracted_do_not():
    first = Vote(id=1, class_index=0, feature_index=0, answer=MAIN_OBJECT, annotator="ann")
    second = Vote(id=2, class_index=0, feature_index=0, answer=BACKGROUND, annotator="ann")
    label = aggregate_pair([second, first])  # order given does not matter, ids do
    assert (label.status, label.n_votes) == (SPURIOUS, 1)

    retracted = Vote(id=2, class_index=0, feature_index=0, answer=BACKGROUND, annotator="ann", retracted=True)
    assert aggregate_pair([first, retracted]).status == CORE
    assert aggregate_pair([retracted]) is None


def test_aggregate_groups_pairs_in_order():
    votes = make_votes(BACKGROUND, pair=(2, 7)) + make_votes(MAIN_OBJECT, pair=(0, 3), start_id=5)
    labels = aggregate(votes)
    assert list(labels) == [(0, 3), (2, 7)]
    with pytest.raises(ValueError, match="several pairs"):
        aggregate_pair(votes)


# ---- the store -----------------------------------------------------------------------------
def test_schema_is_created_once_in_wal_mode(tmp_path: Path):
    path = tmp_path / "sub" / "labels.db"
    LabelStore(path).add_vote(0, 1, MAIN_OBJECT, "ann")
    again = LabelStore(path)  # reopening must neither fail nor lose anything
    assert again.count_votes() == 1
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_newer_schema_is_refused(tmp_path: Path):
    path = tmp_path / "labels.db"
    LabelStore(path)
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(LabelStoreError, match="newer"):
        LabelStore(path)


def test_add_vote_round_trips_fields(store: LabelStore):
    vote_id = store.add_vote(3, 17, SEPARATE_OBJECT, " ann ", confidence=4, reason="a leash",
                             wordnet_id="n02085620", feature_rank=2)
    (vote,) = store.votes()
    assert vote.id == vote_id
    assert (vote.pair, vote.answer, vote.annotator, vote.confidence, vote.reason) == (
        (3, 17), SEPARATE_OBJECT, "ann", 4, "a leash")
    assert (vote.wordnet_id, vote.feature_rank, vote.is_machine, vote.retracted) == ("n02085620", 2, False, False)
    assert vote.created.endswith("+00:00")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(answer="spurious"), "answer must be one of"),
        (dict(confidence=0), "between 1 and 5"),
        (dict(confidence=6), "between 1 and 5"),
        (dict(confidence=3.5), "integer 1-5"),
        (dict(confidence="3"), "integer 1-5"),
        (dict(confidence=True), "integer 1-5"),
        (dict(annotator="  "), "annotator"),
        (dict(class_index=-1), "class_index"),
        (dict(feature_index=1.0), "feature_index"),
        (dict(evidence=[1, 2]), "evidence must be a dict"),
        (dict(evidence={"x": object()}), "JSON"),
    ],
)
def test_add_vote_refuses_bad_fields(store: LabelStore, kwargs, message):
    args = dict(class_index=0, feature_index=1, answer=MAIN_OBJECT, annotator="ann") | kwargs
    with pytest.raises(ValueError, match=message):
        store.add_vote(**args)
    assert store.count_votes(include_retracted=True) == 0


def test_numpy_values_are_accepted(store: LabelStore):
    store.add_vote(np.int64(2), np.int32(5), BACKGROUND, "auto:seg", confidence=np.int64(3),
                   evidence={"iou": np.float32(0.5), "mask": np.array([1, 0])}, is_machine=True)
    (vote,) = store.votes()
    assert vote.pair == (2, 5) and vote.confidence == 3
    assert vote.evidence == {"iou": 0.5, "mask": [1, 0]}


def test_undo_last_and_history(store: LabelStore):
    store.add_vote(0, 1, MAIN_OBJECT, "ann")
    store.add_vote(0, 1, BACKGROUND, "ann")  # changes her mind
    store.add_vote(0, 1, BACKGROUND, "bob")
    assert store.label(0, 1).counts[BACKGROUND] == 2

    undone = store.undo_last("ann")
    assert (undone.answer, undone.retracted) == (BACKGROUND, True)
    # Her earlier vote counts again; bob's stays.
    label = store.label(0, 1)
    assert (label.status, label.counts[MAIN_OBJECT], label.counts[BACKGROUND]) == (AMBIGUOUS, 1, 1)

    history = store.history(0, 1)
    assert [(v.annotator, v.answer, v.retracted) for v in history] == [
        ("ann", MAIN_OBJECT, False), ("ann", BACKGROUND, True), ("bob", BACKGROUND, False)]
    assert [v.id for v in history] == sorted(v.id for v in history)

    assert store.undo_last("ann").answer == MAIN_OBJECT
    assert store.undo_last("ann") is None
    assert store.undo_last("nobody") is None
    assert store.count_votes() == 1 and store.count_votes(include_retracted=True) == 3


def test_retract_by_id(store: LabelStore):
    vote_id = store.add_vote(0, 1, MAIN_OBJECT, "ann")
    assert store.retract(vote_id).retracted
    assert store.retract(vote_id) is None
    assert store.vote(vote_id).retracted
    assert store.labels() == {}


def test_human_overrides_machine_in_store(store: LabelStore):
    store.replace_machine_votes("auto:clip", [
        {"class_index": 1, "feature_index": 4, "answer": BACKGROUND, "evidence": {"score": 0.9}},
        {"class_index": 1, "feature_index": 5, "answer": MAIN_OBJECT},
    ])
    labels = store.labels()
    assert labels[(1, 4)].proposed and labels[(1, 4)].status == SPURIOUS
    assert store.spurious_features() == {1: [4]}
    assert store.spurious_features(include_proposed=False) == {}
    assert [lab.pair for lab in store.proposed_labels()] == [(1, 4), (1, 5)]

    store.add_vote(1, 4, MAIN_OBJECT, "ann")
    label = store.label(1, 4)
    assert (label.status, label.proposed, label.annotators) == (CORE, False, ("ann",))
    assert store.spurious_features() == {}
    assert store.reviewed_pairs() == {(1, 4)}


def test_replace_machine_votes_is_atomic_and_scoped(store: LabelStore):
    store.add_vote(0, 0, MAIN_OBJECT, "ann")
    store.replace_machine_votes("auto:seg", [{"class_index": 0, "feature_index": d, "answer": BACKGROUND}
                                             for d in range(3)])
    store.replace_machine_votes("auto:clip", [{"class_index": 0, "feature_index": 9, "answer": BACKGROUND}])
    assert store.count_votes(machine=True) == 4

    # A re-run replaces this labeler's votes only.
    assert store.replace_machine_votes("auto:seg", [{"class_index": 0, "feature_index": 7,
                                                     "answer": SEPARATE_OBJECT, "confidence": 2}]) == 1
    assert sorted(v.feature_index for v in store.votes(annotator="auto:seg")) == [7]
    assert store.annotators(machine=True) == ["auto:clip", "auto:seg"]
    assert store.annotators() == ["ann"]

    # One bad vote in the batch: nothing changes.
    before = store.votes()
    with pytest.raises(ValueError, match="answer must be one of"):
        store.replace_machine_votes("auto:seg", [{"class_index": 0, "feature_index": 1, "answer": BACKGROUND},
                                                 {"class_index": 0, "feature_index": 2, "answer": "sky"}])
    with pytest.raises(ValueError, match="unknown machine vote field"):
        store.replace_machine_votes("auto:seg", [{"class_index": 0, "feature_index": 1, "answer": BACKGROUND,
                                                  "colour": "red"}])
    assert store.votes() == before


def test_disagreement_and_reviewed_pairs(store: LabelStore):
    for annotator, answer in [("a", MAIN_OBJECT), ("b", BACKGROUND), ("c", BACKGROUND)]:
        store.add_vote(0, 1, answer, annotator)
    for annotator, answer in [("a", BACKGROUND), ("b", SEPARATE_OBJECT)]:
        store.add_vote(0, 2, answer, annotator)
    store.add_vote(1, 3, MAIN_OBJECT, "a")
    assert [lab.pair for lab in store.pairs_with_disagreement()] == [(0, 1)]
    assert [lab.pair for lab in store.pairs_with_disagreement(include_subtype=True)] == [(0, 1), (0, 2)]
    assert store.reviewed_pairs() == {(0, 1), (0, 2), (1, 3)}
    assert store.reviewed_pairs("c") == {(0, 1)}
    assert set(store.labels(class_index=0)) == {(0, 1), (0, 2)}
    assert store.spurious_features() == {0: [1, 2]}


def test_settings(tmp_path: Path):
    store = LabelStore(tmp_path / "labels.db")
    assert store.get_setting("annotator") is None
    assert store.get_setting("annotator", "anonymous") == "anonymous"
    store.set_setting("annotator", "ann")
    store.set_setting("annotators", ["ann", "bob"])
    store.set_setting("annotator", "bob")  # overwrite
    reopened = LabelStore(tmp_path / "labels.db")
    assert reopened.get_setting("annotator") == "bob"
    assert reopened.settings() == {"annotator": "bob", "annotators": ["ann", "bob"]}
    reopened.delete_setting("annotator")
    assert reopened.get_setting("annotator") is None
    with pytest.raises(ValueError, match="JSON"):
        reopened.set_setting("x", object())


def test_threads_share_one_store(store: LabelStore):
    """Streamlit runs scripts in threads: one instance used from many threads at once."""
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            for n in range(20):
                store.add_vote(k, n, BACKGROUND, f"t{k}", reason=str(n))
                store.labels()
        except BaseException as err:  # surfaced by the assert below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.count_votes() == 80
    assert {(v.annotator, v.reason) for v in store.votes()} == {(f"t{k}", str(n)) for k in range(4) for n in range(20)}


# ---- JSON exports --------------------------------------------------------------------------
def test_json_exports(store: LabelStore, tmp_path: Path):
    for annotator in ("a", "b", "c"):
        store.add_vote(3, 10, BACKGROUND, annotator)
    store.add_vote(3, 2, MAIN_OBJECT, "a")
    store.replace_machine_votes("auto:seg", [{"class_index": 12, "feature_index": 1, "answer": SEPARATE_OBJECT}])

    data = export_labels_json(store)
    assert data["format"] == "spuraudit-labels" and data["version"] == 1
    assert data["labels"] == [
        {"class_index": 3, "feature_index": 2, "status": CORE, "subtype": None, "n_votes": 1, "proposed": False},
        {"class_index": 3, "feature_index": 10, "status": SPURIOUS, "subtype": BACKGROUND, "n_votes": 3,
         "proposed": False},
        {"class_index": 12, "feature_index": 1, "status": SPURIOUS, "subtype": SEPARATE_OBJECT, "n_votes": 1,
         "proposed": True},
    ]
    assert export_spurious_map(store) == {"3": [10], "12": [1]}
    assert export_spurious_map(store, include_proposed=False) == {"3": [10]}

    target = tmp_path / "out" / "labels.json"
    write_json(data, target)
    write_json(export_spurious_map(store), target)  # replaces the file whole
    assert json.loads(target.read_text()) == {"3": [10], "12": [1]}
    assert [p.name for p in target.parent.iterdir()] == ["labels.json"]  # no temporary file left
