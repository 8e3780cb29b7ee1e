"""The records of the labelling method: one vote, one aggregated pair label, and their checks.

A vote says what one annotator thinks a neural feature d of class c looks at:

    main_object      the object of the class itself (a core feature)
    separate_object  another object that co-occurs with it (spurious)
    background       the scene around it (spurious)
"""

from __future__ import annotations

import json
import operator
from dataclasses import dataclass, field
from typing import Any, Mapping

MAIN_OBJECT = "main_object"
SEPARATE_OBJECT = "separate_object"
BACKGROUND = "background"
ANSWERS: tuple[str, ...] = (MAIN_OBJECT, SEPARATE_OBJECT, BACKGROUND)
SPURIOUS_ANSWERS: tuple[str, ...] = (SEPARATE_OBJECT, BACKGROUND)

CORE = "core"
SPURIOUS = "spurious"
AMBIGUOUS = "ambiguous"
STATUSES: tuple[str, ...] = (CORE, SPURIOUS, AMBIGUOUS)

MIN_CONFIDENCE = 1
MAX_CONFIDENCE = 5

# Where a vote came from: typed in the app or CLI, or read from a Salient ImageNet vote file.
SOURCE_APP = "app"
SOURCE_SALIENT_CSV = "salient_csv"

Pair = tuple[int, int]


@dataclass(frozen=True)
class Vote:
    """One stored vote on the pair (class_index, feature_index)."""

    id: int
    class_index: int
    feature_index: int
    answer: str
    annotator: str
    confidence: int | None = None
    reason: str = ""
    is_machine: bool = False
    # A dict, so it is left out of the hash (a frozen dataclass hashes its fields).
    evidence: dict[str, Any] | None = field(default=None, hash=False)
    created: str = ""
    retracted: bool = False
    wordnet_id: str | None = None
    feature_rank: int | None = None
    source: str = SOURCE_APP

    @property
    def pair(self) -> Pair:
        return (self.class_index, self.feature_index)

    @property
    def is_spurious_answer(self) -> bool:
        return self.answer in SPURIOUS_ANSWERS


@dataclass(frozen=True)
class NewVote:
    """A vote about to be written: everything but the id, timestamp and retraction flag.

    `source_row` holds the exact cells of an imported Salient ImageNet CSV row, so an export
    reproduces them byte for byte (e.g. a confidence written as "4.0" stays "4.0").
    """

    class_index: int
    feature_index: int
    answer: str
    annotator: str
    confidence: int | None = None
    reason: str = ""
    is_machine: bool = False
    evidence: dict[str, Any] | None = field(default=None, hash=False)
    wordnet_id: str | None = None
    feature_rank: int | None = None
    source: str = SOURCE_APP
    source_row: tuple[str, ...] | None = None

    def checked(self) -> "NewVote":
        """The same vote with normalised fields; ValueError naming the bad field otherwise."""
        return NewVote(
            class_index=check_index(self.class_index, "class_index"),
            feature_index=check_index(self.feature_index, "feature_index"),
            answer=check_answer(self.answer),
            annotator=check_annotator(self.annotator),
            confidence=check_confidence(self.confidence),
            reason=check_reason(self.reason),
            is_machine=bool(self.is_machine),
            evidence=check_evidence(self.evidence),
            wordnet_id=None if self.wordnet_id is None else str(self.wordnet_id),
            feature_rank=None if self.feature_rank is None else check_index(self.feature_rank, "feature_rank"),
            source=str(self.source),
            source_row=None if self.source_row is None else tuple(str(cell) for cell in self.source_row),
        )


@dataclass(frozen=True)
class PairLabel:
    """The aggregated label of one (class, feature) pair.

    status   'core' | 'spurious' | 'ambiguous' (an exact tie between core and spurious votes)
    subtype  for spurious pairs: 'background' | 'separate_object' | 'ambiguous'; None otherwise
    n_votes  the votes that were counted (one per annotator; machines only when no human voted)
    proposed True when only machine annotators voted: a suggestion that no person has confirmed
    """

    class_index: int
    feature_index: int
    status: str
    subtype: str | None
    n_votes: int
    counts: dict[str, int] = field(hash=False)
    proposed: bool
    annotators: tuple[str, ...]
    mean_confidence: float | None = None

    @property
    def pair(self) -> Pair:
        return (self.class_index, self.feature_index)

    @property
    def is_spurious(self) -> bool:
        return self.status == SPURIOUS

    @property
    def disagreement(self) -> bool:
        """True when the counted votes split between core and spurious answers."""
        spurious = sum(self.counts[a] for a in SPURIOUS_ANSWERS)
        return 0 < spurious < self.n_votes

    @property
    def any_disagreement(self) -> bool:
        """True when the counted votes use more than one answer (background vs separate_object too)."""
        return sum(1 for a in ANSWERS if self.counts[a]) > 1


# ---- checks ------------------------------------------------------------------------------
def check_answer(answer: Any) -> str:
    if not isinstance(answer, str) or answer not in ANSWERS:
        raise ValueError(f"answer must be one of {', '.join(ANSWERS)}; got {answer!r}.")
    return answer


def check_confidence(confidence: Any) -> int | None:
    if confidence is None:
        return None
    expected = f"confidence must be an integer {MIN_CONFIDENCE}-{MAX_CONFIDENCE} or None; got {confidence!r}."
    if isinstance(confidence, bool):  # bool is an int subclass, but True is no confidence level
        raise ValueError(expected)
    try:
        value = operator.index(confidence)  # ints and numpy integers, not floats or strings
    except TypeError:
        raise ValueError(expected) from None
    if not MIN_CONFIDENCE <= value <= MAX_CONFIDENCE:
        raise ValueError(f"confidence must be between {MIN_CONFIDENCE} and {MAX_CONFIDENCE}; got {value}.")
    return value


def check_index(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a non-negative integer; got {value!r}.")
    try:
        index = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be a non-negative integer; got {value!r}.") from None
    if index < 0:
        raise ValueError(f"{name} must be a non-negative integer; got {index}.")
    return index


def check_annotator(annotator: Any) -> str:
    if not isinstance(annotator, str) or not annotator.strip():
        raise ValueError(f"annotator must be a non-empty name; got {annotator!r}.")
    return annotator.strip()


def check_reason(reason: Any) -> str:
    if reason is None:
        return ""
    if not isinstance(reason, str):
        raise ValueError(f"reason must be text; got {type(reason).__name__}.")
    return reason


def check_evidence(evidence: Any) -> dict[str, Any] | None:
    """Evidence is a JSON object; numpy scalars and arrays are turned into plain numbers and lists."""
    if evidence is None:
        return None
    if not isinstance(evidence, Mapping):
        raise ValueError(f"evidence must be a dict (a JSON object); got {type(evidence).__name__}.")
    try:
        # A round trip through JSON both proves it can be stored and gives a plain, detached copy.
        return json.loads(evidence_to_json(evidence))
    except (TypeError, ValueError) as err:
        raise ValueError(f"evidence cannot be stored as JSON: {err}") from None


def evidence_to_json(evidence: Mapping[str, Any]) -> str:
    return json.dumps(dict(evidence), sort_keys=True, default=_plain_json_value)


def _plain_json_value(value: Any) -> Any:
    # numpy values carry .tolist() (arrays and scalars alike); anything else is refused by json.
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
