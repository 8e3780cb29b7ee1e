"""The built-in demo's headline figures, end to end: build time, the bias, what the audit finds, what the
fixes do. The tests assert thresholds on these; this script prints the values themselves.

    python benchmarks/demo_figures.py            # a few minutes on 2 CPU cores
    python benchmarks/demo_figures.py --build-only   # the build time alone
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
from spuraudit.collisions import collision_flags, collision_report, core_cropping
from spuraudit.data.demo import CUE_COLUMN, MULTI_COLUMN, DemoSpec
from spuraudit.demo import build_demo
from spuraudit.mitigate import compare_models, run_mitigation
from spuraudit.modelio import load_model

SPEC = DemoSpec()
DISCOVERY_K = 10  # features a reviewer looks at per class
SQUARE_AUROC = 0.85


def square_scores(audit: Audit) -> dict[int, float]:
    """AUROC (square vs none, on digit 0's own test images) of digit 0's top features."""
    rows = audit.class_rows(SPEC.cue_class, "test")
    cue = audit.table.frame[CUE_COLUMN].to_numpy().astype(bool)[rows]
    top = audit.top_features(SPEC.cue_class, k=DISCOVERY_K, split="test")
    return {int(d): float(auroc(np.asarray(audit.features[rows, int(d)]), cue)) for d in top["feature"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--build-only", action="store_true", help="time the build and stop")
    parser.add_argument("--home", type=Path, help="a home that already holds the demo: measure it, skip the build "
                                                  "(mitigated models are written into it)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    figures: dict = {"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
                     "threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        if args.home:
            from spuraudit import paths
            from spuraudit.project import Project

            project = Project.open(paths.projects_dir(args.home) / "demo")
        else:
            t, cpu = time.perf_counter(), time.process_time()
            project = build_demo(base=Path(tmp))
            figures["demo_build_s"] = round(time.perf_counter() - t, 1)
            figures["demo_build_cpu_s"] = round(time.process_time() - cpu, 1)
        _, card = load_model(project.model_folder)
        figures["test_accuracy"] = card.metrics["test_accuracy"]
        figures["test_worst_group_accuracy"] = card.metrics["test_worst_group_accuracy"]
        if args.build_only:
            print(json.dumps(figures, indent=None if args.json else 1))
            return

        store = project.feature_store()
        audit = Audit(project, store, spurious={})
        scores = square_scores(audit)
        feature = max(scores, key=scores.get)
        square = sorted(d for d, v in scores.items() if v >= SQUARE_AUROC)
        red_top = [int(d) for d in audit.top_features(SPEC.red_class, k=5, split="test")["feature"]]
        figures["cue_feature"], figures["cue_feature_auroc"] = feature, round(scores[feature], 4)
        figures["cue_feature_rank"] = list(scores).index(feature) + 1
        figures["square_features"] = square

        cue = audit.table.frame[CUE_COLUMN].to_numpy().astype(bool)
        audit = Audit(project, store, spurious={SPEC.cue_class: [feature]})
        order, ranks = audit.ranking(SPEC.cue_class, "test")
        figures["ranking_auroc"] = round(float(auroc(ranks, cue[order])), 4)
        gaps = audit.gaps("test", k=100)
        figures["cue_class_gap"] = round(float(gaps.pooled_gap), 1)
        figures["cue_class_gap_ci"] = [round(float(v), 1) for v in gaps.pooled_ci]

        # collisions: the square features of digit 0 labelled spurious; those that are top features of the
        # red digit 1 labelled spurious for digit 7 too (they fire on the red 1 inside its two-digit images)
        labels = {SPEC.cue_class: square, SPEC.confused_class: [d for d in square if d in red_top]}
        audit = Audit(project, store, spurious=labels)
        t = time.perf_counter()
        report = collision_report(audit, "test")
        flags = collision_flags(audit, report, "test")
        crop = core_cropping(audit, flags, report, "test")
        figures["collisions_s"] = round(time.perf_counter() - t, 1)
        figures["collisions"] = [f"{r['class']} #{r['feature']} -> {r['other_class']} (rank {r['rank_there']}, "
                                 f"{r['flow_n']}/{r['high_n']} pulled)" for r in report.collisions.to_dict("records")]
        figures["per_class_gaps"] = {r["class"]: round(float(r["gap"]), 1) for r in report.gaps.per_class.to_dict("records")}
        truth = set(np.flatnonzero(audit.table.frame[MULTI_COLUMN].to_numpy().astype(bool) & audit.split_mask("test")))
        flagged = set(flags.loc[flags["flagged"], "row"])
        figures["flags"] = {"flagged": len(flagged), "planted": len(truth),
                            "precision": round(len(flagged & truth) / max(1, len(flagged)), 2),
                            "recall": round(len(flagged & truth) / len(truth), 2)}
        figures["core_cropping"] = {f"{r['class']} {r['images']} (n={r['n']})":
                                    [round(r["acc_before"], 1), round(r["acc_after"], 1)] for r in crop.to_dict("records")}

        project.labels().add_vote(SPEC.cue_class, feature, "background", annotator="benchmark")
        audit = Audit(project, store, spurious={SPEC.cue_class: [feature]})
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
        spurious = {}
        for proposal in report.proposals:
            spurious.setdefault(proposal.pair[0], 0)
            spurious[proposal.pair[0]] += int(proposal.is_spurious)
        figures["segmentation_spurious_of_top5"] = spurious  # class -> how many of its top 5 were proposed spurious
    print(json.dumps(figures, indent=None if args.json else 1))


if __name__ == "__main__":
    main()
