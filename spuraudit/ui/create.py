"""Creating a project from paths typed into the app (the same steps as `spuraudit create`)."""

from __future__ import annotations

from pathlib import Path

from .. import paths
from ..data import read_imagefolder, read_manifest
from ..data.table import DatasetError
from ..modelio import ModelCard, import_checkpoint
from ..project import Project


def _floats(text: str, what: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"{what} must be three comma-separated numbers, got '{text}'.") from None
    if len(values) != 3:
        raise ValueError(f"{what} must have 3 values (one per RGB channel), got {len(values)}.")
    return values


def create_project(name: str, data: str, groups: str, arch: str, checkpoint: str, size: int,
                   mean: str, std: str, trust_pickle: bool) -> Project:
    """Read the dataset, check the checkpoint against it, store both; raise with a clear message."""
    if not data.strip():
        raise DatasetError("Give the dataset path: an ImageFolder root or a CSV manifest.")
    if not checkpoint.strip():
        raise ValueError("Give the checkpoint path.")
    data_path = Path(data.strip()).expanduser()
    group_columns = [g.strip() for g in groups.split(",") if g.strip()]
    if data_path.suffix.lower() == ".csv":
        table = read_manifest(data_path, group_columns=group_columns)
    else:
        table = read_imagefolder(data_path)
    card = ModelCard(
        name=paths.safe_name(f"{name}-model"),
        architecture=arch,
        class_names=list(table.class_names),
        input_size=[size, size],
        mean=_floats(mean, "Normalisation mean"),
        std=_floats(std, "Normalisation std"),
        source="path",
        options={"checkpoint": str(Path(checkpoint).expanduser().resolve())},
    )
    folder = paths.models_dir() / card.name
    model, card = import_checkpoint(Path(checkpoint.strip()).expanduser(), card, folder, trust_pickle=trust_pickle)
    return Project.create(name, table, folder)
