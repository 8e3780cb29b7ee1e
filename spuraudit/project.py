"""An audit project on disk: a dataset table, a model, feature stores, labels and caches.

    projects/<name>/project.json   name, model folder, further models of the same classes, settings
    projects/<name>/dataset.csv    the image table (+ dataset.json)
    projects/<name>/features/      feature stores, one per (model, dataset) content hash
    projects/<name>/labels.db      votes on (class, feature) pairs
    projects/<name>/cache/         rendered thumbnails and heatmaps
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable

from . import paths
from .atomic import clean_stale_temp, remembered_beside, write_text_atomic
from .data.table import ImageTable, table_identity
from .features import FeatureStore, extract_features, store_index, store_key, write_store_index
from .modelio import AuditModel, ModelCard, load_model, weights_hash
from .settings import PROJECT_SCHEMA_VERSION, ProjectSettings, settings_from_dict
from .typed import TypedValueError

PROJECT_FILE = "project.json"

# The defaults as a plain mapping, for callers that want one; ProjectSettings is where they are defined.
DEFAULT_SETTINGS = ProjectSettings().to_dict()


class ProjectError(ValueError):
    pass


@dataclass
class Project:
    folder: Path
    name: str
    model: str  # model folder, absolute (project.json stores it relative to the home's models/ when inside)
    settings: ProjectSettings = field(default_factory=ProjectSettings)
    # Further user models of the same classes (absolute folders), audited on the same images as `model`.
    models: list[str] = field(default_factory=list)

    def __post_init__(self):
        if isinstance(self.settings, dict):  # from Python callers: checked like a project file's
            self.settings = settings_from_dict(self.settings, str(Path(self.folder) / PROJECT_FILE))

    # ---- files -------------------------------------------------------------------------
    @classmethod
    def find(cls, name_or_folder: str | Path) -> "Project":
        """Open a project given its folder, or its name under the home's projects folder."""
        folder = Path(name_or_folder)
        if not (folder / "project.json").is_file():
            candidate = paths.projects_dir() / str(name_or_folder)
            if (candidate / "project.json").is_file():
                folder = candidate
        return cls.open(folder)

    @classmethod
    def open(cls, folder: str | Path) -> "Project":
        folder = Path(folder)
        file = folder / PROJECT_FILE
        if not file.is_file():
            raise ProjectError(f"{folder}: no {PROJECT_FILE}; not a spuraudit project.")
        for part in (folder, folder / "features"):  # what writers killed mid-way left behind
            clean_stale_temp(part)
        try:
            data = json.loads(file.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ProjectError(f"{file}: not readable JSON ({err}); restore it from a backup.") from None
        if not isinstance(data, dict) or "name" not in data or "model" not in data:
            raise ProjectError(f"{file}: needs 'name' and 'model'; is this a spuraudit project file?")
        version = data.get("schema_version", 1)  # files from before the version existed are version 1
        if not isinstance(version, int) or version > PROJECT_SCHEMA_VERSION:
            raise ProjectError(f"{file}: schema_version {version!r} is newer than this spuraudit understands "
                               f"({PROJECT_SCHEMA_VERSION}); update spuraudit.")
        unknown = sorted(set(data) - {"schema_version", "name", "model", "models", "settings"})
        if unknown:
            raise ProjectError(f"{file}: unknown key '{unknown[0]}'. Remove it, or check its spelling.")
        try:
            settings = settings_from_dict(data.get("settings", {}), str(file))
        except TypedValueError as err:
            raise ProjectError(str(err)) from None
        model = Path(data["model"])
        if not model.is_absolute():  # a model in the home's models/, stored by name so the home can move
            if ".." in model.parts:
                raise ProjectError(f"{file}: model '{model}' leaves the home's models/ folder; give an absolute path.")
            model = _models_dir_of(folder) / model
        extra = data.get("models", [])
        if not isinstance(extra, list) or not all(isinstance(m, str) and m for m in extra):
            raise ProjectError(f"{file}: 'models' must be a list of model folders; fix or remove it.")
        others = []
        for entry in extra:
            if not Path(entry).is_absolute() and ".." in Path(entry).parts:
                raise ProjectError(f"{file}: model '{entry}' leaves the home's models/ folder; give an absolute path.")
            others.append(str(Path(entry) if Path(entry).is_absolute() else _models_dir_of(folder) / entry))
        return cls(folder=folder, name=data["name"], model=str(model), settings=settings, models=others)

    @classmethod
    def create(
        cls,
        name: str,
        table: ImageTable,
        model_folder: str | Path,
        base: Path | None = None,
        settings: dict | None = None,
    ) -> "Project":
        folder = paths.projects_dir(base) / paths.safe_name(name)
        folder.mkdir(parents=True, exist_ok=True)
        project = cls(
            folder=folder,
            name=name,
            model=str(Path(model_folder).resolve()),
            settings=ProjectSettings().updated(settings or {}, str(folder / PROJECT_FILE)),
        )
        table.save(folder)
        project.save()
        return project

    def save(self) -> None:
        data = {"schema_version": PROJECT_SCHEMA_VERSION, "name": self.name,
                "model": _stored_model_path(self.folder, self.model), "settings": self.settings.to_dict()}
        if self.models:  # written only when there are some, so single-model files stay as they were
            data["models"] = [_stored_model_path(self.folder, m) for m in self.models]
        write_text_atomic(self.folder / PROJECT_FILE, json.dumps(data, indent=1))

    def update_settings(self, **changes) -> None:
        """Change settings (checked like the file's: an unknown key or a wrong type raises) and save."""
        try:
            self.settings = self.settings.updated(changes, str(self.folder / PROJECT_FILE))
        except TypedValueError as err:
            raise ProjectError(str(err)) from None
        self.save()

    # ---- parts -------------------------------------------------------------------------
    @cached_property
    def table(self) -> ImageTable:
        return ImageTable.load(self.folder)

    @property
    def model_folder(self) -> Path:
        return Path(self.model)

    def load_model(self, folder: str | Path | None = None) -> tuple[AuditModel, ModelCard]:
        model, card = load_model(folder or self.model_folder)
        if card.num_classes != self.table.num_classes:
            raise ProjectError(
                f"model {card.name} has {card.num_classes} classes {card.class_names} but the dataset has "
                f"{self.table.num_classes}: {self.table.class_names}."
            )
        return model, card

    # ---- several models of the same classes -------------------------------------------------------
    def model_folders(self) -> list[Path]:
        """The project's own model first, then the further models added to it."""
        return [self.model_folder] + [Path(m) for m in self.models]

    def add_model(self, folder: str | Path) -> Path:
        """Add another model of the same classes (same names, same order); saved at once.

        Raises ProjectError naming both class lists when they differ, or when the folder holds no model.
        Adding a model that is already there changes nothing.
        """
        from .modelio.card import CARD_FILE

        folder = Path(folder).resolve()
        card_file = folder / CARD_FILE
        if not card_file.is_file():
            raise ProjectError(f"{folder}: no {CARD_FILE}; not a spuraudit model folder (import the checkpoint first).")
        card = ModelCard.from_yaml(card_file.read_text(), str(card_file))
        if list(card.class_names) != list(self.table.class_names):
            ours, theirs = list(self.table.class_names), list(card.class_names)
            first = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
            raise ProjectError(
                f"model {card.name} has {len(theirs)} classes and the project '{self.name}' has {len(ours)}; they "
                f"differ first at position {first} (model: {theirs[first] if first < len(theirs) else '-'}, "
                f"project: {ours[first] if first < len(ours) else '-'}). Every model of a project must have the "
                f"dataset's classes in the same order.")
        if folder in {p.resolve() for p in self.model_folders()}:
            return folder
        self.models = [*self.models, str(folder)]
        self.save()
        return folder

    def remove_model(self, folder: str | Path) -> bool:
        """Take a further model out of the project (its folder and feature store stay on disk)."""
        target = Path(folder).resolve()
        kept = [m for m in self.models if Path(m).resolve() != target]
        if len(kept) == len(self.models):
            return False
        self.models = kept
        self.save()
        return True

    @property
    def labels_path(self) -> Path:
        return self.folder / "labels.db"

    def labels(self):
        from .labels import LabelStore

        return LabelStore(self.labels_path)

    def spurious_features(self) -> dict[int, list[int]]:
        if not self.labels_path.exists():
            return {}
        return self.labels().spurious_features()

    @property
    def cache_dir(self) -> Path:
        return self.folder / "cache"

    # ---- features ----------------------------------------------------------------------
    def _model_hash(self, model_folder: Path) -> str:
        """Weights hash, cached beside the weights (keyed by their size and mtime)."""
        weights = next(model_folder.glob("weights.*"), None)

        def digest() -> str:
            return weights_hash(load_model(model_folder)[0])

        if weights is None:
            return digest()
        return str(remembered_beside(weights, model_folder / ".weights-hash.json", digest))

    @staticmethod
    def _input_size(model_folder: Path) -> list[int]:
        """The card's input size, cached beside it: parsing a card with 1,000 class names takes ~0.5 s."""
        card_file = model_folder / "model.yaml"
        size = remembered_beside(card_file, model_folder / ".card-input-size.json",
                                 lambda: list(ModelCard.from_yaml(card_file.read_text()).input_size))
        return list(size)

    @property
    def features_dir(self) -> Path:
        return self.folder / "features"

    def feature_store_path(self, model_folder: str | Path | None = None) -> Path:
        """Where the store of this model and the current dataset.csv lives (made or not).

        O(1): the model hash is cached beside the weights, the table's identity beside dataset.csv.
        Stores made by earlier versions (keyed by a stat of every image) are found once, recorded
        in features/index.json, and reused.
        """
        folder = Path(model_folder or self.model_folder)
        input_size = self._input_size(folder)
        model_hash = self._model_hash(folder)
        table_id = table_identity(self.folder)
        path = self.features_dir / store_key(model_hash, table_id, input_size)
        if (path / "meta.json").is_file():
            return path
        legacy = self._legacy_store(model_hash, table_id, input_size)
        return legacy if legacy is not None else path

    def _legacy_store(self, model_hash: str, table_id: str, input_size) -> Path | None:
        """A store of an earlier version for this (model, table), looked up once and then indexed."""
        index = store_index(self.features_dir)
        entry = f"{model_hash}|{table_id}|{tuple(input_size)}"
        if entry in index:
            found = index[entry]
            return self.features_dir / found if found and (self.features_dir / found / "meta.json").is_file() else None
        unkeyed = [p for p in self.features_dir.glob("*/meta.json") if "table" not in json.loads(p.read_text())]
        if not unkeyed:
            return None
        old_key = store_key(model_hash, self.table.legacy_content_hash(), input_size)
        found = old_key if (self.features_dir / old_key / "meta.json").is_file() else ""
        write_store_index(self.features_dir, {**index, entry: found})
        return self.features_dir / found if found else None

    def feature_store(self, model_folder: str | Path | None = None) -> FeatureStore | None:
        """The cached store, or None when features have not been extracted yet (never computes)."""
        path = self.feature_store_path(model_folder)
        return FeatureStore.open(path) if (path / "meta.json").is_file() else None

    def extract(
        self,
        model_folder: str | Path | None = None,
        progress: Callable[[float, str], None] | None = None,
        device: str | None = None,
        batch_size: int = 128,
        num_workers: int | None = None,
        chunk_rows: int | None = None,
        precision: str | None = None,
        decode: str | None = None,
    ) -> FeatureStore:
        """Extract (or resume, or reuse) the store of this model and dataset; see `extract_features`."""
        folder = Path(model_folder or self.model_folder)
        existing = self.feature_store(folder)
        if existing is not None:  # also finds a store of an earlier version
            if progress:
                progress(1.0, "features already computed (cached)")
            return existing
        model, card = self.load_model(folder)
        return extract_features(
            model,
            self.table,
            self.folder / "features",
            card.input_size,
            batch_size=batch_size,
            num_workers=num_workers,
            device=device,
            progress=progress,
            model_hash=self._model_hash(folder),
            precision=precision,
            decode=decode,
            **({"chunk_rows": chunk_rows} if chunk_rows else {}),
        )


def _models_dir_of(project_folder: Path) -> Path:
    """The models/ folder of the home holding the project (`<home>/projects/<name>`)."""
    return Path(os.path.abspath(project_folder)).parent.parent / "models"


def _stored_model_path(project_folder: Path, model: str) -> str:
    """The model folder as project.json stores it: its path inside the home's models/, else absolute."""
    models = _models_dir_of(project_folder)
    for inside, base in ((Path(os.path.abspath(model)), models), (Path(model).resolve(), models.resolve())):
        try:
            return inside.relative_to(base).as_posix()
        except ValueError:
            continue
    return str(model)


def list_projects(base: Path | None = None) -> list[Path]:
    root = paths.projects_dir(base)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / PROJECT_FILE).is_file())
