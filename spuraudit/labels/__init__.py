"""Labels: votes on (class, feature) pairs, their aggregation into core/spurious, and files.

A person (or an auto-labeler) votes whether a neural feature of a class looks at the class's
main object (core) or at a separate object or the background (spurious). `LabelStore` keeps the
votes of a project in `labels.db`; `aggregate` turns them into one `PairLabel` per pair with
Salient ImageNet's majority rule; `salient_csv` reads and writes Salient ImageNet's vote file;
`json_export` writes the aggregated labels for scripts.
"""

from .aggregate import aggregate, aggregate_pair, answer_counts, counted_votes, decide, spurious_map
from ..atomic import write_text_atomic
from .json_export import export_labels_json, export_spurious_map, write_json
from .salient_csv import (
    SALIENT_COLUMNS,
    ImportReport,
    SalientCSVError,
    export_salient_csv,
    import_salient_csv,
    read_salient_csv,
    salient_rows,
)
from .store import SCHEMA_VERSION, LabelStore, LabelStoreError
from .vote import (
    AMBIGUOUS,
    ANSWERS,
    BACKGROUND,
    CORE,
    MAIN_OBJECT,
    SEPARATE_OBJECT,
    SPURIOUS,
    SPURIOUS_ANSWERS,
    STATUSES,
    NewVote,
    PairLabel,
    Vote,
)

__all__ = [
    "AMBIGUOUS",
    "ANSWERS",
    "BACKGROUND",
    "CORE",
    "MAIN_OBJECT",
    "SALIENT_COLUMNS",
    "SCHEMA_VERSION",
    "SEPARATE_OBJECT",
    "SPURIOUS",
    "SPURIOUS_ANSWERS",
    "STATUSES",
    "ImportReport",
    "LabelStore",
    "LabelStoreError",
    "NewVote",
    "PairLabel",
    "SalientCSVError",
    "Vote",
    "aggregate",
    "aggregate_pair",
    "answer_counts",
    "counted_votes",
    "decide",
    "export_labels_json",
    "export_salient_csv",
    "export_spurious_map",
    "import_salient_csv",
    "read_salient_csv",
    "salient_rows",
    "spurious_map",
    "write_json",
    "write_text_atomic",
]
