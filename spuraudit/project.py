"""An audit project on disk: a dataset table, a model, feature stores, labels and caches.

    projects/<name>/project.json   name, model folder, settings
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
from .data.table import ImageTable
from .features import FeatureStore, extract_features, store_key
from .modelio import AuditModel, ModelCard, load_model, weights_hash

PROJECT_FILE = "project.json"

DEFAULT_SETTINGS = {
    "image_set": "correct",  # S_c: 'predicted' | 'correct' | 'labelled' (methods section 2)
    "top_k": 5,
    "gap_k": 100,  # images per end of each class's ranking (clamped to n_c // 2)
    "triage_k": 25,
    "stats": "train",  # spuriosity mean/std: 'train' (fitted once) | 'per-split' (official code)
    "annotator": "",
}


class ProjectError(ValueError):
    pass


@dataclass
class Project:
    folder: Path
    name: str
    model: str  # model folder, absolute (project.json stores it relative to the home's models/ when inside)
    settings: dict = field(default_factory=dict)

    # ---- files -------------------------------------------------------------------------
    @classmethod
    def open(cls, folder: str | Path) -> "Project":
        folder = Path(folder)
        file = folder / PROJECT_FILE
        if not file.is_file():
            raise ProjectError(f"{folder}: no {PROJECT_FILE}; not a spuraudit project.")
        data = json.loads(file.read_text())
        settings = {**DEFAULT_SETTINGS, **data.get("settings", {})}
        model = Path(data["model"])
        if not model.is_absolute():  # a model in the home's models/, stored by name so the home can move
            if ".." in model.parts:
                raise ProjectError(f"{file}: model '{model}' leaves the home's models/ folder; give an absolute path.")
            model = _models_dir_of(folder) / model
        return cls(folder=folder, name=data["name"], model=str(model), settings=settings)

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
            settings={**DEFAULT_SETTINGS, **(settings or {})},
        )
        table.save(folder)
        project.save()
        return project

    def save(self) -> None:
        data = {"name": self.name, "model": _stored_model_path(self.folder, self.model), "settings": self.settings}
        tmp = self.folder / (PROJECT_FILE + ".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, self.folder / PROJECT_FILE)

    def update_settings(self, **changes) -> None:
        self.settings.update(changes)
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
        stamp = ""
        if weights is not None:
            st = weights.stat()
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        cache = model_folder / ".weights-hash.json"
        if cache.is_file():
            data = json.loads(cache.read_text())
            if data.get("stamp") == stamp:
                return data["hash"]
        model, _ = load_model(model_folder)
        digest = weights_hash(model)
        try:
            cache.write_text(json.dumps({"stamp": stamp, "hash": digest}))
        except OSError:
            pass
        return digest

    def feature_store_path(self, model_folder: str | Path | None = None) -> Path:
        folder = Path(model_folder or self.model_folder)
        card = ModelCard.from_yaml((folder / "model.yaml").read_text())
        return self.folder / "features" / store_key(self._model_hash(folder), self.table, card.input_size)

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
    ) -> FeatureStore:
        folder = Path(model_folder or self.model_folder)
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
