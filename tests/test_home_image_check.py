"""The home page's "Check the images" button, under Streamlit's AppTest, on a small real project."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import torch
from PIL import Image
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def _small_project(home: Path):
    from spuraudit import paths
    from spuraudit.data.table import ImageTable
    from spuraudit.modelio import ModelCard, build_audit_model, save_model
    from spuraudit.project import Project

    images = home / "images"
    images.mkdir(parents=True)
    files = []
    for i in range(6):
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(images / f"img{i}.png")
        files.append(str(images / f"img{i}.png"))
    folder = paths.projects_dir(home) / "small"
    folder.mkdir(parents=True)
    ImageTable(class_names=["a", "b"], frame=pd.DataFrame(
        {"path": files, "label": [0, 1] * 3, "split": ["test"] * 6})).save(folder)
    card = ModelCard(name="tiny", architecture="spuraudit:digitnet", class_names=["a", "b"], input_size=[8, 8])
    torch.manual_seed(0)
    model_folder = paths.models_dir(home) / "tiny"
    save_model(build_audit_model(card), card, model_folder)
    Project(folder=folder, name="small", model=str(model_folder)).save()
    project = Project.open(folder)
    project.extract(num_workers=0, device="cpu")
    return project, files


def _home(session: dict | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["project"] = "small"
    for key, value in (session or {}).items():
        at.session_state[key] = value
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_check_the_images_names_a_deleted_image(home):
    _, files = _small_project(home)
    at = _home()
    at.button(key="check_images").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("All 6 images are as they were" in s.value for s in at.success) and not at.warning

    os.remove(files[2])
    at = _home()
    at.button(key="check_images").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("6 images, 1 are missing and 0 changed" in w.value for w in at.warning)
    assert any("**Missing**" in m.value and "img2" in m.value for m in at.markdown)


def test_only_admins_see_the_check(home, tmp_path, monkeypatch):
    from spuraudit.auth import USERS_ENV, add_user

    _small_project(home)
    users = tmp_path / "users.tsv"
    add_user(users, "ann", "annotator", "pw-ann")
    add_user(users, "ad", "admin", "pw-ad")
    monkeypatch.setenv(USERS_ENV, str(users))

    def signed_in(name: str, password: str) -> AppTest:
        at = _home()
        at.text_input(key="signin_name").set_value(name)
        at.text_input(key="signin_password").set_value(password)
        at.button[0].click().run()
        assert not at.exception, [e.value for e in at.exception]
        return at

    annotator = signed_in("ann", "pw-ann")
    assert any("Project: small" in h.value for h in annotator.header)  # the project is shown, the check is not
    assert not [b for b in annotator.button if b.key == "check_images"]
    assert [b for b in signed_in("ad", "pw-ad").button if b.key == "check_images"]
