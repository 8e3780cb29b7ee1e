"""Plug-ins from one file: an auto-labeler, a mitigation and an architecture, each defined and registered
here, show up in the command line, the pages and the registries without any other file changing."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import pytest
import torch
from streamlit.testing.v1 import AppTest
from torch import nn

from spuraudit.autolabel import LABELER_CLASSES, make_labeler, register_labeler
from spuraudit.autolabel.base import AutoLabeler, Option, PairImages, Proposal
from spuraudit.mitigate import METHODS, MitigationResult, get_method, register_method
from spuraudit.mitigate.base import Mitigation
from spuraudit.mitigate.base import Option as MethodOption
from spuraudit.modelio.card import ModelCard, build_audit_model
from spuraudit.modelio.registry import _REGISTRY, Architecture, Split, architecture_names, get_architecture, register

ROOT = Path(__file__).resolve().parents[1]


# ---- the plug-ins, each complete in a few lines ----------------------------------------------------
class EchoLabeler(AutoLabeler):
    """Proposes the same answer for every pair, with the mean activation as its evidence."""

    name = "echo"
    title = "Echo (always the same answer)"
    label = "Echo"
    description = "Proposes one answer for every pair; for trying the review workflow."
    declared_options = (
        Option("verdict", "background", "The answer proposed for every pair.",
               choices=("background", "main_object"), label="Verdict"),
        Option("certainty", 2, "The confidence of every proposal.", minimum=1, maximum=5, label="Certainty"),
    )

    def __init__(self, verdict: str = "background", certainty: int = 2, **common):
        super().__init__(**common)
        self.verdict, self.certainty = verdict, certainty

    def options(self) -> dict[str, Any]:
        return {**super().options(), "verdict": self.verdict, "certainty": self.certainty}

    def judge(self, audit, pair: PairImages) -> Proposal:
        return Proposal(pair.class_index, pair.feature, self.verdict, self.certainty, "echo",
                        {**pair.base_evidence(), "labeler": self.name,
                         "mean_activation": float(np.mean(pair.activation))})

    @staticmethod
    def evidence_table(evidence: Mapping[str, Any]):
        return pd.DataFrame({"echo image": evidence["images"], "echo activation": evidence["activation"]})


class ScaleHead(Mitigation):
    """Multiplies the head's weights by a factor (a toy head-only method)."""

    name = "scale_head"
    label = "Scale the head"
    summary = "Multiplies the last layer by a factor."
    head_only = True
    options = (MethodOption("factor", 0.5, "What the head's weights are multiplied by.", minimum=0.0),)

    def run(self, project, parent_folder, options, progress) -> MitigationResult:
        from spuraudit.modelio import load_model

        model, _ = load_model(parent_folder)
        with torch.no_grad():
            model.head.weight.mul_(options["factor"])
        return MitigationResult(model=model, head_only=True, options=dict(options))


def _tiny_net(num_classes: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, num_classes))


TINY = Architecture(name="plugin:tiny", build=_tiny_net, default_input_size=(16, 16),
                    split=lambda net: Split(trunk=net[:2], head=net[4]), description="four channels, one layer")


@pytest.fixture
def plugins():
    """Register the three plug-ins (as their one file would at import) and take them out afterwards."""
    register_labeler(EchoLabeler)
    register_method(ScaleHead)
    register(TINY)
    yield
    LABELER_CLASSES.pop("echo", None)
    METHODS.pop("scale_head", None)
    _REGISTRY.pop("plugin:tiny", None)


# ---- auto-labeler ---------------------------------------------------------------------------------
def test_a_labeler_plugin_gets_its_command_line_flags(plugins):
    from spuraudit.autolabel.cli import autolabel_options, configure_autolabel_parser

    parser = argparse.ArgumentParser()
    parser.add_argument("--project")
    parser.add_argument("--split")
    configure_autolabel_parser(parser)
    assert "--verdict" in parser.format_help() and "[echo] The answer proposed" in parser.format_help()
    args = parser.parse_args(["--project", "p", "--labeler", "echo", "--verdict", "main_object", "--certainty", "4",
                              "--images-per-pair", "3"])
    options = autolabel_options(args)
    assert options == {"verdict": "main_object", "certainty": "4", "images_per_pair": "3"}
    labeler = make_labeler("echo", **options)  # flags arrive as text and are converted by the declarations
    assert (labeler.verdict, labeler.certainty, labeler.images_per_pair) == ("main_object", 4, 3)
    with pytest.raises(ValueError, match="certainty"):
        make_labeler("echo", certainty=9)
    with pytest.raises(SystemExit):
        parser.parse_args(["--labeler", "echo", "--verdict", "maybe"])


def test_a_labeler_plugin_gets_its_review_tab_job_and_evidence_table(plugins, demo_copy, monkeypatch):
    from spuraudit.autolabel import run_autolabel_job
    from spuraudit.jobs import LocalContext
    from spuraudit.ui import jobs as ui_jobs

    monkeypatch.setenv("SPURAUDIT_HOME", str(demo_copy.folder.parent.parent))
    submitted = []
    monkeypatch.setattr(ui_jobs, "submit", lambda kind, params, title: submitted.append((kind, params)) or "job-1")
    at = AppTest.from_file(str(ROOT / "pages" / "review.py"), default_timeout=180)
    at.query_params["project"] = "demo"
    at.session_state["review_attacks"] = False
    at.session_state["reviewer"] = "ana"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert "Echo" in [t.label for t in at.tabs]
    at.selectbox(key="echo_verdict").set_value("main_object")
    at.button(key="run_echo").click().run()
    [(kind, params)] = submitted
    assert kind == "autolabel.run" and params["labeler"] == "tests.test_plugins:EchoLabeler"
    assert params["options"]["verdict"] == "main_object" and params["options"]["certainty"] == 2

    # The job runs it from that path, as a worker process would, and the page shows its evidence table.
    result = run_autolabel_job(LocalContext(demo_copy.folder / "job"), str(demo_copy.folder), params["labeler"],
                               params["options"], pairs=[[0, 5]])
    assert result["n_proposals"] == 1 and result["proposals"][0]["answer"] == "main_object"
    at = AppTest.from_file(str(ROOT / "pages" / "review.py"), default_timeout=180)
    at.query_params["project"] = "demo"
    at.session_state["review_attacks"] = False
    at.session_state["reviewer"] = "ana"
    at.session_state["review_pair"] = (0, 5)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("echo image" in list(frame.value.columns) for frame in at.dataframe)


# ---- mitigation -----------------------------------------------------------------------------------
def test_a_mitigation_plugin_is_listed_and_its_options_checked(plugins, capsys):
    from spuraudit.cli import main

    method = get_method("scale_head")
    assert method.resolve_options({"factor": "0.25"}) == {"factor": 0.25}
    with pytest.raises(ValueError, match="≥ 0.0"):
        method.resolve_options({"factor": -1})
    main(["mitigate", "--list"])
    assert "scale_head" in capsys.readouterr().out


# ---- architecture ---------------------------------------------------------------------------------
def test_an_architecture_plugin_builds_audit_models(plugins):
    assert "plugin:tiny" in architecture_names(include_timm=False)
    assert get_architecture("plugin:tiny") is TINY
    card = ModelCard("tiny", "plugin:tiny", ["a", "b", "c"], input_size=[16, 16])
    model = build_audit_model(ModelCard.from_yaml(card.to_yaml()))
    logits = model(torch.rand(2, 3, 16, 16))
    assert logits.shape == (2, 3) and model.num_features == 4
