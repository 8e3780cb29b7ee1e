"""The published CIFAR-10 ResNet-20 and ResNet-56 in one project, on real CIFAR-10 test JPEGs.

Uses the shared data folder beside the checkout (or where SPURAUDIT_SHARED_DATA points) and skips without it.
A per-class subset keeps it to a minute on a CPU; the full run is `benchmarks/cifar_pair.py`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from tests.conftest import SHARED_DATA

SHARED = Path(os.environ.get("SPURAUDIT_SHARED_DATA") or SHARED_DATA)
CIFAR_TEST = SHARED / "cifar10" / "test"
RESNETS = SHARED / "cifar10-resnet"
MEAN, STD = "0.485,0.456,0.406", "0.229,0.224,0.225"

pytestmark = pytest.mark.skipif(not (CIFAR_TEST.is_dir() and RESNETS.is_dir()),
                                reason="shared CIFAR-10 data and checkpoints not present")


def test_resnet20_and_resnet56_in_one_project(tmp_path):
    from spuraudit.create import create_project
    from spuraudit.multimodel import add_checkpoint, models_report

    data = tmp_path / "cifar"
    for folder in sorted(CIFAR_TEST.iterdir()):
        (data / folder.name).mkdir(parents=True)
        for image in sorted(folder.iterdir())[:40]:
            shutil.copyfile(image, data / folder.name / image.name)
    home = tmp_path / "home"
    project = create_project("pair", str(data), "", "spuraudit:cifar_resnet20", str(RESNETS / "resnet20-12fca82f.th"),
                             32, MEAN, STD, False, base=home)
    second = add_checkpoint(project, RESNETS / "resnet56-4bfd9763.th", "spuraudit:cifar_resnet56", name="r56",
                            size=32, mean=MEAN, std=STD, base=home)
    assert second.parent == home / "models" and second.name == "r56"
    report = models_report(project, k=10, proxy=True)
    assert report.missing == [project.model_folder.name, "r56"] or len(report.missing) == 2  # not extracted yet
    for folder in project.model_folders():
        project.extract(model_folder=folder, num_workers=0, batch_size=200)
    report = models_report(project, k=10, proxy=True)
    assert report.missing == [] and len(report.models) == 2
    assert report.proxy_classes == list(range(10))
    labels = project.table.labels
    accuracy = [100 * float((np.asarray(project.feature_store(f).preds) == labels).mean())
                for f in project.model_folders()]
    assert min(accuracy) >= 70, accuracy  # published models on the JPEG copy (about 81 % and 84 % in full)
    gaps = [report.per_class[report.per_class["model"] == m]["gap"].to_numpy() for m in report.models]
    assert report.pearson.shape == (2, 2) and report.pearson.iat[0, 1] == pytest.approx(stats.pearsonr(*gaps)[0])
    assert report.spearman.iat[0, 1] == pytest.approx(stats.spearmanr(*gaps)[0])
    frame = report.per_class
    assert ((frame["acc_low"] >= 0) & (frame["acc_high"] <= 100)).all() and (frame["k"] == 10).all()
