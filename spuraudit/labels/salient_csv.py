"""Import and export Salient ImageNet's released vote file (one row per worker vote).

The file has exactly these columns:

    WorkerId, Input.wordnet_id, Input.class_index, Input.feature_index, Input.feature_rank,
    Answer.main, Answer.confidence, Answer.reasons

Imports are lossless: each vote keeps the exact cells of its row, so exporting what was imported
reproduces the same rows in the same order (the released file writes confidences as "4.0", for
instance, and they stay "4.0"). An import is all or nothing: the whole file is checked first,
and a malformed file raises `SalientCSVError` naming the file, the row and the reason, with
nothing written.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, TextIO, Union

from ..atomic import write_text_atomic
from .store import LabelStore
from .vote import ANSWERS, MAX_CONFIDENCE, MIN_CONFIDENCE, SOURCE_SALIENT_CSV, NewVote, Vote

WORKER = "WorkerId"
WORDNET_ID = "Input.wordnet_id"
CLASS_INDEX = "Input.class_index"
FEATURE_INDEX = "Input.feature_index"
FEATURE_RANK = "Input.feature_rank"
ANSWER = "Answer.main"
CONFIDENCE = "Answer.confidence"
REASONS = "Answer.reasons"
SALIENT_COLUMNS: tuple[str, ...] = (
    WORKER, WORDNET_ID, CLASS_INDEX, FEATURE_INDEX, FEATURE_RANK, ANSWER, CONFIDENCE, REASONS,
)

_INTEGER = re.compile(r"[+-]?\d+")
# Confidences were saved through a float column ("4.0"), so a whole number with a ".0" is fine.
_WHOLE_NUMBER = re.compile(r"[+-]?\d+(?:\.0*)?")

CsvSource = Union[str, Path, BinaryIO]
CsvTarget = Union[str, Path, TextIO, BinaryIO]


class SalientCSVError(ValueError):
    """A vote file that cannot be imported; `row` is 1-based with the header as row 1 (None: whole file)."""

    def __init__(self, path: str, reason: str, row: int | None = None):
        self.path = path
        self.reason = reason
        self.row = row
        where = f"{path}: row {row} (the header is row 1)" if row is not None else str(path)
        super().__init__(f"{where}: {reason} Nothing was imported.")


@dataclass(frozen=True)
class ImportReport:
    """What an import added."""

    path: str
    n_votes: int
    n_pairs: int
    n_classes: int
    n_workers: int
    answers: dict[str, int] = field(hash=False)
    import_id: int | None
    warnings: tuple[str, ...] = ()

    def summary(self) -> str:
        text = (
            f"{self.path}: imported {self.n_votes} votes on {self.n_pairs} (class, feature) pairs "
            f"of {self.n_classes} classes from {self.n_workers} workers"
        )
        if self.n_votes:
            text += " (" + ", ".join(f"{a} {self.answers.get(a, 0)}" for a in ANSWERS) + ")"
        return text + "." + "".join(f" Note: {w}" for w in self.warnings)


# ---- reading -----------------------------------------------------------------------------
def _read_bytes(source: CsvSource) -> tuple[bytes, str]:
    """(content, name to show in messages) of a path or of an open binary file such as an upload."""
    if hasattr(source, "read"):
        data = source.read()
        if isinstance(data, str):
            data = data.encode("utf-8")
        return data, str(getattr(source, "name", "<uploaded file>"))
    path = Path(source)
    try:
        return path.read_bytes(), str(path)
    except OSError as err:
        raise SalientCSVError(str(path), f"cannot be read ({err.strerror or err}).") from None


# No index or rank has more digits than this; a longer number is an error, not a huge value (Python
# refuses to parse integers of over 4,300 digits, and SQLite stores at most 64 bits).
_MAX_DIGITS = 18


def _shown(text: str, limit: int = 40) -> str:
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"


def _parse_int(text: str, column: str, name: str, row: int, pattern: re.Pattern[str] = _INTEGER) -> int:
    value = text.strip()
    if not pattern.fullmatch(value):
        raise SalientCSVError(name, f"{column} {_shown(text)} is not a whole number.", row)
    whole = value.split(".")[0].lstrip("+-").lstrip("0")
    if len(whole) > _MAX_DIGITS:
        raise SalientCSVError(
            name, f"{column} {_shown(text)} has {len(whole)} digits; an index has at most {_MAX_DIGITS}. "
                  "Correct the cell or remove the row.", row)
    return int(value.split(".")[0])


# A spreadsheet runs a cell that starts with one of these as a formula (`=HYPERLINK(...)`, `@cmd|...`,
# `+1+1`). Exports prefix such cells with an apostrophe, which spreadsheets show as text; imports drop it.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def escape_cell(text: str) -> str:
    """A cell as written to a CSV export: text that a spreadsheet would run as a formula gets a leading `'`."""
    return "'" + text if text.startswith(_FORMULA_STARTS) or _escaped(text) else text


def unescape_cell(text: str) -> str:
    """The cell as it was before `escape_cell`."""
    return text[1:] if _escaped(text) else text


def _escaped(text: str) -> bool:
    return text.startswith("'") and (text[1:].startswith(_FORMULA_STARTS) or _escaped(text[1:]))


def _parse_row(cells: dict[str, str], name: str, row: int, num_classes: int, num_features: int) -> NewVote:
    cells = {column: unescape_cell(text) for column, text in cells.items()}
    worker = cells[WORKER].strip()
    if not worker:
        raise SalientCSVError(name, f"{WORKER} is empty.", row)

    class_index = _parse_int(cells[CLASS_INDEX], CLASS_INDEX, name, row)
    if not 0 <= class_index < num_classes:
        raise SalientCSVError(
            name, f"{CLASS_INDEX} {class_index} is out of range 0..{num_classes - 1} "
                  f"(the model has {num_classes} classes).", row)
    feature_index = _parse_int(cells[FEATURE_INDEX], FEATURE_INDEX, name, row)
    if not 0 <= feature_index < num_features:
        raise SalientCSVError(
            name, f"{FEATURE_INDEX} {feature_index} is out of range 0..{num_features - 1} "
                  f"(the model has {num_features} features).", row)

    feature_rank = None
    if cells[FEATURE_RANK].strip():
        feature_rank = _parse_int(cells[FEATURE_RANK], FEATURE_RANK, name, row)
        if feature_rank < 0:
            raise SalientCSVError(name, f"{FEATURE_RANK} {feature_rank} is negative.", row)

    answer = cells[ANSWER].strip()
    if answer not in ANSWERS:
        raise SalientCSVError(name, f"{ANSWER} {cells[ANSWER]!r} is not one of {', '.join(ANSWERS)}.", row)

    confidence = None
    if cells[CONFIDENCE].strip():  # an empty confidence is a vote without one, not an error
        confidence = _parse_int(cells[CONFIDENCE], CONFIDENCE, name, row, _WHOLE_NUMBER)
        if not MIN_CONFIDENCE <= confidence <= MAX_CONFIDENCE:
            raise SalientCSVError(
                name, f"{CONFIDENCE} {cells[CONFIDENCE]!r} is outside {MIN_CONFIDENCE}..{MAX_CONFIDENCE}.", row)

    return NewVote(
        class_index=class_index,
        feature_index=feature_index,
        answer=answer,
        annotator=worker,
        confidence=confidence,
        reason=cells[REASONS],
        wordnet_id=cells[WORDNET_ID].strip() or None,
        feature_rank=feature_rank,
        source=SOURCE_SALIENT_CSV,
        source_row=tuple(cells[column] for column in SALIENT_COLUMNS),
    )


def _check_header(header: list[str], name: str) -> list[str]:
    columns = [cell.strip() for cell in header]
    repeated = sorted(c for c, n in Counter(columns).items() if n > 1)
    if repeated:
        raise SalientCSVError(name, f"column(s) repeated in the header: {', '.join(repeated)}.", 1)
    missing = [c for c in SALIENT_COLUMNS if c not in columns]
    extra = [c for c in columns if c not in SALIENT_COLUMNS]
    if missing or extra:
        problems = []
        if missing:
            problems.append(f"missing column(s) {', '.join(missing)}")
        if extra:
            problems.append(f"unexpected column(s) {', '.join(repr(c) for c in extra)}")
        raise SalientCSVError(
            name, f"{'; '.join(problems)}. A Salient ImageNet vote file has exactly the columns "
                  f"{', '.join(SALIENT_COLUMNS)}.", 1)
    return columns


def read_salient_csv(source: CsvSource, num_classes: int, num_features: int) -> tuple[list[NewVote], str, str]:
    """Check a whole vote file and return (votes, name, sha256 of its content); writes nothing.

    Accepts a UTF-8 file with or without a byte order mark and with LF or CRLF line endings.
    Blank lines are skipped (they still count when numbering rows). The hash is of the vote rows, not
    the bytes, so the same votes saved again with another line ending or a BOM hash the same.
    """
    votes, name, _ = _read_checked(source, num_classes, num_features)
    return votes, name, content_digest(votes)


def content_digest(votes: list[NewVote]) -> str:
    """sha256 of the votes' cells, one JSON list per row: what a file says, whatever its bytes."""
    h = hashlib.sha256()
    for vote in votes:
        h.update(json.dumps(list(vote.source_row or ()), ensure_ascii=False).encode("utf-8") + b"\n")
    return h.hexdigest()


def _read_checked(source: CsvSource, num_classes: int, num_features: int) -> tuple[list[NewVote], str, str]:
    """(votes, name, sha256 of the bytes)."""
    if num_classes < 1 or num_features < 1:
        raise ValueError(f"num_classes and num_features must be positive; got {num_classes}, {num_features}.")
    data, name = _read_bytes(source)
    digest = hashlib.sha256(data).hexdigest()
    try:
        text = data.decode("utf-8-sig")  # utf-8-sig drops a leading byte order mark if there is one
    except UnicodeDecodeError as err:
        raise SalientCSVError(name, f"is not UTF-8 text (byte {err.start}: {err.reason}).") from None
    if not text.strip():
        return [], name, digest

    reader = csv.reader(io.StringIO(text, newline=""))
    votes: list[NewVote] = []
    row = 0
    try:
        columns: list[str] | None = None
        for row, cells in enumerate(reader, start=1):
            if columns is None:
                columns = _check_header(cells, name)
                continue
            if cells == [] or cells == [""]:
                continue
            if len(cells) != len(columns):
                raise SalientCSVError(
                    name, f"has {len(cells)} cells but the header has {len(columns)} columns "
                          "(an unquoted comma in the reasons?).", row)
            votes.append(_parse_row(dict(zip(columns, cells)), name, row, num_classes, num_features))
    except csv.Error as err:
        raise SalientCSVError(name, f"is not valid CSV ({err}).", row + 1) from None
    return votes, name, digest


def import_salient_csv(store: LabelStore, path: CsvSource, num_classes: int, num_features: int,
                       *, allow_duplicate: bool = False) -> ImportReport:
    """Add every vote of a Salient ImageNet vote file to `store`, in one transaction.

    `num_classes` and `num_features` come from the project's model and bound the indices.
    Importing votes that were imported before (the same rows, whatever the line endings or BOM) is
    refused unless `allow_duplicate=True`, since it would count every worker's vote twice in the export.
    """
    votes, name, bytes_digest = _read_checked(path, num_classes, num_features)
    digest = content_digest(votes)
    if not votes:
        return ImportReport(path=name, n_votes=0, n_pairs=0, n_classes=0, n_workers=0,
                            answers=dict.fromkeys(ANSWERS, 0), import_id=None,
                            warnings=("the file holds no votes; nothing was imported.",))
    if not allow_duplicate:
        # Files imported by earlier versions are recorded by the hash of their bytes.
        earlier = store.find_import(digest) or store.find_import(bytes_digest)
        if earlier is not None:
            raise SalientCSVError(
                name, f"the same file was already imported on {earlier['imported']} "
                      f"(as {earlier['file_name']}, {earlier['n_votes']} votes).")

    import_id = store.import_votes(votes, file_name=Path(name).name, sha256=digest)

    warnings = []
    repeats = sum(n - 1 for n in Counter((v.annotator, v.class_index, v.feature_index) for v in votes).values())
    if repeats:
        warnings.append(f"{repeats} vote(s) repeat a worker's earlier vote on the same pair; "
                        "only each worker's latest vote on a pair counts towards its label.")
    return ImportReport(
        path=name,
        n_votes=len(votes),
        n_pairs=len({(v.class_index, v.feature_index) for v in votes}),
        n_classes=len({v.class_index for v in votes}),
        n_workers=len({v.annotator for v in votes}),
        answers={answer: sum(v.answer == answer for v in votes) for answer in ANSWERS},
        import_id=import_id,
        warnings=tuple(warnings),
    )


# ---- writing -----------------------------------------------------------------------------
def _row_of(vote: Vote, source_row: tuple[str, ...] | None) -> tuple[str, ...]:
    if source_row is not None:
        return source_row  # an imported vote: its exact original cells
    return (
        vote.annotator,
        vote.wordnet_id or "",
        str(vote.class_index),
        str(vote.feature_index),
        "" if vote.feature_rank is None else str(vote.feature_rank),
        vote.answer,
        "" if vote.confidence is None else str(vote.confidence),
        vote.reason,
    )


def salient_rows(store: LabelStore) -> list[tuple[str, ...]]:
    """The vote rows an export writes (no header): every human vote in force, oldest first.

    Machine votes are left out: they are not worker votes and the format has no room for evidence.
    """
    return [_row_of(vote, source_row) for vote, source_row in store.votes_with_source_rows(machine=False)]


def export_salient_csv(store: LabelStore, path_or_buffer: CsvTarget, *, lineterminator: str = "\n") -> int:
    """Write the human votes as a Salient ImageNet vote file; returns the number of vote rows.

    A path is written atomically; an open buffer (text, or binary as UTF-8) is written to as is.
    Cells a spreadsheet would run as formulas are written with a leading apostrophe (see `escape_cell`).
    """
    rows = salient_rows(store)
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator=lineterminator)
    writer.writerow(SALIENT_COLUMNS)
    writer.writerows([escape_cell(cell) for cell in row] for row in rows)
    if isinstance(path_or_buffer, (io.RawIOBase, io.BufferedIOBase)):
        path_or_buffer.write(buffer.getvalue().encode("utf-8"))  # e.g. io.BytesIO for a download
    elif hasattr(path_or_buffer, "write"):
        path_or_buffer.write(buffer.getvalue())
    else:
        write_text_atomic(path_or_buffer, buffer.getvalue())
    return len(rows)
