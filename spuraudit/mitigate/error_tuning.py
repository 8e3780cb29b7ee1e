"""Error tuning, the baseline of docs/methods.md §7.1: head tuning on misclassified training images.

The same frozen-backbone SGD as low-spuriosity head tuning, but the tuning set is every training
image the parent model gets wrong. It needs no spurious labels to run (without them it trains the
full number of epochs); with labels it stops on the validation gap like head tuning. It tends to close
gaps at a larger cost in accuracy, which is why the two are shown side by side.
"""

from __future__ import annotations

import numpy as np

from .base import SEED_OPTION, Option
from .head_tuning import OTHER_CLASSES, TRAINING_OPTIONS, _FrozenBackboneTuning


class ErrorTuning(_FrozenBackboneTuning):
    name = "error_tuning"
    label = "Error tuning (baseline)"
    summary = (
        "Freeze the backbone and retrain the last layer on the training images the model misclassifies. A "
        "baseline for head tuning: it uses no spuriosity ranking to choose images."
    )
    needs_labels = False
    options = (
        Option("max_per_class", 0, "Cap on misclassified images per class (0 = no cap; a random subset when "
                                   "capped).", minimum=0),
        Option("other_classes", "balanced_sample",
               "Classes with no misclassified training image: 'balanced_sample' adds a random sample of their "
               "images (as many as the other classes give on average); 'freeze_rows' keeps their head rows "
               "fixed; 'none' leaves them out.", choices=OTHER_CLASSES),
        *TRAINING_OPTIONS,
        SEED_OPTION,
    )

    def select(self, project, store, scores, train, options, rng):
        labels = project.table.labels
        wrong = train & (np.asarray(store.preds) != labels)
        chosen = {}
        for c in range(project.table.num_classes):
            idx = np.flatnonzero(wrong & (labels == c))
            cap = options["max_per_class"]
            if cap and len(idx) > cap:
                idx = np.sort(rng.choice(idx, size=cap, replace=False))
            chosen[c] = idx
        return chosen
