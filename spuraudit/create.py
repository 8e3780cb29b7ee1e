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
import errno
import hashlib
import json
import os
import uuid
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Sequence

import numpy as np
import pandas as pd

from . import paths
from .data import read_imagefolder, read_manifest
from .data.archive import DatasetLayout, detect_layout, extract_zip
from .data.manifest import LABEL_COLUMNS, MASK_COLUMNS, PATH_COLUMNS
from .data.table import DatasetError, ImageTable
from .modelio import ModelCard
from .modelio.inspection import CheckpointSummary, summarize_checkpoint
from .project import Project
from .common import Progress
from .jobs.kinds import PROJECT_CREATE

UPLOADS = "uploads"


# ---- uploads --------------------------------------------------------------------------------------
def uploads_dir(base: Path | None = None) -> Path:
    return (base or paths.home()) / UPLOADS


def _stamped(name: str) -> str:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    return f"{stamp}-{paths.safe_name(name)}"


def save_upload(name: str, data: bytes | BinaryIO, base: Path | None = None) -> Path:
    """Write an uploaded file under `<home>/uploads/` (atomically), named by its content hash and name.

    The same content uploaded again (a retry, a second attempt after a refusal) gives back the file
    already there instead of another copy.
    """
    folder = uploads_dir(base)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".upload-", dir=folder)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            if isinstance(data, (bytes, bytearray, memoryview)):
                digest.update(data)
                out.write(data)
            else:
                if hasattr(data, "seek"):
                    data.seek(0)
                while chunk := data.read(1024**2):
                    digest.update(chunk)
                    out.write(chunk)
        key = digest.hexdigest()[:16]
        earlier = sorted(folder.glob(f"{key}-*"))
        if earlier and earlier[0].is_file():
            Path(tmp).unlink()
            return earlier[0]
        target = folder / f"{key}-{paths.safe_name(Path(name).name or 'upload')}"
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def discard_upload(path: str | Path, base: Path | None = None) -> bool:
    """Delete an uploaded file that was refused (only a file directly under `<home>/uploads/`)."""
    path = Path(path)
    if path.parent.resolve() != uploads_dir(base).resolve() or not path.is_file():
        return False
    path.unlink(missing_ok=True)
    return True


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


def not_a_checkpoint(path: str | Path) -> str | None:
    """Why the file cannot be a checkpoint, judged by its first bytes; None when it may be one.

    torch.save and TorchScript write zip archives, older torch a pickle, safetensors an 8-byte length and a
    JSON header. Anything else (random bytes, an HTML error page saved as .pt) is refused as what it is,
    rather than as a pickle that would need trust.
    """
    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        return None  # its reader checks the header itself and says precisely what is wrong
    try:
        with open(path, "rb") as fh:
            head = fh.read(512)
    except OSError:
        return None  # missing or unreadable: the checkpoint reader says so with its own message
    if head.startswith(b"PK\x03\x04") or (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")):
        return None
    if len(head) > 8 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < 100_000_000:
        return None  # safetensors
    if head[257:262] == b"ustar":
        return None  # the tar files of torch before 0.4
    return (f"{path}: is not a checkpoint: it is not a zip archive (torch.save, TorchScript), a pickle or a "
            f"safetensors file (it starts with {head[:8]!r}). Check that this is the weights file and that it "
            "was copied or downloaded completely.")


def inspect_model(checkpoint: str | Path, architecture: str, trust_pickle: bool = False,
                  options: dict | None = None, input_size: int = 224) -> CheckpointSummary:
    """What the checkpoint holds: head size (None for a backbone), fit with the architecture, trust needed."""
    path = Path(str(checkpoint).strip()).expanduser()
    reason = not_a_checkpoint(path)
    if reason:
        return CheckpointSummary(path=str(path), architecture=architecture, num_classes=None, head_key=None,
                                 refusal=reason)
    return summarize_checkpoint(path, architecture, trust_pickle, options, (input_size, input_size))


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


MAX_NAME_LENGTH = 100


def check_name(name: str, what: str = "project name") -> str:
    """The folder name for a project or model name, checked before any work starts.

    Raises ValueError naming the problem when the name cannot become a folder of its own: empty,
    only dots, too long, or without a letter or digit that a folder name can keep (e.g. Cyrillic only).
    """
    text = str(name or "").strip()
    if not text:
        raise ValueError(f"Give the {what}.")
    if len(text) > MAX_NAME_LENGTH:
        raise ValueError(f"The {what} is {len(text)} characters long; use at most {MAX_NAME_LENGTH}.")
    if set(text) <= {"."}:
        raise ValueError(f"The {what} {text!r} is not a usable folder name; use letters or digits.")
    try:
        folder = paths.safe_name(text)
    except ValueError:
        raise ValueError(
            f"The {what} {text!r} has no letters A-Z or digits; it names a folder, so use letters A-Z, digits, "
            "'-', '_' or '.' (e.g. 'waterbirds-resnet50')."
        ) from None
    return folder


def project_folder_for(name: str, base: Path | None = None, replace: bool = False) -> Path:
    """The folder `name` gets under projects/, after `check_name`; refuses an existing project unless
    `replace`, and never lets two different names share a folder ('a/b' and 'a-b' both map to `a-b`)."""
    folder = paths.projects_dir(base) / check_name(name)
    if folder.exists():
        if not (folder / "project.json").is_file():
            raise ValueError(f"{folder} exists but is not a project; move it away or choose another name.")
        try:
            existing = json.loads((folder / "project.json").read_text()).get("name")
        except (OSError, ValueError):
            existing = None
        if existing != str(name).strip():
            raise ValueError(
                f"The project name {str(name).strip()!r} maps to the folder {folder}, which already holds the "
                f"project {existing!r}; choose another name."
            )
        if not replace:
            raise ValueError(
                f"A project named {existing!r} already exists ({folder}); choose another name, or replace its "
                "dataset and model explicitly (`spuraudit create --replace`). Its votes are kept only when the "
                "model is the same."
            )
    return folder


class StorageError(OSError):
    """Writing failed (usually a full disk); nothing of what was being created was kept."""

    def __init__(self, code: int, message: str):
        super().__init__(message)  # one argument: str() is the message alone, without "[Errno N]"
        self.errno = code


_DISK_ERRNOS = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}


def storage_error(exc: BaseException, target: Path, what: str) -> StorageError | None:
    """A clear `StorageError` for a failed write of `target`, or None when `exc` is something else."""
    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS:
        where = exc.filename or target
        return StorageError(exc.errno, f"disk full while writing {where} ({exc.strerror}). Nothing of {what} "
                                       "was kept; free some space (or raise the file-size limit) and run it again.")
    text = str(exc).lower()
    # torch.save reports a failed write as a RuntimeError of its zip writer, without an errno.
    if isinstance(exc, RuntimeError) and ("streamwriter" in text or "unexpected pos" in text or "write" in text):
        return StorageError(errno.EIO, f"could not write {target}: the disk may be full (torch: "
                                       f"{str(exc).splitlines()[0]}). Nothing of {what} was kept; free some space "
                                       "and run it again.")
    return None


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
    replace: bool = False,
    notes: list[str] | None = None,
) -> Project:
    """Read the dataset, check the checkpoint against it, store the model and the project.

    `data`: an ImageFolder root, a CSV manifest, Waterbirds' metadata.csv, a folder holding one, or a .zip
    of any of them (extracted safely under `<home>/uploads/`). `groups`: CSV group columns. `class_names`:
    the model's classes in head order (default: the dataset's). `size`, `mean`, `std`: None takes the
    architecture's defaults. `model_name`: the folder under `models/` (default `<name>-model`, never
    overwriting an existing one). `linear_probe`: the checkpoint is a backbone;
    fit a new head on the training split (`probe_train_fraction` splits a dataset that has none at random).
    `model_options`: card options, e.g. `{feature_layer, head}` for TorchScript. `image_root`: where a CSV's
    relative image paths start (default: the CSV's folder). `replace`: an existing project of this name
    gets the new dataset and model (its votes are kept when the model is the same, else moved aside, as
    said in `notes`); without it an existing name is refused. Raises `DatasetError`, `CheckpointError`,
    `ClassMismatchError` or `StorageError` (disk full) with a message that names the problem and the fix.
    All or nothing: on any failure no part of the new project or model folder remains.
    """
    say = progress or (lambda f, m: None)
    name = str(name or "").strip()
    project_folder = project_folder_for(name, base, replace=replace)  # before any work
    model_folder_name = check_name(model_name or f"{name}-model", "model name")
    if not str(checkpoint).strip():
        raise ValueError("Give the checkpoint: a file path on the server, or upload one.")
    checkpoint_path = Path(str(checkpoint).strip()).expanduser()
    if reason := not_a_checkpoint(checkpoint_path):
        from .modelio import CheckpointError

        raise CheckpointError(reason)
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
    unpacked: Path | None = None  # a zip's extracted copy, removed again when creating fails
    try:
        if data_path.suffix.lower() == ".zip" and data_path.is_file():
            layout = unpack_dataset_zip(data_path, data_path.name, base=base)
            uploads = uploads_dir(base).resolve()
            unpacked = uploads / Path(layout.root).resolve().relative_to(uploads).parts[0]
        else:
            layout = detect_layout(data_path)
        table = read_dataset(layout, group_columns, image_root=image_root)
        return _create(name, table, project_folder, model_folder_name, arch, checkpoint_path, size, mean_values,
                       std_values, trust_pickle, class_names, linear_probe, class_balanced, probe_train_fraction,
                       model_options, source, say, base, notes, replace)
    except BaseException:
        if unpacked is not None:
            shutil.rmtree(unpacked, ignore_errors=True)
        raise


def _create(name, table, project_folder, model_folder_name, arch, checkpoint_path, size, mean_values, std_values,
            trust_pickle, class_names, linear_probe, class_balanced, probe_train_fraction, model_options, source,
            say, base, notes, replace) -> Project:
    """The model, then the project, each staged and renamed into place (see `create_project`)."""
    from .modelio.importing import import_model
    from .modelio.linear_probe import split_for_probe
    from .probe import fit_linear_probe

    models = paths.models_dir(base)
    final_model = _fresh_folder(models, model_folder_name)
    # Everything is written under hidden staging names first and renamed into place at the end.
    # The model is staged under its final name inside a hidden folder: writers name the card after the folder.
    staging_root = models / f".creating-{uuid.uuid4().hex[:8]}"
    staging_model = staging_root / final_model.name
    card = ModelCard(
        name=final_model.name,
        architecture=arch,
        class_names=list(table.class_names),
        input_size=[int(size), int(size)],
        mean=mean_values,
        std=std_values,
        source=source,
        options={**(model_options or {}), "checkpoint": str(checkpoint_path.resolve())},
    )
    model_renamed = False
    try:
        try:
            if linear_probe:
                if "train" not in table.splits and probe_train_fraction:
                    table = split_for_probe(table, probe_train_fraction)
                fit_linear_probe(table, card, checkpoint_path, staging_model,
                                 progress=lambda f, m: say(0.05 + 0.9 * f, m),
                                 class_balanced=class_balanced, trust_pickle=trust_pickle)
            else:
                summary = inspect_model(checkpoint_path, arch, trust_pickle, model_options, int(size))
                if summary.refusal:
                    from .modelio import CheckpointError, UntrustedPickleError

                    raise (UntrustedPickleError if summary.needs_trust else CheckpointError)(summary.refusal)
                model_names = resolve_class_names(summary.num_classes, parse_class_names(class_names),
                                                  table.class_names)
                table = relabel(table, model_names)
                card.class_names = model_names
                say(0.3, "checking the checkpoint against the architecture")
                import_model(checkpoint_path, card, staging_model, trust_pickle=trust_pickle)
        except BaseException as exc:
            raise storage_error(exc, final_model, f"the model {final_model.name}") or exc
        say(0.95, "writing the project")
        os.rename(staging_model, final_model)
        model_renamed = True
        shutil.rmtree(staging_root, ignore_errors=True)
        project = _write_project(name, table, final_model, project_folder, base, notes, replace)
    except BaseException:
        shutil.rmtree(staging_root, ignore_errors=True)
        if model_renamed:
            shutil.rmtree(final_model, ignore_errors=True)
        raise
    return project


def _write_project(name: str, table: ImageTable, model_folder: Path, folder: Path, base: Path | None,
                   notes: list[str] | None, replace: bool = False) -> Project:
    """Write the project under a hidden staging name and rename it into place. An existing project of
    that name (replace) is swapped out in the same way; its feature stores stay, its votes stay only when
    the model is the same, and everything else of it goes."""
    from .settings import ProjectSettings

    projects = paths.projects_dir(base)
    projects.mkdir(parents=True, exist_ok=True)
    staging = projects / f".creating-{folder.name}-{uuid.uuid4().hex[:8]}"
    old = Project.open(folder) if (folder / "project.json").is_file() else None
    if old is not None and not replace:  # created by someone else while this one ran
        project_folder_for(name, base, replace=False)  # raises, saying what to do
    settings = old.settings if old else ProjectSettings()
    project = Project(folder=staging, name=name, model=str(model_folder.resolve()), settings=settings)
    aside: Path | None = None
    try:
        try:
            staging.mkdir()
            table.save(staging)
            project.save()
        except BaseException as exc:
            raise storage_error(exc, folder, f"the project {name!r}") or exc
        if old is not None:
            aside = projects / f".replaced-{folder.name}-{uuid.uuid4().hex[:8]}"
            os.rename(folder, aside)
        try:
            os.rename(staging, folder)
        except BaseException:
            if aside is not None:
                os.rename(aside, folder)
                aside = None
            raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    project.folder = folder
    if old is not None and aside is not None:
        _carry_over(aside, folder, Path(old.model), model_folder, notes if notes is not None else [])
        shutil.rmtree(aside, ignore_errors=True)
    return project


def _same_model(old: Path, new: Path) -> bool:
    """Whether two model folders hold the same network: classes, input and weights (by content)."""
    from .modelio import load_model, weights_hash

    try:
        old_model, old_card = load_model(old)
    except Exception:  # noqa: BLE001 - a missing or broken old model is simply not the same one
        return False
    new_model, new_card = load_model(new)
    return (old_card.architecture, old_card.class_names, list(old_card.input_size)) == (
        new_card.architecture, new_card.class_names, list(new_card.input_size)) and \
        weights_hash(old_model) == weights_hash(new_model)


def _carry_over(old: Path, new: Path, old_model: Path, new_model: Path, notes: list[str]) -> None:
    """Move what stays valid from a replaced project's folder into the new one (renames only)."""
    if (old / "features").is_dir():
        os.rename(old / "features", new / "features")  # keyed by model and dataset content: never stale
    db = old / "labels.db"
    if not db.is_file():
        return
    if _same_model(old_model, new_model):
        for suffix in ("", "-wal", "-shm"):
            if (old / f"labels.db{suffix}").exists():
                os.rename(old / f"labels.db{suffix}", new / f"labels.db{suffix}")
        notes.append(f"kept the project's votes: the model is the same as before ({old_model.name}).")
        return
    kept = new / f"labels-before-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}.db"
    for suffix in ("", "-wal", "-shm"):
        if (old / f"labels.db{suffix}").exists():
            os.rename(old / f"labels.db{suffix}", Path(f"{kept}{suffix}"))
    notes.append(f"the earlier votes label the features of another model ({old_model.name}), so they were moved "
                 f"to {kept} and the project starts without votes.")


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
