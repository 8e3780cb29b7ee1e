"""The common interface of the auto-labelers, and running one over a project.

An auto-labeler looks at the evidence of (class, feature) pairs and *proposes* a label for each:
`main_object` (core) or `background` / `separate_object` (spurious), with a 1-5 confidence, a
short reason and the numbers it decided on. Proposals are stored as the votes of one machine
annotator (`auto:<name>`) in the project's label store, so

* re-running a labeler replaces its earlier proposals (`LabelStore.replace_machine_votes`);
* a person's vote on a pair overrides every machine vote there (the aggregation rule), and the
  proposal stays visible as evidence;
* nothing a machine proposes ever counts as confirmed (`PairLabel.proposed`).

Adding a labeler is adding a file: subclass `AutoLabeler`, declare its options (`declared_options`) and
how its evidence reads as a table (`evidence_table`), implement `judge` (and `prepare` when the labeler
needs a model of its own), and decorate the class with `spuraudit.autolabel.register_labeler`. The review
page and `spuraudit autolabel` build their forms and flags from the declarations.
The base class does the shared work: picking the pairs, finding each pair's top images, loading
them and computing their NAMs once, progress and cancellation.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, Mapping, Sequence

import numpy as np

from . import MACHINE_PREFIX
from ..analysis.importance import IMAGE_SET_MODES
from ..common import Progress  # noqa: F401  (re-exported for callers)
from ..labels.vote import ANSWERS, SPURIOUS_ANSWERS
from ..options import Option as BaseOption

if TYPE_CHECKING:
    import torch

Pair = tuple[int, int]

DEFAULT_IMAGES_PER_PAIR = 8  # the Spuriosity Rankings grid shows 8 top images per feature


class AutoLabelError(ValueError):
    """An auto-labeler cannot run as configured; the message says what to change."""


@dataclass(frozen=True)
class Option(BaseOption):
    """One declared option of a labeler (see `spuraudit.options.Option`)."""

    error = AutoLabelError


# The options every labeler takes. The review page sets them from its sidebar (the pairs it shows).
COMMON_OPTIONS: tuple[Option, ...] = (
    Option("images_per_pair", DEFAULT_IMAGES_PER_PAIR, "Top images per pair the decision is measured on.",
           minimum=1),
    Option("split", None, "The split whose images are used (default: the audit's; 'all': every split).", kind=str),
    Option("image_set", None, "S_c, the class's images the top images come from (default: the project's "
                              "setting).", kind=str, choices=IMAGE_SET_MODES),
    Option("top_k", None, "Features per class when no pairs are given (default: the project's setting).",
           kind=int, minimum=1),
)


@dataclass(frozen=True)
class Proposal:
    """One machine-proposed label for the pair (class_index, feature_index).

    evidence: JSON-ready numbers the decision rests on, always with "images" (the dataset indices
    of the images they were measured on, in the same order as any per-image list) and "labeler".
    """

    class_index: int
    feature_index: int
    answer: str
    confidence: int | None
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self):
        if self.answer not in ANSWERS:
            raise ValueError(f"answer must be one of {', '.join(ANSWERS)}; got {self.answer!r}.")

    @property
    def pair(self) -> Pair:
        return (self.class_index, self.feature_index)

    @property
    def is_spurious(self) -> bool:
        return self.answer in SPURIOUS_ANSWERS

    def as_vote(self) -> dict[str, Any]:
        """The dict `LabelStore.replace_machine_votes` takes."""
        return {
            "class_index": int(self.class_index),
            "feature_index": int(self.feature_index),
            "answer": self.answer,
            "confidence": self.confidence,
            "reason": self.reason,
            "evidence": self.evidence,
        }


@dataclass
class PairImages:
    """The top images of one pair, loaded once and shared by every labeler.

    indices:    int [k], dataset indices (highest activation first)
    activation: float [k], r_d of each image
    images:     float tensor [k, 3, H, W] in [0, 1], at the audited model's input size
    nams:       float32 [k, H, W] in [0, 1], the feature's NAM on each image
    """

    class_index: int
    feature: int
    indices: np.ndarray
    activation: np.ndarray
    images: torch.Tensor
    nams: np.ndarray
    split: str | None
    mode: str

    def base_evidence(self) -> dict[str, Any]:
        return {
            "images": [int(i) for i in self.indices],
            "activation": [round(float(a), 6) for a in self.activation],
            "split": self.split or "all",
            "image_set": self.mode,
        }


@dataclass
class RunReport:
    """What one run of a labeler did (also the job's result, through `as_dict`)."""

    labeler: str
    annotator: str
    proposals: list[Proposal]
    skipped: list[dict[str, Any]]
    options: dict[str, Any]
    seconds: float

    @property
    def n_spurious(self) -> int:
        return sum(p.is_spurious for p in self.proposals)

    def summary(self) -> str:
        return (f"{self.annotator}: {len(self.proposals)} proposals ({self.n_spurious} spurious, "
                f"{len(self.proposals) - self.n_spurious} core)"
                + (f", {len(self.skipped)} pairs skipped" if self.skipped else "")
                + f" in {self.seconds:.1f} s")

    def as_dict(self) -> dict[str, Any]:
        return {
            "labeler": self.labeler,
            "annotator": self.annotator,
            "n_proposals": len(self.proposals),
            "n_spurious": self.n_spurious,
            "proposals": [
                {"class_index": p.class_index, "feature_index": p.feature_index, "answer": p.answer,
                 "confidence": p.confidence, "reason": p.reason}
                for p in self.proposals
            ],
            "skipped": self.skipped,
            "options": self.options,
            "seconds": round(self.seconds, 2),
            "summary": self.summary(),
        }


def confidence_from_margin(margin: float, step: float) -> int:
    """A 1-5 confidence from how far a score lies from its decision threshold.

    1 within one `step` of the threshold, then one more level per `step`, capped at 5: a proposal
    that barely crosses the line should not look as sure as a clear one.
    """
    if not math.isfinite(margin) or step <= 0:
        return 1
    return int(min(5, 1 + math.floor(abs(margin) / step)))


def default_pairs(audit, top_k: int = 5, split: str | None = None, mode: str = "correct") -> list[Pair]:
    """Every class's top-k features (docs/methods.md §2), in (class, rank) order."""
    pairs: list[Pair] = []
    for c in range(len(audit.class_names)):
        top = audit.top_features(c, k=top_k, split=split, mode=mode)
        pairs.extend((c, int(d)) for d in (top["feature"] if len(top) else []))
    return pairs


class AutoLabeler:
    """Base class: subclasses set `name` and `title` and implement `judge`.

    Common options:
        images_per_pair: top images per pair the decision is measured on.
        split: the split whose images are used (None: the audit's default split, "all": every split).
        image_set: S_c, 'correct' | 'predicted' | 'labelled' (None: the project's setting).
        top_k: features per class when no pairs are given (None: the project's setting).
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    short: ClassVar[str] = ""  # prefix of the review page's widget keys (default: `name`)
    label: ClassVar[str] = ""  # its tab on the review page (default: `name`)
    description: ClassVar[str] = ""  # what the review page says about the labeler (Markdown)
    declared_options: ClassVar[tuple[Option, ...]] = ()  # besides COMMON_OPTIONS

    @classmethod
    def all_options(cls) -> tuple[Option, ...]:
        return COMMON_OPTIONS + tuple(cls.declared_options)

    @classmethod
    def check_options(cls, given: Mapping[str, Any]) -> dict[str, Any]:
        """`given` with every declared option converted and checked; other keys (objects handed in from
        Python, such as a loaded model) pass through to the constructor, which rejects unknown ones."""
        declared = {opt.name: opt for opt in cls.all_options()}
        return {key: declared[key].check(value) if key in declared else value for key, value in given.items()}

    @staticmethod
    def evidence_table(evidence: Mapping[str, Any]):
        """The evidence of one proposal as a table for the review page (a DataFrame), or None."""
        return None

    @classmethod
    def form_warning(cls, audit, values: Mapping[str, Any]) -> str | None:
        """A warning the review page shows under the form for these option values (e.g. a missing input)."""
        return None

    def __init__(self, images_per_pair: int = DEFAULT_IMAGES_PER_PAIR, split: str | None = None,
                 image_set: str | None = None, top_k: int | None = None):
        if int(images_per_pair) < 1:
            raise AutoLabelError(f"images_per_pair must be at least 1; got {images_per_pair}.")
        self.images_per_pair = int(images_per_pair)
        self.split = split
        self.image_set = image_set
        self.top_k = top_k

    # ---- what subclasses provide ---------------------------------------------------------
    @property
    def annotator(self) -> str:
        return MACHINE_PREFIX + self.name

    def options(self) -> dict[str, Any]:
        """The options as plain values (stored with the run, shown on the review page)."""
        return {"images_per_pair": self.images_per_pair, "split": self.split, "image_set": self.image_set,
                "top_k": self.top_k}

    def prepare(self, audit, model, input_size: tuple[int, int]) -> None:
        """Load what the labeler needs once per run (a model, masks, text embeddings)."""

    def judge(self, audit, pair: PairImages) -> Proposal:
        """The proposal for one pair; raise AutoLabelError to skip the pair with a reason."""
        raise NotImplementedError

    # ---- shared work ---------------------------------------------------------------------
    def resolve(self, audit) -> tuple[str | None, str, int]:
        """(split, image set, top_k) after filling the defaults from the audit and its project."""
        split = self.split if self.split is not None else audit.default_split()
        split = None if split == "all" else split
        settings = audit.project.settings
        mode = self.image_set or settings.get("image_set", "correct")
        top_k = int(self.top_k or settings.get("top_k", 5))
        return split, mode, top_k

    def pair_images(self, audit, model, input_size, class_index: int, feature: int,
                    split: str | None, mode: str) -> PairImages:
        from ..evidence import load_batch
        from ..explain import nam_for_feature

        indices = np.asarray(audit.feature_images(class_index, feature, self.images_per_pair, split, mode),
                             dtype=np.int64)
        images = load_batch([audit.table.path(int(i)) for i in indices], input_size)
        nams = (nam_for_feature(model, images, feature) if len(indices)
                else np.zeros((0, *input_size), dtype=np.float32))
        activation = np.asarray(audit.features[indices, int(feature)]) if len(indices) else np.zeros(0)
        return PairImages(class_index, feature, indices, np.asarray(activation, dtype=np.float64), images,
                          np.asarray(nams, dtype=np.float32), split, mode)

    def propose(self, audit, pairs: Iterable[Pair] | None = None, progress: Progress | None = None,
                check_cancelled: Callable[[], None] | None = None, model=None,
                skipped: list[dict[str, Any]] | None = None) -> list[Proposal]:
        """Proposals for `pairs` (default: every class's top-k features).

        `model` defaults to the project's model; pairs the labeler cannot judge (no images in S_c,
        no masks...) are left out and, when `skipped` is a list, recorded there with the reason.
        """
        split, mode, top_k = self.resolve(audit)
        pairs = list(pairs) if pairs is not None else default_pairs(audit, top_k, split, mode)
        pairs = [(int(c), int(d)) for c, d in pairs]
        report = progress or (lambda fraction, message: None)
        if model is None:
            model, card = audit.project.load_model()
            input_size = tuple(card.input_size)
        else:  # a model handed in (already loaded by the caller): its input size is the feature store's
            input_size = tuple(audit.store.meta.get("input_size") or audit.project.load_model()[1].input_size)
        model.eval()
        report(0.0, f"{self.title}: preparing")
        self.prepare(audit, model, input_size)
        proposals: list[Proposal] = []
        for i, (c, d) in enumerate(pairs):
            if check_cancelled is not None:
                check_cancelled()
            report(i / max(len(pairs), 1), f"{self.title}: class {c}, feature {d} ({i + 1}/{len(pairs)})")
            images = self.pair_images(audit, model, input_size, c, d, split, mode)
            if not len(images.indices):
                if skipped is not None:
                    skipped.append({"class_index": c, "feature_index": d,
                                    "reason": f"no images of class {c} in the {mode} set of split {split or 'all'}"})
                continue
            try:
                proposals.append(self.judge(audit, images))
            except AutoLabelError as err:
                if skipped is not None:
                    skipped.append({"class_index": c, "feature_index": d, "reason": str(err)})
        report(1.0, f"{self.title}: {len(proposals)} proposals")
        return proposals


# ---- storing proposals --------------------------------------------------------------------
def store_proposals(store, annotator: str, proposals: Sequence[Proposal], keep_other_pairs: bool = True) -> int:
    """Replace `annotator`'s machine votes with `proposals`, atomically; returns the votes written.

    With `keep_other_pairs`, the annotator's earlier proposals on pairs this run did not look at
    are kept (a run over one class must not erase the proposals for the others).
    """
    votes: list[dict[str, Any]] = [p.as_vote() for p in proposals]
    if keep_other_pairs:
        new_pairs = {p.pair for p in proposals}
        for old in store.votes(annotator=annotator, machine=True):
            if old.pair not in new_pairs:
                votes.insert(0, {"class_index": old.class_index, "feature_index": old.feature_index,
                                 "answer": old.answer, "confidence": old.confidence, "reason": old.reason,
                                 "evidence": old.evidence})
    return store.replace_machine_votes(annotator, votes)


def last_run_key(name: str) -> str:
    """The label-store setting where a labeler's last run (options, time, counts) is kept."""
    return f"autolabel.{name}.last_run"


def run_autolabel(project, labeler: AutoLabeler, pairs: Iterable[Pair] | None = None,
                  progress: Progress | None = None, check_cancelled: Callable[[], None] | None = None,
                  audit=None, model=None) -> RunReport:
    """Run `labeler` on the project's pairs and store its proposals as machine votes."""
    from ..audit import Audit

    t0 = time.perf_counter()
    audit = audit or Audit.open(project)
    pairs_list = list(pairs) if pairs is not None else None
    skipped: list[dict[str, Any]] = []
    proposals = labeler.propose(audit, pairs_list, progress, check_cancelled, model=model, skipped=skipped)
    if check_cancelled is not None:
        check_cancelled()  # a run cancelled at the very end must not write half a decision
    store = project.labels()
    store_proposals(store, labeler.annotator, proposals)
    report = RunReport(labeler.name, labeler.annotator, proposals, skipped, labeler.options(),
                       time.perf_counter() - t0)
    store.set_setting(last_run_key(labeler.name), {
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "options": labeler.options(),
        "n_proposals": len(proposals),
        "n_spurious": report.n_spurious,
        "skipped": skipped,
    })
    return report


def run_autolabel_job(ctx, project: str, labeler: str, options: Mapping[str, Any] | None = None,
                      pairs: Sequence[Sequence[int]] | None = None) -> dict[str, Any]:
    """Job entry point (kind "autolabel.run"): run one auto-labeler over a project in the background.

    Args:
        ctx: the job context (`progress(fraction, message)`, `check_cancelled()`, optionally `log`).
        project: the project folder (or its name under the home's projects/).
        labeler: a key of `spuraudit.autolabel.LABELERS` ("segmentation", "clip").
        options: the labeler's constructor options (JSON values).
        pairs: [[class, feature], ...] to label; None for every class's top-k features.

    Returns:
        `RunReport.as_dict()`: counts, every proposal's answer and reason, skipped pairs.
    """
    from ..project import Project
    from . import make_labeler

    proj = Project.find(project)
    instance = make_labeler(labeler, **dict(options or {}))
    log = getattr(ctx, "log", None)
    if log:
        log(f"{instance.annotator} on project {proj.name} with options {instance.options()}")
    report = run_autolabel(proj, instance, [tuple(p) for p in pairs] if pairs is not None else None,
                           progress=ctx.progress, check_cancelled=getattr(ctx, "check_cancelled", None))
    if log:
        log(report.summary())
        for item in report.skipped:
            log(f"skipped class {item['class_index']} feature {item['feature_index']}: {item['reason']}")
    return report.as_dict()
