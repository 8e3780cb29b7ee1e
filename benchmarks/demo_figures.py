"""The built-in demo's headline figures, end to end: build time, the bias, what the audit finds, what the
fixes do. The tests assert thresholds on these; this script prints the values themselves.

    python benchmarks/demo_figures.py            # about 2 minutes on 2 CPU cores
    python benchmarks/demo_figures.py --json
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from spuraudit.analysis import auroc
from spuraudit.audit import Audit
from spuraudit.autolabel import run_autolabel
from spuraudit.autolabel.segmentation import SegmentationLabeler
from spuraudit.data.demo import CUE_COLUMN
from spuraudit.demo import build_demo
from spuraudit.mitigate import compare_models, run_mitigation
from spuraudit.modelio import load_model

CUE_CLASS = 0  # the square is planted on digits 0-4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(2)
    figures: dict = {"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
                     "threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        project = build_demo(base=Path(tmp))
        figures["demo_build_s"] = round(time.perf_counter() - t, 1)
        _, card = load_model(project.model_folder)
        figures["test_accuracy"] = card.metrics["test_accuracy"]
        figures["test_worst_group_accuracy"] = card.metrics["test_worst_group_accuracy"]

        store = project.feature_store()
        audit = Audit(project, store, spurious={})
        test = audit.split_mask("test")
        cue = audit.table.frame[CUE_COLUMN].to_numpy().astype(bool)
        top = [int(d) for d in audit.top_features(CUE_CLASS, k=5, split="test")["feature"]]
        separation = {d: auroc(np.asarray(audit.features[test, d]), cue[test]) for d in top}
        feature = max(separation, key=separation.get)
        figures["top5_cue_class"] = top
        figures["cue_feature"] = feature
        figures["cue_feature_auroc"] = round(float(separation[feature]), 4)

        project.labels().add_vote(CUE_CLASS, feature, "background", annotator="benchmark")
        audit = Audit(project, store, spurious={CUE_CLASS: [feature]})
        order, scores = audit.ranking(CUE_CLASS, "test")
        figures["ranking_auroc"] = round(float(auroc(scores, cue[order])), 4)
        gaps = audit.gaps("test", k=100)
        figures["pooled_gap"] = round(float(gaps.pooled_gap), 1)
        figures["pooled_gap_ci"] = [round(float(v), 1) for v in gaps.pooled_ci]

        for method in ("head_tuning", "masktune"):
            t = time.perf_counter()
            folder = run_mitigation(project, method, {"seed": 0})
            elapsed = round(time.perf_counter() - t, 1)
            summary = compare_models(project, [project.model_folder, folder], split="test", k=100,
                                     n_boot=200).summary
            before, after = summary.iloc[0], summary.iloc[1]
            figures[method] = {
                "seconds": elapsed,
                "accuracy": [round(float(before["avg_accuracy_plain"]), 1), round(float(after["avg_accuracy_plain"]), 1)],
                "worst_group": [round(float(before["worst_group_accuracy"]), 1),
                                round(float(after["worst_group_accuracy"]), 1)],
                "pooled_gap": [round(float(before["pooled_gap"]), 1), round(float(after["pooled_gap"]), 1)],
            }
        # Last, so that its proposals (machine votes, which count until a person overrides them) do not
        # change what the mitigations above were given.
        t = time.perf_counter()
        report = run_autolabel(project, SegmentationLabeler(), audit=Audit(project, store, spurious={}))
        figures["segmentation_labeler_s"] = round(time.perf_counter() - t, 1)
        figures["segmentation_proposals"] = {f"{p.pair[0]}:{p.pair[1]}": p.answer for p in report.proposals}
    print(json.dumps(figures, indent=None if args.json else 1))


if __name__ == "__main__":
    main()
