"""Low-spuriosity head tuning (Spuriosity Rankings; docs/methods.md §7.1).

The backbone stays frozen; the head, started from the model's own, is trained with SGD on the
pooled features of the k lowest-spuriosity training images of each ranked class — the images where
the class's spurious cues are weakest, so the head must lean on the rest — and, by default, on the
collisions: images of OTHER classes on which a ranked class's cue fires (`collisions`). Those are the
images the cue misleads most (it calls them the ranked class), and without them the head never sees
the cue paired with another label. Training stops as soon as every monitored gap on the validation
split is small (per class and per collision, as absolute values); the card reports test figures, so
the split that stops training is never the split that reports.

Classes without spurious labels: by default a random sample of their training images joins the
tuning set. Freezing their head rows instead does not keep their predictions: in a softmax the
prediction depends on every row, and a set made of one class's images only teaches "say that class
more" (on two classes, freezing class 1's row and tuning class 0's on class-0 images moves every
class-1 image towards class 0).

A run whose chosen head did not help (no epoch beat the starting head without a class or the worst
group losing accuracy, or a collapsed head) raises a MitigationError saying so; no model is written.
With group columns the chosen head's val worst group must also rise beyond sampling noise
(`required_gain_se`, as MaskTune's check).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..modelio import load_model
from ..project import Project
from .base import SEED_OPTION, Mitigation, MitigationError, MitigationResult, Option, Progress, seed_everything, stage
from .collisions import held_out_collision_sets, training_collisions
from .data import (
    feature_rows,
    gap_sets,
    parent_spuriosity,
    parent_store,
    ranked_classes,
    require_split,
    spurious_labels,
)
from ..analysis.gaps import high_low_indices
from .guard import guard_failure, required_gain
from .head_training import GAP_STATISTICS, GapMonitor, curve_for_card, feature_scaled_lr, fit_head

OTHER_CLASSES = ("balanced_sample", "freeze_rows", "none")

TRAINING_OPTIONS = (
    Option("lr", None, "SGD learning rate. Empty (default): 1 / the tuning set's mean squared feature norm, a step "
                       "that moves the logits by about the same amount whatever the backbone's feature scale: about "
                       "the paper's 1e-3 for ResNet-50 features on ImageNet (squared norms near 1,000), 0.026 for the "
                       "demo's CNN (near 38), where 1e-3 stops long before the head has moved.", minimum=0.0,
           kind=float),
    Option("momentum", 0.9, "SGD momentum (paper: 0.9).", minimum=0.0, maximum=1.0),
    Option("batch_size", 128, "Images per SGD step (paper: 128).", minimum=1),
    Option("max_epochs", 20, "Most epochs over the tuning set (paper: 20); fewer when the gap stops it.",
           minimum=1),
    Option("min_steps", 2000, "Budget floor in SGD steps: a small tuning set gets more epochs, up to this many steps "
                             "(the paper's 20 epochs over ~100 images × 1000 ImageNet classes are ~15,000 steps; 20 "
                             "epochs over a few hundred images are a handful, too few to move the head at lr 1e-3). "
                             "The held-out gap still stops training early.", minimum=0),
    Option("weight_decay", 0.0, "L2 penalty on the head.", minimum=0.0),
    Option("gap_threshold", 5.0, "Stop at the first epoch whose stopping gap on the validation split is below "
                                 "this many points (5 is the usual choice). When no epoch gets there, the epoch "
                                 "with the smallest one is kept.", minimum=0.0),
    Option("gap_statistic", "max", "Stopping gap: the largest ('max') or the mean ('mean') ABSOLUTE gap over the "
                                   "ranked classes and collisions. Never a signed pool, in which +90 and −90 cancel.",
           choices=GAP_STATISTICS),
    Option("max_accuracy_drop", 5.0, "An epoch can be chosen only if its validation accuracy is at most this many "
                                     "points below the original head's. 100 turns this check off.", minimum=0.0),
    Option("max_class_drop", 10.0, "… and if no class's validation accuracy fell more than this many points, and "
                                   "the worst group (real groups, or the High/Low sets) did not fall: a head that "
                                   "predicts one class everywhere has zero gaps too, and is never chosen.",
           minimum=0.0),
    Option("gap_k", 100, "Images per end of each class's validation ranking for the stopping gap (clamped to "
                         "half the class).", minimum=1),
    Option("required_gain_se", 2.0,
           "With group columns, the chosen head's val worst group must also rise by this many standard errors of "
           "the smallest val group's accuracy (as MaskTune's check): a smaller rise is what sampling noise alone "
           "gives (on the cue benchmark a head whose val worst group did not rise lost 0.8 points on test; with "
           "the margin, 12 of 96 runs were refused and none ended below the original model: benchmarks/README.md). "
           "0 = no such margin.", minimum=0.0),
)


class _FrozenBackboneTuning(Mitigation):
    """Shared by head tuning and error tuning: pick training rows, fit the head, early-stop on val."""

    head_only = True
    needs_labels = True

    def k_values(self, options: dict) -> list[int]:
        """The per-class budgets to try, the first being the method's own (the others are tried and kept only
        when the held-out worst group is higher)."""
        return [options.get("k")]

    def select(self, project: Project, store, scores: np.ndarray, train: np.ndarray, options: dict,
               rng: np.random.Generator) -> dict[int, np.ndarray]:
        """class -> dataset indices of its training images to tune on (the method's own choice)."""
        raise NotImplementedError

    def run(self, project: Project, parent_folder: Path, options: dict, progress: Progress) -> MitigationResult:
        gen = seed_everything(options["seed"])
        rng = np.random.default_rng(options["seed"])
        table = project.table
        labels = table.labels
        train = require_split(project, "train", "supplies the images to tune on")
        val = require_split(project, "val", "stops the training (the test split only reports)")
        store = parent_store(project, parent_folder, stage(progress, 0.0, 0.1))
        spurious = spurious_labels(project)
        if self.needs_labels and not spurious:
            raise MitigationError(
                f"{self.label} needs features labelled spurious: none is labelled in project '{project.name}' yet. "
                "Label them on the Features page (or import votes), then run it again."
            )
        scores = parent_spuriosity(project, store, spurious) if spurious else np.full(len(table), np.nan)

        def selection(k: int):
            """(class -> training images to tune on, collisions) with k images per class and per collision."""
            picked = {c: idx for c, idx in self.select(project, store, scores, train, {**options, "k": k},
                                                       rng).items() if len(idx)}
            hits: dict[int, dict[int, np.ndarray]] = {}
            if spurious and options.get("collisions", False):
                hits = training_collisions(store.features, labels, np.asarray(store.preds), train, spurious, k,
                                           options["gap_threshold"])
                for by_class in hits.values():
                    for o, idx in by_class.items():
                        picked[o] = np.union1d(picked.get(o, np.empty(0, np.int64)), idx)
            return picked, hits

        k_values = self.k_values(options)
        selections = {k: selection(k) for k in k_values}
        chosen, collided = selections[k_values[0]]
        if not chosen:
            raise MitigationError(f"{self.label}: no training image was selected; nothing to tune on.")
        names = table.class_names
        model, _ = load_model(parent_folder)
        monitor, val_sets = None, {}
        if spurious:
            high, low = gap_sets(scores, labels, val, options["gap_k"])
            if len(high):
                val_idx = np.flatnonzero(val)
                position = {int(i): p for p, i in enumerate(val_idx)}

                def at(indices):
                    return np.asarray([position[int(i)] for i in indices], dtype=np.int64)

                ends = high_low_indices(np.where(val, scores, np.nan), labels, k=options["gap_k"])
                sets = {names[c]: (at(ends.high[c]), at(ends.low[c])) for c in ends.high}
                pairs = {c: sorted(by_class) for c, by_class in collided.items()}
                for (c, o), (hi, lo) in held_out_collision_sets(store.features, labels, val, train, spurious, pairs,
                                                                 options["gap_k"]).items():
                    sets[f"{names[c]}→{names[o]}"] = (at(hi), at(lo))
                groups = None
                if table.group_columns:
                    groups = table.group_ids()[0][val_idx]
                monitor = GapMonitor(
                    features=feature_rows(store, val_idx),
                    labels=torch.as_tensor(labels[val_idx]),
                    high=torch.as_tensor(at(high)),
                    low=torch.as_tensor(at(low)),
                    sets=sets, group_ids=groups, statistic=options["gap_statistic"],
                )
                val_sets = {"val_high": len(high), "val_low": len(low), "stop_sets": sorted(sets)}

        # The tuning sets to try: for each k, the chosen images alone and with each class's typical images.
        candidates = []
        for k, (picked, hits) in selections.items():
            if not picked:
                continue
            tag = f"k={k}, " if len(selections) > 1 else ""
            sets = [(f"{tag}without typical images", picked, hits, k)]
            if options.get("typical", 0):
                with_typical = {}
                for c in sorted(picked):
                    # The class's ordinary images, cue included: see the 'typical' option.
                    pool = np.setdiff1d(np.flatnonzero(train & (labels == c)), picked[c])
                    take = min(options["typical"], len(pool))
                    with_typical[c] = np.union1d(picked[c], rng.choice(pool, size=take, replace=False)) if take \
                        else picked[c]
                typical = (f"{tag}with typical images", with_typical, hits, k)
                sets = [typical] if options.get("typical_choice") == "always" else sets + [typical]
            candidates += sets
        tried = []
        for number, (what, base, hits, k) in enumerate(candidates):
            rows, frozen = dict(base), []
            others = [c for c in range(table.num_classes) if c not in base]
            per_class = int(round(np.mean([len(v) for v in base.values()])))
            if options["other_classes"] == "balanced_sample":
                for c in others:
                    pool = np.flatnonzero(train & (labels == c))
                    if len(pool):
                        rows[c] = np.sort(rng.choice(pool, size=min(per_class, len(pool)), replace=False))
            elif options["other_classes"] == "freeze_rows":
                frozen = others
            indices = np.concatenate([rows[c] for c in sorted(rows)])
            x = feature_rows(store, indices)
            y = torch.as_tensor(labels[indices])
            lr = options["lr"] if options["lr"] is not None else feature_scaled_lr(x)
            span = (0.9 / len(candidates))
            fit = fit_head(
                model.head, x, y,
                lr=lr, momentum=options["momentum"], batch_size=options["batch_size"],
                max_epochs=options["max_epochs"], min_steps=options["min_steps"],
                weight_decay=options["weight_decay"],
                generator=gen, monitor=monitor, gap_threshold=options["gap_threshold"],
                max_accuracy_drop=options["max_accuracy_drop"], max_class_drop=options["max_class_drop"],
                frozen_rows=frozen,
                progress=stage(progress, 0.1 + number * span, 0.1 + (number + 1) * span),
            )
            tried.append({"what": what, "rows": rows, "frozen": frozen, "lr": lr, "fit": fit, "images": len(indices),
                          "collisions": hits, "others": others, "k": k})
        fit = tried[0]["fit"]
        margin, smallest = 0.0, 0
        if monitor is not None:
            helped = [t for t in tried if t["fit"].helped]
            start_worst = fit.history[0]["worst_group"]
            margin, smallest = required_gain(start_worst, monitor.group_ids, options.get("required_gain_se", 0.0))
            # The guard's own rule: only the margin can refuse here, every other check already passed per epoch.
            short = [t for t in helped if guard_failure(t["fit"].history[t["fit"].chosen_epoch], fit.history[0],
                                                        options["max_accuracy_drop"], options["max_class_drop"],
                                                        margin, smallest)]
            if helped and len(short) == len(helped):  # every head closed the gap, none beat the noise
                rise = max(_chosen_worst(t["fit"]) for t in helped) - start_worst
                raise MitigationError(
                    f"{self.label} did not help: the held-out (val) worst group rose {rise:.1f} points at most "
                    f"({start_worst:.1f} % before), less than the {margin:.1f} that sampling noise alone gives on a "
                    f"group of {smallest} images. No model was written. Set 'required_gain_se' to 0 to accept any "
                    "rise, or try DFR."
                )
            helped = [t for t in helped if t not in short]
            if not helped:
                first, last = fit.history[0], fit.history[-1]
                raise MitigationError(
                    f"{self.label} {fit.verdict}. No model was written. Held-out (val) figures of the starting head: "
                    f"stopping gap {first['stop_gap']:.1f} points, worst group {first['worst_group']:.1f} %; after "
                    f"{len(fit.history) - 1} epochs: gap {last['stop_gap']:.1f}, worst group "
                    f"{last['worst_group']:.1f} %"
                    + (f" ({len(tried)} tuning sets tried: {', '.join(t['what'] for t in tried)})" if len(tried) > 1
                       else "")
                    + ". Check the features labelled spurious (a cue missing from the labels stays in the head), or "
                    "try DFR when the dataset has group columns."
                )

            best = max(helped, key=lambda t: _chosen_worst(t["fit"]))  # ties: the first, the paper's set
        else:  # nothing held out to choose by: the method's own k, with the typical images when asked for
            best = [t for t in tried if t["k"] == k_values[0]][-1]
        fit, rows, frozen, lr, indices_count = best["fit"], best["rows"], best["frozen"], best["lr"], best["images"]
        collided, others = best["collisions"], best["others"]
        with torch.no_grad():
            model.head.weight.copy_(fit.head.weight)
            if model.head.bias is not None:
                model.head.bias.copy_(fit.head.bias)

        metrics = {
            "tuning_images": {names[c]: int(len(rows[c])) for c in sorted(rows)},
            "tuning_set": best["what"],
            "tuning_sets_tried": {t["what"]: (round(t["fit"].history[t["fit"].chosen_epoch]["worst_group"], 2)
                                              if monitor and t["fit"].helped else None) for t in tried},
            "lr": lr,
            "other_classes_used": options["other_classes"] if others else "none needed (every class tuned)",
            "frozen_rows": [names[c] for c in frozen],
            "chosen_epoch": fit.chosen_epoch,
            "steps_per_epoch": fit.steps_per_epoch,
            "epochs_run": len(fit.history) - 1,
            "stop_reason": fit.stop_reason,
            "stop_split": "val" if monitor else None,
            "chosen_val_gap": round(fit.history[fit.chosen_epoch]["stop_gap"], 2) if monitor else None,
            "chosen_val_class_gaps": ({k: round(v, 2) for k, v in fit.history[fit.chosen_epoch]["class_gaps"].items()}
                                      if monitor else None),
            "start_val_worst_group": round(fit.history[0]["worst_group"], 2) if monitor else None,
            "chosen_val_worst_group": round(fit.history[fit.chosen_epoch]["worst_group"], 2) if monitor else None,
            "required_val_gain": round(margin, 2),
            "gap_statistic": options["gap_statistic"],
            "collisions": {f"{names[c]}→{names[o]}": int(len(idx)) for c, by in collided.items()
                           for o, idx in by.items()},
            "verdict": fit.verdict or "not checked (no spurious labels to monitor)",
            "chosen_val_accuracy": round(fit.history[fit.chosen_epoch]["accuracy"], 2) if monitor else None,
            # gap and accuracy on val (points), mean training loss; epoch 0 = the parent's head
            "curve": curve_for_card(fit.history, fit.chosen_epoch),
            **val_sets,
        }
        notes = [
            f"backbone frozen; head tuned on {indices_count} training images ({best['what']}) "
            f"({', '.join(f'{names[c]}: {len(rows[c])}' for c in sorted(rows))})",
            (f"stopped on the val split's {options['gap_statistic']} absolute gap over {len(monitor.sets)} set(s) "
             f"(epoch {fit.chosen_epoch}, {fit.stop_reason}; {fit.verdict}); figures reported on test") if monitor else
            f"no spurious labels: trained all {len(fit.history) - 1} epochs without early stopping",
        ]
        if margin > 0:  # what the noise check saw, in words
            notes.append(f"val worst group {start_worst:.1f} -> {_chosen_worst(fit):.1f} %: a rise beyond the "
                         f"{margin:.1f} points "
                         f"sampling noise alone gives on a group of {smallest} images ('required_gain_se')")
        return MitigationResult(model=model, head_only=True, options=dict(options), metrics=metrics, notes=notes)


def _chosen_worst(fit) -> float:
    """The held-out worst group of a fit's chosen head (-inf when it has none)."""
    worst = fit.history[fit.chosen_epoch]["worst_group"]
    return worst if np.isfinite(worst) else -np.inf


class HeadTuning(_FrozenBackboneTuning):
    name = "head_tuning"
    label = "Low-spuriosity head tuning"
    summary = (
        "Freeze the backbone and retrain the last layer, starting from the model's own, on the training images "
        "where each class's spurious features are weakest (its bottom-k by spuriosity). Stops once the spurious "
        "gap on the validation split is small. Fast: runs on the stored features."
    )
    options = (
        Option("k", 100, "At most this many lowest-spuriosity training images per ranked class (paper: 100; clamped "
                         "to half the class).", minimum=1),
        Option("k_choice", "val", "'val' (default): also tune with k/2 and k/4 images per class (and per collision) "
                                  "and keep the head with the highest held-out worst group (ties: the larger k); "
                                  "'fixed': k only. The bottom-k images are free of the cue only as far as the "
                                  "labelled feature separates it: for a background tint spread over many features, "
                                  "the paper's 100 left the worst group at 63.8 % on the cue benchmark, 50 reached "
                                  "78.3 % (benchmarks/README.md).", choices=("val", "fixed")),
        Option("collisions", True, "Also tune on the training images of other classes on which a ranked class's "
                                   "cue fires most (their k highest by that cue), when the model confuses them with "
                                   "the ranked class and does worse on them than on their k lowest (by more than the "
                                   "gap threshold); and stop only when that gap is closed too."),
        Option("typical", 100, "Per class in the tuning set, this many of its other training images drawn at random "
                               "(its ordinary images, cue included) join it; 0 = the paper (lowest-spuriosity images "
                               "and collisions only). Alone, those pair the cue with one answer: its absence with the "
                               "ranked class, its presence with the others. The head learns to reverse the cue, the "
                               "gap crosses zero within a few epochs and training stops before the head has learnt "
                               "anything else. With ordinary images beside them the cue predicts neither class in the "
                               "tuning set (on the cue benchmark: worst group +36 points over ERM against +18 without; "
                               "benchmarks/README.md).", minimum=0),
        Option("typical_choice", "val", "'val' (default): tune once without and once with the typical images and keep "
                                        "the head with the higher held-out worst group (ties: without, the paper's "
                                        "set); 'always': with them. They balance the cue when its rare groups are a "
                                        "few percent of each class (95 % correlation on the cue benchmark); at 99 % "
                                        "they add back the correlation (biased MNIST: 41.0 % on the biased test with "
                                        "them, 56.9 % without).", choices=("val", "always")),
        Option("other_classes", "balanced_sample",
               "Classes with no image in the tuning set: 'balanced_sample' (default) adds a random sample of their "
               "training images (as many per class as each tuned class gives); 'freeze_rows' keeps their head rows "
               "fixed, which in a softmax does NOT keep their predictions (the tuned rows move them, towards the "
               "tuned classes); 'none' leaves them out and lets their rows move.", choices=OTHER_CLASSES),
        *TRAINING_OPTIONS,
        SEED_OPTION,
    )

    def k_values(self, options: dict) -> list[int]:
        k = options["k"]
        if options.get("k_choice", "fixed") != "val":
            return [k]
        return sorted({k, max(1, k // 2), max(1, k // 4)}, reverse=True)

    def select(self, project, store, scores, train, options, rng):
        labels = project.table.labels
        chosen = {}
        for c in ranked_classes(scores, labels, train):
            idx = np.flatnonzero(train & (labels == c) & ~np.isnan(scores))
            k = min(options["k"], len(idx) // 2)
            # Stable sort: ties keep dataset order, so the choice is reproducible.
            chosen[c] = np.sort(idx[np.argsort(scores[idx], kind="stable")[:k]])
        return chosen
