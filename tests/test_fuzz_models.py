"""Bad inputs to a project's list of models: hand-edited project files and models of other classes."""

from __future__ import annotations

import json

import pytest

from spuraudit.modelio import ModelCard, build_audit_model, save_model
from spuraudit.project import Project, ProjectError

from .fuzzcases import bad_input


def _project(tmp_path) -> Project:
    from spuraudit.data.table import ImageTable
    import pandas as pd
    from PIL import Image

    images = tmp_path / "data"
    images.mkdir()
    rows = []
    for i in range(4):
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(images / f"{i}.png")
        rows.append({"path": str(images / f"{i}.png"), "label": i % 2, "split": "all"})
    table = ImageTable(class_names=["cat", "dog"], frame=pd.DataFrame(rows))
    card = ModelCard(name="net", architecture="spuraudit:digitnet", class_names=["cat", "dog"], input_size=[8, 8])
    model = save_model(build_audit_model(card), card, tmp_path / "models" / "net")
    return Project.create("p", table, model, base=tmp_path)


@bad_input("names", "Adding a model to a project whose classes are the same names in another order, or other names.",
           "Refused with an error naming the model, both class counts and the first position where the lists "
           "differ; project.json is left as it was.")
def test_model_with_other_classes_is_refused(tmp_path):
    project = _project(tmp_path)
    before = (project.folder / "project.json").read_text()
    for names in (["dog", "cat"], ["cat", "dog", "bird"]):
        card = ModelCard(name=f"other{len(names)}", architecture="spuraudit:digitnet", class_names=names,
                         input_size=[8, 8])
        folder = save_model(build_audit_model(card), card, tmp_path / "models" / card.name)
        with pytest.raises(ProjectError, match=rf"{card.name} has {len(names)} classes .* differ first at position"):
            project.add_model(folder)
    assert (project.folder / "project.json").read_text() == before


@bad_input("names", "A hand-edited project.json whose `models` is not a list of folders, or leaves models/ with `..`.",
           "Opening the project fails with an error naming project.json and the key; the file is not changed.")
@pytest.mark.parametrize("value", ["net", [1, 2], ["../../etc"], [""]])
def test_bad_models_key_in_project_file(tmp_path, value):
    project = _project(tmp_path)
    file = project.folder / "project.json"
    data = json.loads(file.read_text())
    data["models"] = value
    file.write_text(json.dumps(data))
    with pytest.raises(ProjectError, match="project.json"):
        Project.open(project.folder)
    assert json.loads(file.read_text())["models"] == value
