"""Creating a project from a user's dataset and model: the logic behind "Add data & model" (no Streamlit here).

The page, the Home form and `spuraudit create` all go through these functions, so each step can be
tested without a browser:

1. `save_upload` / `unpack_dataset_zip`: uploads land under `<home>/uploads/`, zips are extracted safely.
2. `preview_dataset`: the dataset as it will be read (classes, counts per split, thumbnails, skipped files,
   CSV columns that could be group columns), before anything is committed.
3. `inspect_model` + `resolve_class_names`: how many classes the checkpoint's head has, checked against
   the dataset (a mismatch raises `ClassMismatchError`, which shows both lists side by side).
4. `create_project`: imports the model (or fits a linear probe on a backbone) and writes the project.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Sequence

import numpy as np
import pandas as pd

from . import paths
from .common import Progress
from .data import read_imagefolder, read_manifest
from .data.archive import DatasetLayout, detect_layout, extract_zip
from .data.manifest import LABEL_COLUMNS, MASK_COLUMNS, PATH_COLUMNS
from .data.table import DatasetError, ImageTable
from .modelio import ModelCard
from .modelio.inspection import CheckpointSummary, summarize_checkpoint
from .project import Project
from .jobs.kinds import PROJECT_CREATE

UPLOADS = "uploads"


# ---- uploads --------------------------------------------------------------------------------------
def uploads_dir(base: Path | None = None) -> Path:
    return (base or paths.home()) / UPLOADS


def _stamped(name: str) -> str:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    return f"{stamp}-{paths.safe_name(name)}"


def save_upload(name: str, data: bytes | BinaryIO, base: Path | None = None) -> Path:
    """Write an uploaded file under `<home>/uploads/` (atomically, under a fresh time-stamped name)."""
    folder = uploads_dir(base)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / _stamped(Path(name).name)
    fd, tmp = tempfile.mkstemp(prefix=".upload-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as out:
            if isinstance(data, (bytes, bytearray, memoryview)):
                out.write(data)
            else:
                if hasattr(data, "seek"):
                    data.seek(0)
                shutil.copyfileobj(data, out, 1024**2)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def unpack_dataset_zip(zip_source: str | Path | BinaryIO, name: str = "dataset", base: Path | None = None,
                       **limits) -> DatasetLayout:
    """Extract a dataset zip under `<home>/uploads/` (see `extract_zip` for the refusals) and detect its layout."""
    if hasattr(zip_source, "seek"):
        zip_source.seek(0)
    dest = uploads_dir(base) / _stamped(Path(name).stem or "dataset")
    extract_zip(zip_source, dest, **limits)
    try:
        return detect_layout(dest)
    except DatasetError:
        shutil.rmtree(dest, ignore_errors=True)  # nothing usable: do not keep the bytes around
        raise


# ---- dataset preview -------------------------------------------------------------------------------
def read_dataset(layout: DatasetLayout, group_columns: Sequence[str] = (), verify: bool = True,
                 image_root: str | Path | None = None) -> ImageTable:
    if layout.kind == "waterbirds":
        extra = [g for g in group_columns if g != "place"]
        return read_manifest(layout.root, image_root=image_root, group_columns=["place", *extra],
                             class_names=["landbird", "waterbird"], verify=verify)
    if layout.kind == "manifest":
        return read_manifest(layout.root, image_root=image_root, group_columns=list(group_columns), verify=verify)
    return read_imagefolder(layout.root, verify=verify)


@dataclass
class DatasetPreview:
    """A dataset as it will be read, for a person to check before committing."""

    layout: DatasetLayout
    table: ImageTable
    csv_columns: list[str] = field(default_factory=list)  # columns a user may declare as group columns

    @property
    def counts(self) -> pd.DataFrame:
        """Images per class (rows) and split (columns), with a total column."""
        frame = self.table.frame
        counts = frame.groupby(["label", "split"]).size().unstack(fill_value=0)
        counts = counts.reindex(range(self.table.num_classes), fill_value=0)
        counts.index = [self.table.class_names[i] for i in counts.index]
        counts.index.name = "class"
        order = [s for s in ("train", "val", "test", "all") if s in counts.columns]
        counts = counts[order]
        counts["total"] = counts.sum(axis=1)
        return counts

    @property
    def counts_long(self) -> pd.DataFrame:
        """(class, split, images) rows, for a bar chart."""
        wide = self.counts.drop(columns="total")
        return wide.reset_index().melt(id_vars="class", var_name="split", value_name="images")

    @property
    def skipped_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.table.skipped, columns=["file", "reason"])

    def samples(self, per_class: int = 4, seed: int = 0) -> dict[str, list[str]]:
        """A few image paths per class (random but repeatable), for thumbnails."""
        rng = np.random.default_rng(seed)
        out = {}
        labels = self.table.labels
        paths_ = np.asarray(self.table.paths, dtype=object)
        for c, name in enumerate(self.table.class_names):
            idx = np.flatnonzero(labels == c)
            if len(idx):
                pick = rng.choice(idx, size=min(per_class, len(idx)), replace=False)
                out[name] = [str(p) for p in paths_[np.sort(pick)]]
        return out


def candidate_group_columns(csv_path: str | Path) -> list[str]:
    """CSV columns that are not the path, label, split or mask column: what could define groups."""
    header = [c.strip() for c in pd.read_csv(csv_path, nrows=0).columns]
    reserved = set(PATH_COLUMNS) | set(LABEL_COLUMNS) | set(MASK_COLUMNS) | {"split", "fold", "partition"}
    return [c for c in header if c.lower() not in reserved]


def preview_dataset(path: str | Path, group_columns: Sequence[str] = (), verify: bool = True,
                    image_root: str | Path | None = None) -> DatasetPreview:
    """Read a dataset (folder, CSV, or a folder holding one) for preview; raises `DatasetError` with the fix.

    `image_root`: where a CSV's relative image paths start (default: the CSV's folder).
    """
    text = str(path).strip()
    if not text:
        raise DatasetError("Give the dataset path: an ImageFolder root, a CSV manifest, or a folder holding one.")
    layout = detect_layout(Path(text).expanduser())
    table = read_dataset(layout, group_columns, verify=verify, image_root=image_root)
    columns = candidate_group_columns(layout.root) if layout.is_csv else []
    return DatasetPreview(layout=layout, table=table, csv_columns=columns)


# ---- model checks ----------------------------------------------------------------------------------
def architecture_choices(include_timm: bool = True) -> list[str]:
    """Every architecture name for the picker: spuraudit's own and TorchScript first, then torchvision, timm."""
    from .modelio.registry import architecture_names

    names = architecture_names(include_timm=include_timm)
    first = [n for n in names if not n.startswith(("torchvision:", "timm:"))]
    return first + [n for n in names if n not in first]


def architecture_defaults(name: str) -> dict:
    """Input size and normalisation the architecture's usual weights expect, to prefill the form."""
    from .modelio.registry import get_architecture

    arch = get_architecture(name)
    return {
        "input_size": int(arch.default_input_size[0]),
        "mean": [float(v) for v in arch.default_mean],
        "std": [float(v) for v in arch.default_std],
        "min_input_size": int(arch.min_input_size),
        "fixed_input_size": bool(arch.fixed_input_size),
        "description": arch.description,
    }


def inspect_model(checkpoint: str | Path, architecture: str, trust_pickle: bool = False,
                  options: dict | None = None, input_size: int = 224) -> CheckpointSummary:
    """What the checkpoint holds: head size (None for a backbone), fit with the architecture, trust needed."""
    return summarize_checkpoint(Path(str(checkpoint).strip()).expanduser(), architecture, trust_pickle,
                                options, (input_size, input_size))


class ClassMismatchError(ValueError):
    """The model's classes and the dataset's do not agree; carries both lists for a side-by-side view."""

    def __init__(self, reason: str, model_classes: list[str], dataset_classes: list[str]):
        self.model_classes = list(model_classes)
        self.dataset_classes = list(dataset_classes)
        super().__init__(f"{reason}\n{self.side_by_side_text()}")

    def side_by_side(self) -> pd.DataFrame:
        n = max(len(self.model_classes), len(self.dataset_classes))
        pad = lambda xs: list(xs) + [""] * (n - len(xs))  # noqa: E731
        return pd.DataFrame({"model (head order)": pad(self.model_classes), "dataset": pad(self.dataset_classes)})

    def side_by_side_text(self, limit: int = 25) -> str:
        table = self.side_by_side()
        more = f"\n  ... {len(table) - limit} more rows" if len(table) > limit else ""
        return table.head(limit).to_string(index=True) + more


def parse_class_names(text: str | Sequence[str] | None) -> list[str] | None:
    """'a, b, c' or one name per line -> ['a', 'b', 'c']; empty -> None (use the dataset's)."""
    if text is None:
        return None
    if not isinstance(text, str):
        names = [str(t).strip() for t in text]
    else:
        sep = "\n" if "\n" in text.strip() else ","
        names = [t.strip() for t in text.split(sep)]
    names = [n for n in names if n]
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"class names must be unique; repeated: {dupes}")
    return names or None


def resolve_class_names(head_classes: int | None, given: Sequence[str] | None, dataset_classes: Sequence[str]) -> list[str]:
    """The model's class names in head order, checked against the head size and the dataset.

    Without `given` names the dataset's classes are taken in their order (sorted folder names for an
    ImageFolder, as torchvision does). Every dataset class must be among the model's classes.
    """
    dataset_classes = list(dataset_classes)
    names = list(given) if given else list(dataset_classes)
    if head_classes is not None and len(names) != head_classes:
        placeholder = names if given else [f"output {i}" for i in range(head_classes)]
        who = f"{len(names)} class names were given" if given else f"the dataset has {len(dataset_classes)} classes"
        raise ClassMismatchError(
            f"The checkpoint's head has {head_classes} outputs but {who}. Give the model's class names in the "
            "order of its outputs (the dataset's class names must be among them), or use linear-probe mode to "
            "fit a new head for the dataset's classes.",
            placeholder, dataset_classes,
        )
    if given:
        unknown = [c for c in dataset_classes if c not in names]
        if unknown and not _integer_names(dataset_classes, len(names)):
            raise ClassMismatchError(
                f"The dataset's classes {unknown} are not among the model's class names; rename the folders or "
                "labels, or correct the model's class names (same spelling).",
                names, dataset_classes,
            )
    return names


def _integer_names(dataset_classes: Sequence[str], n_model: int) -> bool:
    """A CSV with integer labels: its classes are '0', '1', ... and index the model's outputs directly."""
    return list(dataset_classes) == [str(i) for i in range(len(dataset_classes))] and len(dataset_classes) <= n_model


def relabel(table: ImageTable, model_classes: Sequence[str]) -> ImageTable:
    """The table with labels re-indexed into the model's class order (and its class list)."""
    model_classes = list(model_classes)
    if list(table.class_names) == model_classes:
        return table
    if _integer_names(table.class_names, len(model_classes)) and not set(table.class_names) & set(model_classes):
        mapping = {i: i for i in range(table.num_classes)}
    else:
        mapping = {i: model_classes.index(c) for i, c in enumerate(table.class_names)}
    frame = table.frame.copy()
    frame["label"] = frame["label"].map(mapping).astype(np.int64)
    return ImageTable(class_names=model_classes, frame=frame, group_columns=table.group_columns,
                      skipped=table.skipped, source=table.source)


def parse_floats(value: str | Sequence[float], what: str) -> list[float]:
    if isinstance(value, str):
        try:
            values = [float(v) for v in value.split(",")]
        except ValueError:
            raise ValueError(f"{what} must be three comma-separated numbers, got '{value}'.") from None
    else:
        values = [float(v) for v in value]
    if len(values) != 3:
        raise ValueError(f"{what} must have 3 values (one per RGB channel), got {len(values)}.")
    if what.lower().endswith("std") and any(v <= 0 for v in values):
        raise ValueError(f"{what} values must be positive, got {values}.")
    return values


def _fresh_folder(parent: Path, name: str) -> Path:
    """`parent/name`, or `name-2`, `name-3`, ... so that creating a project never overwrites another model."""
    candidate, i = parent / name, 2
    while candidate.exists():
        candidate, i = parent / f"{name}-{i}", i + 1
    return candidate


# ---- creating the project --------------------------------------------------------------------------
def create_project(
    name: str,
    data: str | Path,
    groups: str | Sequence[str] = "",
    arch: str = "torchvision:resnet50",
    checkpoint: str | Path = "",
    size: int | None = None,
    mean: str | Sequence[float] | None = None,
    std: str | Sequence[float] | None = None,
    trust_pickle: bool = False,
    *,
    model_name: str | None = None,
    class_names: str | Sequence[str] | None = None,
    linear_probe: bool = False,
    class_balanced: bool = False,
    probe_train_fraction: float | None = None,
    model_options: dict | None = None,
    image_root: str | Path | None = None,
    source: str = "path",
    progress: Progress | None = None,
    base: Path | None = None,
) -> Project:
    """Read the dataset, check the checkpoint against it, store the model and the project.

    `data`: an ImageFolder root, a CSV manifest, Waterbirds' metadata.csv, a folder holding one, or a .zip
    of any of them (extracted safely under `<home>/uploads/`). `groups`: CSV group columns. `class_names`:
    the model's classes in head order (default: the dataset's). `size`, `mean`, `std`: None takes the
    architecture's defaults. `model_name`: the folder under `models/` (default `<name>-model`, never
    overwriting an existing one). `linear_probe`: the checkpoint is a backbone;
    fit a new head on the training split (`probe_train_fraction` splits a dataset that has none at random).
    `model_options`: card options, e.g. `{feature_layer, head}` for TorchScript. `image_root`: where a CSV's
    relative image paths start (default: the CSV's folder). Raises `DatasetError`,
    `CheckpointError` or `ClassMismatchError` with a message that names the problem and the fix.
    """
    from .modelio.importing import import_model
    from .modelio.linear_probe import split_for_probe
    from .probe import fit_linear_probe

    say = progress or (lambda f, m: None)
    if not str(name).strip():
        raise ValueError("Give the project a name.")
    if not str(checkpoint).strip():
        raise ValueError("Give the checkpoint: a file path on the server, or upload one.")
    checkpoint_path = Path(str(checkpoint).strip()).expanduser()
    group_columns = [g.strip() for g in groups.split(",")] if isinstance(groups, str) else list(groups)
    group_columns = [g for g in group_columns if g]
    if size is None or mean is None or std is None:
        defaults = architecture_defaults(arch)
        size = defaults["input_size"] if size is None else size
        mean = defaults["mean"] if mean is None else mean
        std = defaults["std"] if std is None else std
    mean_values, std_values = parse_floats(mean, "Normalisation mean"), parse_floats(std, "Normalisation std")

    data_text = str(data).strip()
    if not data_text:
        raise DatasetError("Give the dataset: an ImageFolder root, a CSV manifest, or a .zip of one.")
    data_path = Path(data_text).expanduser()
    say(0.0, "reading the dataset")
    if data_path.suffix.lower() == ".zip" and data_path.is_file():
        layout = unpack_dataset_zip(data_path, data_path.name, base=base)
    else:
        layout = detect_layout(data_path)
    table = read_dataset(layout, group_columns, image_root=image_root)

    models = paths.models_dir(base)
    folder = _fresh_folder(models, paths.safe_name(model_name or f"{name}-model"))
    card = ModelCard(
        name=folder.name,
        architecture=arch,
        class_names=list(table.class_names),
        input_size=[int(size), int(size)],
        mean=mean_values,
        std=std_values,
        source=source,
        options={**(model_options or {}), "checkpoint": str(checkpoint_path.resolve())},
    )
    if linear_probe:
        if "train" not in table.splits and probe_train_fraction:
            table = split_for_probe(table, probe_train_fraction)
        fit_linear_probe(table, card, checkpoint_path, folder, progress=lambda f, m: say(0.05 + 0.9 * f, m),
                         class_balanced=class_balanced, trust_pickle=trust_pickle)
    else:
        summary = inspect_model(checkpoint_path, arch, trust_pickle, model_options, int(size))
        if summary.refusal:
            from .modelio import CheckpointError, UntrustedPickleError

            raise (UntrustedPickleError if summary.needs_trust else CheckpointError)(summary.refusal)
        model_names = resolve_class_names(summary.num_classes, parse_class_names(class_names), table.class_names)
        table = relabel(table, model_names)
        card.class_names = model_names
        say(0.3, "checking the checkpoint against the architecture")
        import_model(checkpoint_path, card, folder, trust_pickle=trust_pickle)
    say(0.95, "writing the project")
    return Project.create(name, table, folder, base=base)


PROBE_JOB_KIND = PROJECT_CREATE  # kept for callers that imported the old name


def create_project_job(ctx, extract: bool = True, **params) -> dict:
    """Job entry point (`fn(ctx, **params)`): `create_project` with JSON parameters, then (by default) the
    feature extraction, in the background. Used for linear probes, which run the backbone over the
    training split and must not run while a page waits. `params` are `create_project`'s arguments;
    `base` may be a string."""
    base = params.pop("base", None)
    share = 0.5 if extract else 1.0
    project = create_project(**params, progress=lambda f, m: ctx.progress(share * f, m),
                             base=Path(base) if base else None)
    ctx.log(f"project created: {project.folder} (model {project.model})")
    result = {"project": str(project.folder), "model": project.model}
    if extract:
        store = project.extract(progress=lambda f, m: ctx.progress(0.5 + 0.5 * f, m))
        result["store"] = str(store.path)
    return result
