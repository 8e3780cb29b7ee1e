"""The `spuraudit` command line, run as a user would: its help, and the label and mitigation commands."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from spuraudit.cli import build_parser, main
from tests.test_demo_audit import CUE_CLASS
from tests.test_mitigate_fixtures import private_demo

REPO = Path(__file__).resolve().parents[1]


def _subcommands() -> list[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return sorted(action.choices)


def test_every_subcommand_documents_itself():
    out = subprocess.run([sys.executable, "-m", "spuraudit.cli", "--help"], capture_output=True, text=True,
                         cwd=REPO)
    assert out.returncode == 0, out.stderr
    for name in _subcommands():
        assert name in out.stdout
        with pytest.raises(SystemExit) as exit_info:
            main([name, "--help"])
        assert exit_info.value.code == 0, name


def _run_json(capsys, *argv) -> dict:
    capsys.readouterr()
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture
def labelled(demo_home, tmp_path):
    project, feature = private_demo(demo_home, tmp_path / "home")
    return project, feature


def test_votes_export_and_import_through_the_cli(labelled, demo_home, tmp_path, capsys):
    project, feature = labelled
    exported = tmp_path / "votes.csv"
    assert _run_json(capsys, "labels", "export", str(exported), "--project", str(project.folder))["rows"] == 1
    with exported.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["Input.class_index"] == str(CUE_CLASS) and rows[0]["Input.feature_index"] == str(feature)
    assert rows[0]["Answer.main"] == "background"

    other, _ = private_demo(demo_home, tmp_path / "other", label_cue=False)
    report = _run_json(capsys, "labels", "import", str(exported), "--project", str(other.folder))
    assert report["votes"] == 1
    assert other.spurious_features() == {CUE_CLASS: [feature]}
    # the same file again is refused with a message, and nothing is added
    assert main(["labels", "import", str(exported), "--project", str(other.folder)]) == 2
    assert "already imported" in capsys.readouterr().err
    assert len(other.labels().votes()) == 1

    spurious_map = tmp_path / "spurious.json"
    _run_json(capsys, "labels", "export", str(spurious_map), "--format", "spurious-map", "--project",
              str(other.folder))
    assert json.loads(spurious_map.read_text()) == {str(CUE_CLASS): [feature]}


@pytest.mark.slow
def test_mitigate_then_compare_through_the_cli(labelled, capsys):
    project, _ = labelled
    bad = main(["mitigate", "--method", "head_tuning", "-o", "no_such_option=1", "--project", str(project.folder)])
    assert bad == 2 and "no_such_option" in capsys.readouterr().err
    result = _run_json(capsys, "mitigate", "--method", "head_tuning", "-o", "seed=1", "--project",
                       str(project.folder))
    folder = Path(result["model_folder"])
    assert (folder / "model.yaml").is_file() and result["options"]["seed"] == 1
    table = _run_json(capsys, "compare", "--project", str(project.folder))
    by_method = {row["method"]: row for row in table["models"]}
    assert set(by_method) == {"parent", "head_tuning"}
    assert abs(by_method["head_tuning"]["pooled_gap"]) < abs(by_method["parent"]["pooled_gap"])


def _small_imagefolder(project, root: Path, per_class: int = 20) -> Path:
    """Test-split images of the demo copied into root/<class name>/ (real files, as a user would have)."""
    import shutil

    frame = project.table.frame
    test = frame[frame["split"] == "test"]
    for label, name in enumerate(project.table.class_names):  # sorted as ImageFolder sorts folders
        folder = root / name
        folder.mkdir(parents=True)
        for path in test[test["label"] == label]["path"].head(per_class):
            shutil.copy(path, folder / Path(path).name)
    return root


@pytest.mark.parametrize("route", ["state_dict", "torchscript"])
def test_create_extract_and_audit_your_own_folder(route, demo_home, tmp_path, monkeypatch, capsys):
    """`spuraudit create` takes the same route as the app: a state dict by architecture name, or a
    TorchScript file with its feature layer named; then extraction and the audit commands work on it."""
    import torch

    from spuraudit import paths
    from spuraudit.audit import Audit
    from spuraudit.project import Project

    demo = Project.open(paths.projects_dir(demo_home) / "demo")
    data = _small_imagefolder(demo, tmp_path / "digits")
    weights = tmp_path / "weights.pt"
    if route == "state_dict":
        torch.save(torch.load(demo.model_folder / "weights.pt", weights_only=True), weights)
        arch, extra = "spuraudit:digitnet", []
    else:
        from spuraudit.modelio.digitnet import DigitNet

        net = DigitNet(len(demo.table.class_names))
        net.load_state_dict(torch.load(demo.model_folder / "weights.pt", weights_only=True))
        torch.jit.script(net.eval()).save(str(weights))
        arch, extra = "torchscript", ["--feature-layer", "features", "--head", "fc"]
    monkeypatch.setenv("SPURAUDIT_HOME", str(tmp_path / "home"))
    created = _run_json(capsys, "create", "--name", "mine", "--data", str(data), "--arch", arch,
                        "--checkpoint", str(weights), "--input-size", "28", "--mean", "0.5,0.5,0.5",
                        "--std", "0.5,0.5,0.5", *extra)
    assert created["images"] == 20 * len(demo.table.class_names) and Path(created["model"]).is_dir()
    _run_json(capsys, "extract", "--project", "mine")
    summary = _run_json(capsys, "summary", "--project", "mine")
    # the same weights on the same files as the demo's own store: the same predictions
    audit_demo = Audit(demo, demo.feature_store())
    mine = Project.open(paths.projects_dir(tmp_path / "home") / "mine")
    names = {Path(p).name: i for i, p in enumerate(demo.table.frame["path"])}
    own = [names[Path(p).name] for p in mine.table.frame["path"]]
    expected = 100 * float((audit_demo.preds[own] == demo.table.frame["label"].to_numpy()[own]).mean())
    assert summary["accuracy"] == pytest.approx(expected, abs=1e-6)
    top = _run_json(capsys, "top-features", "--project", "mine", "--class", "0", "-k", "3",
                    "--image-set", "labelled")
    assert len(json.dumps(top)) > 10


def test_create_refuses_a_torchscript_file_named_as_a_state_dict(demo_home, tmp_path, monkeypatch, capsys):
    import torch

    from spuraudit import paths
    from spuraudit.modelio.digitnet import DigitNet
    from spuraudit.project import Project

    demo = Project.open(paths.projects_dir(demo_home) / "demo")
    data = _small_imagefolder(demo, tmp_path / "digits", per_class=3)
    weights = tmp_path / "scripted.pt"
    torch.jit.script(DigitNet(2).eval()).save(str(weights))
    monkeypatch.setenv("SPURAUDIT_HOME", str(tmp_path / "home"))
    assert main(["create", "--name", "x", "--data", str(data), "--arch", "spuraudit:digitnet",
                 "--checkpoint", str(weights)]) == 2
    err = capsys.readouterr().err
    assert "scripted.pt" in err or "TorchScript" in err
    assert not (tmp_path / "home" / "projects" / "x").exists()
