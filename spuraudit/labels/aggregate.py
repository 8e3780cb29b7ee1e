"""Turn votes into one label per (class, feature) pair; pure functions, no storage.

The rule generalises Salient ImageNet's (a pair is spurious when at least 3 of its 5 workers
did not answer `main_object`) to any number of votes:

* spurious  when more than half of the counted votes are `separate_object` or `background`;
* core      when more than half are `main_object`;
* ambiguous on an exact tie.

A spurious pair's subtype is `background` or `separate_object` when that answer alone has more
than half of all counted votes, and `ambiguous` otherwise (e.g. 2 background + 2 separate_object
+ 1 main_object is spurious, subtype ambiguous).

Which votes count:

* retracted votes never count;
* one vote per annotator: their latest, so a person who changes their mind is not counted twice
  (and undoing the new vote brings the earlier one back);
* when a pair has at least one human vote, machine votes are ignored (a person overrides an
  auto-labeler); a pair with only machine votes gets their label with `proposed=True`.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Mapping

from .vote import (
    AMBIGUOUS,
    ANSWERS,
    BACKGROUND,
    CORE,
    MAIN_OBJECT,
    SEPARATE_OBJECT,
    SPURIOUS,
    Pair,
    PairLabel,
    Vote,
)


def counted_votes(votes: Iterable[Vote]) -> list[Vote]:
    """The votes of one pair that the rule counts, oldest first (see the module docstring)."""
    live = sorted((v for v in votes if not v.retracted), key=lambda v: v.id)
    humans = [v for v in live if not v.is_machine]
    pool = humans if humans else live
    latest: dict[str, Vote] = {}
    for vote in pool:  # in id order, so a later vote of the same annotator replaces the earlier one
        latest[vote.annotator] = vote
    return sorted(latest.values(), key=lambda v: v.id)


def answer_counts(votes: Iterable[Vote]) -> dict[str, int]:
    """How many votes gave each answer; every answer is a key, zero included."""
    counts = dict.fromkeys(ANSWERS, 0)
    for vote in votes:
        counts[vote.answer] += 1
    return counts


def decide(counts: Mapping[str, int]) -> tuple[str, str | None]:
    """(status, subtype) from the counts of the counted votes; ValueError when there are none."""
    main = counts.get(MAIN_OBJECT, 0)
    background = counts.get(BACKGROUND, 0)
    separate = counts.get(SEPARATE_OBJECT, 0)
    total = main + background + separate
    if total <= 0:
        raise ValueError("a pair needs at least one counted vote to get a label.")
    spurious = background + separate
    # Integer comparisons (2 * k > n) say "more than half" without rounding questions.
    if 2 * spurious > total:
        if 2 * background > total:
            return SPURIOUS, BACKGROUND
        if 2 * separate > total:
            return SPURIOUS, SEPARATE_OBJECT
        return SPURIOUS, AMBIGUOUS
    if 2 * main > total:
        return CORE, None
    return AMBIGUOUS, None


def aggregate_pair(votes: Iterable[Vote]) -> PairLabel | None:
    """The label of one pair's votes, or None when none of them counts (all retracted, or none)."""
    votes = list(votes)
    pairs = {v.pair for v in votes}
    if len(pairs) > 1:
        raise ValueError(f"aggregate_pair got votes of several pairs: {sorted(pairs)}.")
    counted = counted_votes(votes)
    if not counted:
        return None
    counts = answer_counts(counted)
    status, subtype = decide(counts)
    confidences = [v.confidence for v in counted if v.confidence is not None]
    class_index, feature_index = counted[0].pair
    return PairLabel(
        class_index=class_index,
        feature_index=feature_index,
        status=status,
        subtype=subtype,
        n_votes=len(counted),
        counts=counts,
        proposed=all(v.is_machine for v in counted),
        annotators=tuple(sorted(v.annotator for v in counted)),
        mean_confidence=sum(confidences) / len(confidences) if confidences else None,
    )


def aggregate(votes: Iterable[Vote]) -> dict[Pair, PairLabel]:
    """Labels of every pair that has a counted vote, in (class, feature) order."""
    by_pair: dict[Pair, list[Vote]] = defaultdict(list)
    for vote in votes:
        by_pair[vote.pair].append(vote)
    labels: dict[Pair, PairLabel] = {}
    for pair in sorted(by_pair):
        label = aggregate_pair(by_pair[pair])
        if label is not None:
            labels[pair] = label
    return labels


def spurious_map(labels: Mapping[Pair, PairLabel], include_proposed: bool = True) -> dict[int, list[int]]:
    """class index -> sorted feature indices whose label is spurious."""
    result: dict[int, list[int]] = defaultdict(list)
    for (class_index, feature_index), label in labels.items():
        if label.status == SPURIOUS and (include_proposed or not label.proposed):
            result[class_index].append(feature_index)
    return {c: sorted(result[c]) for c in sorted(result)}


__all__ = [
    "aggregate",
    "aggregate_pair",
    "answer_counts",
    "counted_votes",
    "decide",
    "spurious_map",
]
