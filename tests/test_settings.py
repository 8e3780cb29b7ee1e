"""Typed, versioned project settings and model cards; typed option values."""

from __future__ import annotations

import json

import pytest

from spuraudit.modelio.card import CARD_SCHEMA_VERSION, ModelCard
from spuraudit.modelio.checkpoint import CheckpointError
from spuraudit.options import Option, OptionError
from spuraudit.project import PROJECT_FILE, Project, ProjectError
from spuraudit.settings import PROJECT_SCHEMA_VERSION, ProjectSettings
from spuraudit.typed import coerce
from tests.fuzzcases import bad_input


def _project_file(folder, data) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / PROJECT_FILE).write_text(json.dumps(data))


def test_an_old_project_file_is_read_with_defaults_and_saved_with_the_version(tmp_path):
    folder = tmp_path / "p"
    _project_file(folder, {"name": "p", "model": "/m", "settings": {"gap_k": 40, "annotator": "ann"}})
    project = Project.open(folder)
    assert project.settings.gap_k == 40 and project.settings.get("gap_k", 100) == 40
    assert project.settings["top_k"] == ProjectSettings().top_k and project.settings.stats == "train"
    project.update_settings(stats="per-split")
    saved = json.loads((folder / PROJECT_FILE).read_text())
    assert saved["schema_version"] == PROJECT_SCHEMA_VERSION
    assert saved["settings"] == {**ProjectSettings().to_dict(), "gap_k": 40, "annotator": "ann", "stats": "per-split"}
    assert Project.open(folder).settings == project.settings


@bad_input("projects", "a project.json with a misspelt setting, a setting of the wrong type or out of range, "
                       "an unknown top-level key or a newer schema version",
           "opening the project fails with the file and the key named; the file is left as it was")
@pytest.mark.parametrize("data, message", [
    ({"settings": {"gapk": 3}}, "unknown key 'settings.gapk'"),
    ({"settings": {"top_k": "many"}}, "'settings.top_k' has a wrong value"),
    ({"settings": {"stats": "sometimes"}}, "'stats' must be one of"),
    ({"settings": {"gap_k": 0}}, "'gap_k' must be at least 1"),
    ({"colour": "red"}, "unknown key 'colour'"),
    ({"schema_version": 99}, "newer than this spuraudit"),
])
def test_bad_project_files_are_named_errors(tmp_path, data, message):
    folder = tmp_path / "p"
    _project_file(folder, {"name": "p", "model": "/m", **data})
    before = (folder / PROJECT_FILE).read_bytes()
    with pytest.raises(ProjectError, match=message) as err:
        Project.open(folder)
    assert str(folder / PROJECT_FILE) in str(err.value)
    assert (folder / PROJECT_FILE).read_bytes() == before


def test_update_settings_rejects_unknown_keys_and_keeps_the_file(tmp_path):
    folder = tmp_path / "p"
    _project_file(folder, {"name": "p", "model": "/m"})
    project = Project.open(folder)
    with pytest.raises(ProjectError, match="unknown key 'settings.colour'"):
        project.update_settings(colour="red")
    project.update_settings(top_k="7")  # a form's text is converted
    assert Project.open(folder).settings.top_k == 7


def test_card_round_trip_and_upgrade_of_an_unversioned_card():
    card = ModelCard("m", "spuraudit:digitnet", ["a", "b"], metrics={"test_accuracy": 91.5})
    text = card.to_yaml()
    assert text.startswith(f"schema_version: {CARD_SCHEMA_VERSION}\n")
    assert ModelCard.from_yaml(text) == card
    old = ModelCard.from_yaml("name: m\narchitecture: spuraudit:digitnet\nclass_names: [a, b]\ninput_size: [28, 28]\n")
    assert old.schema_version == CARD_SCHEMA_VERSION and old.input_size == [28, 28]


@bad_input("checkpoints", "a model.yaml with an unknown key, a list where text belongs, or a newer schema version",
           "loading the model fails with the card's path and the key named")
@pytest.mark.parametrize("extra, message", [
    ("colour: red\n", "unknown key 'colour'"),
    ("source: [a, b]\n", "'source' has a wrong value"),
    ("input_size: 28\n", "'input_size' has a wrong value"),
    (f"schema_version: {CARD_SCHEMA_VERSION + 1}\n", "newer than this spuraudit"),
])
def test_bad_cards_are_named_errors(extra, message):
    text = "name: m\narchitecture: spuraudit:digitnet\nclass_names: [a, b]\n" + extra
    with pytest.raises(CheckpointError, match=message) as err:
        ModelCard.from_yaml(text, "models/m/model.yaml")
    assert "models/m/model.yaml" in str(err.value)


def test_coerce_and_option_check():
    assert coerce(" 3 ", int) == 3 and coerce("1e3", int) == 1000 and coerce("0.5", float) == 0.5
    assert coerce("yes", bool) is True and coerce(0, bool) is False
    for value, kind in ((1.5, int), (True, int), ("maybe", bool), ([1], str)):
        with pytest.raises(ValueError):
            coerce(value, kind)
    threshold = Option("threshold", None, "h", kind=float)
    assert threshold.check(None) is None and threshold.check("1.25") == 1.25
    with pytest.raises(OptionError, match="option 'k' must be ≥ 1"):
        Option("k", 5, "h", minimum=1).check("0")
