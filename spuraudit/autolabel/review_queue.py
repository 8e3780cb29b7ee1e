"""The review queue: which (class, feature) pairs a person should look at, in what order, and why.

Pure functions over the audit's top features and the label store's votes, so the review page
stays thin and the filters can be tested without Streamlit.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd

from ..labels.aggregate import aggregate_pair
from ..labels.vote import MAIN_OBJECT, Vote

FILTERS = {
    "all": "every pair",
    "unreviewed": "no person has voted yet",
    "not mine": "you have not voted yet",
    "disagree": "the counted votes split between core and spurious",
    "to confirm": "only machines have proposed a label",
}

QUEUE_COLUMNS = [
    "class_index", "feature_index", "rank", "status", "subtype", "proposed", "n_human", "n_machine", "mine",
    "machine", "disagreement",
]


def queue_pairs(audit, top_k: int, split: str | None, mode: str,
                voted: Iterable[tuple[int, int]] = ()) -> list[tuple[int, int, int | None]]:
    """(class, feature, rank) of every class's top-k features, then voted pairs outside them (rank None).

    Voted pairs from elsewhere (an imported vote file, another split's top features) stay
    reviewable; they follow each class's top features.
    """
    pairs: list[tuple[int, int, int | None]] = []
    seen: set[tuple[int, int]] = set()
    for c in range(len(audit.class_names)):
        top = audit.top_features(c, k=top_k, split=split, mode=mode)
        for rank, d in enumerate(top["feature"] if len(top) else [], start=1):
            pairs.append((c, int(d), rank))
            seen.add((c, int(d)))
    extra = sorted({(int(c), int(d)) for c, d in voted} - seen)
    order = {(c, d): i for i, (c, d, _) in enumerate(pairs)}
    for c, d in extra:
        pairs.append((c, d, None))
    # keep each class's extra pairs right after its top features
    pairs.sort(key=lambda p: (p[0], p[2] is None, order.get((p[0], p[1]), 0), p[1]))
    return pairs


def review_table(pairs: Sequence[tuple[int, int, int | None]], votes: Iterable[Vote],
                 annotator: str = "") -> pd.DataFrame:
    """One row per pair with its current label and who voted (QUEUE_COLUMNS).

    `votes` are the store's votes in force (`LabelStore.votes()`); `mine` is `annotator`'s
    current answer on the pair ('' when none); `machine` maps each machine annotator to its answer.
    """
    by_pair: dict[tuple[int, int], list[Vote]] = defaultdict(list)
    for vote in votes:
        if not vote.retracted:
            by_pair[vote.pair].append(vote)
    me = annotator.strip()
    rows = []
    for c, d, rank in pairs:
        pair_votes = sorted(by_pair.get((c, d), []), key=lambda v: v.id)
        label = aggregate_pair(pair_votes) if pair_votes else None
        humans = [v for v in pair_votes if not v.is_machine]
        machines: dict[str, str] = {}
        for v in pair_votes:
            if v.is_machine:
                machines[v.annotator] = v.answer
        mine = ""
        for v in humans:
            if me and v.annotator == me:
                mine = v.answer
        rows.append({
            "class_index": c,
            "feature_index": d,
            "rank": rank,
            "status": label.status if label else "unlabelled",
            "subtype": label.subtype if label else None,
            "proposed": bool(label.proposed) if label else False,
            "n_human": len({v.annotator for v in humans}),
            "n_machine": len(machines),
            "mine": mine,
            "machine": machines,
            "disagreement": bool(label.disagreement) if label else False,
        })
    return pd.DataFrame(rows, columns=QUEUE_COLUMNS)


def filter_queue(table: pd.DataFrame, how: str = "all", classes: Sequence[int] | None = None) -> pd.DataFrame:
    """The rows of `review_table` that pass one of FILTERS and belong to `classes` (None: all)."""
    if how not in FILTERS:
        raise ValueError(f"unknown filter {how!r}; choose one of {', '.join(FILTERS)}.")
    keep = pd.Series(True, index=table.index)
    if classes is not None:
        keep &= table["class_index"].isin(list(classes))
    if how == "unreviewed":
        keep &= table["n_human"] == 0
    elif how == "not mine":
        keep &= table["mine"] == ""
    elif how == "disagree":
        keep &= table["disagreement"]
    elif how == "to confirm":
        keep &= table["proposed"]
    return table[keep].reset_index(drop=True)


def progress_counts(table: pd.DataFrame) -> dict[str, int]:
    """total pairs, pairs with any human vote, pairs with `annotator`'s vote, machine-only pairs."""
    return {
        "total": int(len(table)),
        "reviewed": int((table["n_human"] > 0).sum()) if len(table) else 0,
        "mine": int((table["mine"] != "").sum()) if len(table) else 0,
        "to_confirm": int(table["proposed"].sum()) if len(table) else 0,
    }


def override_answer(answer: str) -> str:
    """The one-click override of a proposal: core for a spurious proposal, background for a core one."""
    return "background" if answer == MAIN_OBJECT else MAIN_OBJECT


# ---- evidence as tables -------------------------------------------------------------------------
def evidence_table(evidence: Mapping[str, Any]) -> pd.DataFrame | None:
    """The table the proposing labeler declares for its evidence (`AutoLabeler.evidence_table`), or None
    when no registered labeler claims it."""
    from . import LABELER_CLASSES, _labeler_class

    name = evidence.get("labeler")
    if name not in LABELER_CLASSES:
        return None
    return _labeler_class(name).evidence_table(evidence)


def history_table(votes: Iterable[Vote]) -> pd.DataFrame:
    """A pair's votes for display, oldest first."""
    return pd.DataFrame([{
        "time (UTC)": v.created[:19].replace("T", " "),
        "annotator": v.annotator,
        "answer": v.answer,
        "confidence": v.confidence,
        "reason": v.reason,
        "machine": v.is_machine,
        "retracted": v.retracted,
    } for v in votes], columns=["time (UTC)", "annotator", "answer", "confidence", "reason", "machine", "retracted"])


ANSWER_LABELS = {"main_object": "Main object (core)", "separate_object": "Separate object (spurious)",
                 "background": "Background (spurious)"}
