"""Has the dataset changed since its features were extracted? An explicit check, never run on open.

Extraction records each image's size and mtime (`stamps.npy` in the store). `verify_dataset` stats
every image again and lists the ones now missing or changed; at ImageNet size that is a minute of
file-system calls, which is why opening a project does not do it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .features import STAMPS_FILE, file_stamps
from .project import Project

_SHOWN = 20  # paths listed per kind of change; the counts are always complete


@dataclass
class VerifyReport:
    store: Path | None
    checked: int = 0
    missing: list[str] = field(default_factory=list)  # up to _SHOWN paths
    changed: list[str] = field(default_factory=list)
    n_missing: int = 0
    n_changed: int = 0
    baseline_recorded: bool = False  # no stamps were kept (older store): today's state is the baseline
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.store is not None and self.n_missing == 0 and self.n_changed == 0

    def text(self) -> str:
        if self.store is None:
            return self.note
        lines = [f"checked {self.checked} images against the store {self.store.name}"]
        if self.baseline_recorded:
            lines.append("this store kept no record of the files; their current sizes and times are now the record")
        if self.ok:
            lines.append("nothing changed since the features were extracted")
        kinds = (("missing", self.n_missing, self.missing), ("changed", self.n_changed, self.changed))
        for kind, count, paths in kinds:
            if count:
                lines.append(f"{count} image(s) {kind}" + (" (first ones listed)" if count > len(paths) else "") + ":")
                lines.extend(f"  {p}" for p in paths)
        if not self.ok and self.store is not None:
            lines.append("the features of these images are stale: extract again after fixing or restoring them")
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {"store": str(self.store) if self.store else None, "checked": self.checked, "ok": self.ok,
                "n_missing": self.n_missing, "n_changed": self.n_changed, "missing": self.missing,
                "changed": self.changed, "baseline_recorded": self.baseline_recorded, "note": self.note}


def verify_dataset(project: Project, model_folder: str | Path | None = None, chunk: int = 65536) -> VerifyReport:
    """Compare every image file with the size and mtime recorded when its features were extracted."""
    store_path = project.feature_store_path(model_folder)
    if not (store_path / "meta.json").is_file():
        return VerifyReport(store=None, note=(
            "no features for this model and the current dataset.csv (not extracted yet, or dataset.csv "
            f"changed since); run `spuraudit extract --project {project.folder.name}`."))
    table = project.table
    report = VerifyReport(store=store_path, checked=len(table))
    stamps_path = store_path / STAMPS_FILE
    recorded = np.load(stamps_path, mmap_mode="r") if stamps_path.is_file() else None
    if recorded is not None and recorded.shape[0] != len(table):
        recorded = None
    fresh = [] if recorded is None else None
    column = table.frame["path"]
    for start in range(0, len(table), chunk):
        paths = column.iloc[start:start + chunk].astype(str).tolist()
        now = file_stamps(paths)
        if fresh is not None:
            fresh.append(now)
        gone = now[:, 0] < 0
        report.n_missing += int(gone.sum())
        report.missing += [paths[i] for i in np.flatnonzero(gone)[: _SHOWN - len(report.missing)]]
        if recorded is not None:
            differ = ~gone & np.any(now != np.asarray(recorded[start:start + len(paths)]), axis=1)
            report.n_changed += int(differ.sum())
            report.changed += [paths[i] for i in np.flatnonzero(differ)[: _SHOWN - len(report.changed)]]
    if fresh is not None:
        try:
            np.save(stamps_path, np.concatenate(fresh) if fresh else np.zeros((0, 2), np.int64))
            report.baseline_recorded = True
        except OSError:
            pass
    return report
