"""MaskTune (Asgari et al., 2022; docs/methods.md §7.2): mask what the model looks at, fine-tune one epoch.

Starting from the trained (ERM) model, every training image gets an XGradCAM heatmap of the class the
model PREDICTS (no label is used); the hottest pixels are masked (by default filled with the same pixels
of another image of the batch; black in the paper) and the whole model is fine-tuned for exactly one epoch
on the masked training set with a small constant learning rate. The features
the model relied on most are gone from that epoch's images, so it has to find others. Optional further
rounds re-mask the already masked images with the fine-tuned model and tune another epoch. Afterwards the
batch-norm statistics are re-estimated on unmasked training images: the epoch fitted them to images with
holes, and the tuned model will see whole images.

Masks are computed in the coordinates of the tensor the model sees (see `masking`); the images are
streamed from disk in batches, and the masks are kept as bits (N·H·W/8 bytes: 30 MB for 5,000
images at 224 × 224, 7.5 GiB for ImageNet's 1.28 M) in a scratch file under the project's cache/,
read back a batch at a time by the fine-tuning loader and deleted at the end.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import distributed
from ..modelio import ModelCard, load_model
from ..modelio.card import CARD_FILE
from ..project import Project
from ..training import image_loader, loader_workers, pick_device, recalibrate_batchnorm
from .base import SEED_OPTION, Mitigation, MitigationError, MitigationResult, Option, Progress, seed_everything, stage
from .data import load_images, parent_store, require_split
from .checkpoints import CheckpointScorer, predict_batches
from .guard import guard_failure, held_out_figures, required_gain
from .masking import (DEFAULT_FRACTION, DEFAULT_RULE, RULES, HeatmapMaker, PackedMasks, apply_masks,
                      fill_from_others, mask_batch, share_summary)

HISTOGRAM_BINS = 20
CUE_MASK_COLUMN = "cue_mask_path"  # optional table column: a PNG per image, non-zero where the cue's pixels are


def share_histogram(share_pct: np.ndarray, bins: int = HISTOGRAM_BINS) -> dict:
    """Histogram of masked shares (percent) on a readable axis: from 0 to the next whole percent above the
    largest share, so a rule that masks 25 % everywhere gives one bar at 25, not an axis from 24.9 to 25."""
    share_pct = np.asarray(share_pct, dtype=np.float64)
    top = max(1.0, float(np.ceil(share_pct.max()))) if len(share_pct) else 1.0
    counts, edges = np.histogram(share_pct, bins=bins, range=(0.0, top))
    return {"edges_pct": [round(float(e), 3) for e in edges], "counts": [int(c) for c in counts]}


def cue_coverage_of_masks(masks: "PackedMasks", cue_paths: list[str], size) -> dict:
    """Coverage of the known cue pixels by the masks (`analysis.cues`), over the images that have a cue mask."""
    from PIL import Image

    from ..analysis.cues import coverage_summary, cue_coverage

    positions = [i for i, path in enumerate(cue_paths) if isinstance(path, str) and path]
    shares = []
    for start in range(0, len(positions), 512):
        part = positions[start:start + 512]
        cue = np.stack([np.asarray(Image.open(cue_paths[i]).convert("L").resize((size[1], size[0]), Image.NEAREST))
                        > 0 for i in part])
        shares.append(cue_coverage(masks[np.asarray(part)].numpy(), cue))
    return coverage_summary(np.concatenate(shares) if shares else np.empty(0))


def _loader(paths: list[str], size, batch_size: int, order: np.ndarray | None = None):
    """Batches (images [B, 3, H, W] in [0, 1], positions [B]) of `paths`, in `order` (default: as listed)."""
    # Decoding workers and pinned batches on a GPU machine (see `training.loader_workers`); none on the CPU.
    return image_loader(paths, size, batch_size, order, num_workers=loader_workers(), device=pick_device())


def val_group_ids(table) -> np.ndarray | None:
    """Group index of each val image, or None when the dataset has no group columns or no val split."""
    if "val" not in table.splits or not table.group_columns:
        return None
    return table.group_ids()[0][table.split_mask("val")]


class MaskTune(Mitigation):
    name = "masktune"
    label = "MaskTune"
    summary = (
        "Mask the pixels each training image's XGradCAM heatmap (for the predicted class, no labels) marks as "
        "most important, then fine-tune the whole model for one epoch on the masked images. Needs no spurious "
        "labels and no group labels. Slower: runs the model over the training images twice."
    )
    head_only = False
    options = (
        Option("rule", DEFAULT_RULE,
               "Which pixels to mask per image. 'top_fraction' (default): the hottest share given by 'fraction'; "
               "'official': above mean + 2·std of the positive heatmap values (MaskTune's code; masks only the peak, "
               "or nothing when the heatmap is concentrated, and then does no more than an unmasked epoch: "
               "benchmarks/README.md); 'all_pixels': above mean + 2·std of all heatmap pixels.", choices=RULES),
        Option("fraction", DEFAULT_FRACTION,
               "Share of pixels masked per image by 'top_fraction'. A last-stage heatmap is coarse (7×7 cells for "
               "a ResNet at 224 px or the demo's CNN): the evidence it points to spreads over a blob of about 3×3 "
               "cells, a quarter of the image, and a cue at the blob's edge survives smaller masks. A larger share "
               "covers more of a cue the model leans on only in part, and erases more of the object: on the cue "
               "benchmark 35 % covered the patch cue on 88.1 % of cue-bearing images instead of 78.8 %, and lifted the "
               "worst group 1.3 points more at 90 %, as much at 95 % and 3.3 points less at 99-99.5 % "
               "(benchmarks/README.md).",
               minimum=0.001, maximum=0.999),
        Option("optimizer", "adam", "Fine-tuning optimiser. The official code continues with the ERM run's own "
                                    "optimiser and final learning rate: use your model's when you know them.",
               choices=("adam", "sgd")),
        Option("lr", 3e-4, "Constant learning rate of the fine-tuning epoch. The default, under the usual Adam 1e-3, "
                           "lets one epoch on masked images adjust the model rather than retrain it on images unlike "
                           "the test images: on the cue benchmark 1e-3 gained almost nothing over the ERM model and "
                           "3e-4 or 1e-4 did (benchmarks/README.md). With SGD a pretrained network usually wants "
                           "1e-4 to 1e-3; the paper continues at the ERM run's last rate.",
               minimum=0.0),
        Option("momentum", 0.9, "SGD momentum ('sgd' only).", minimum=0.0, maximum=1.0),
        Option("weight_decay", 0.0, "L2 penalty during fine-tuning.", minimum=0.0),
        Option("batch_size", 128, "Images per fine-tuning step.", minimum=1),
        Option("mask_batch_size", 256, "Images per heatmap batch.", minimum=1),
        Option("head", "keep", "The last layer for the masked epoch: 'keep' (default, the paper) continues from the "
                               "ERM head, whose weight on a cue no masked image can lower (a masked cue sends no "
                               "gradient to it), so the cue keeps its vote on test images that carry it; 'reset' "
                               "starts it from zero so that a cue masked everywhere gets no weight, but one epoch "
                               "from zero on heavily masked images can collapse to one class (measured in "
                               "benchmarks/README.md).", choices=("keep", "reset")),
        Option("batchnorm", "recalibrate",
               "Batch-norm statistics. 'recalibrate' (default): updated on the masked images during the epoch, "
               "then re-estimated on unmasked training images, so the tuned model normalises whole images like "
               "the test images with statistics of whole images; 'train' (the paper): left as the masked epoch "
               "made them, fitted to images with holes; 'frozen': the ERM model's throughout.",
               choices=("recalibrate", "train", "frozen")),
        Option("recalibration_images", 8192, "Unmasked training images (at most; a seeded random sample) that "
                                             "re-estimate the batch-norm statistics after tuning.", minimum=1),
        Option("masked_share", 0.5,
               "Share of the tuning epoch's images shown masked (a seeded draw per image); the others are shown "
               "whole. The default, half, keeps whole images of every class in the epoch: with every image masked "
               "(1, the paper) a class whose evidence is the object itself sees only erased objects, and the "
               "epoch learns 'erased' as that class (on the cue benchmark all-masked did worse than an unmasked "
               "epoch; half did better than both: benchmarks/README.md).", minimum=0.0, maximum=1.0),
        Option("fill", "others",
               "What masked pixels become. 'others' (default): the same pixels of another image of the batch, so a "
               "masked cue reappears on images of every class and the epoch unlearns it instead of merely not "
               "seeing it (a black hole sends the cue's feature no gradient, so the model still answers to the cue "
               "at test time). 'zero' (the paper): black. On the cue benchmark's CIFAR-10 photographs 'others' "
               "lifted the worst group twice as much (8 cells: +44.9 against +28.7 points), on its MNIST digits "
               "as much (24 cells: +18.7 against +18.0), on the demo 31.5 -> 83.1 % against 72.9: "
               "benchmarks/README.md. Under torchrun the donor comes from the same process's share of the batch.",
               choices=("zero", "others")),
        Option("check", True,
               "Check the tuned model on the validation split before writing it, against the original model: it is "
               "refused (no model written, the reason shown) when the worst group fell (real groups when the dataset "
               "has group columns), a class lost more than 'max_class_drop' points, average accuracy more than "
               "'max_accuracy_drop', or one class is predicted everywhere. A cue no pixel mask removes (a background "
               "tint on the cue benchmark) made the masked epoch worse than the original model."),
        Option("required_gain_se", 2.0,
               "With group columns, 'check' also requires the val worst group to rise by this many standard errors "
               "of the smallest val group's accuracy (≈ 5.5 points for 250 images at 75 %): a smaller rise is "
               "what sampling noise alone gives (on the cue benchmark a 6-pixel square's tuned model rose 4.4 points on "
               "val and fell 2.5 on test). 0 = any rise.", minimum=0.0),
        Option("max_accuracy_drop", 5.0, "Validation accuracy the tuned model may lose ('check').", minimum=0.0),
        Option("max_class_drop", 20.0, "Validation accuracy any one class may lose ('check'). Looser than the head "
                                       "methods' 10: a class of a few dozen val images moves 10 points with a "
                                       "handful of them (a ten-class demo run gained 3.4 points of accuracy and 49 "
                                       "of worst group while one class lost 11.7); a class the epoch unlearns "
                                       "loses far more.", minimum=0.0),
        Option("checkpoints", 8,
               "Times the tuning epoch is scored on the validation split (evenly spaced, the end included); the "
               "best checkpoint is kept: highest worst-group accuracy when the dataset has group columns, else "
               "highest accuracy. 1 = the end of the epoch only (the paper). On the cue benchmark the masked epoch's "
               "best point was often early (a 6-pixel square: worst group 79.7 % after an eighth of the epoch, "
               "69.5 % at its end).", minimum=1, maximum=64),
        Option("checkpoint_images", 1024, "Whole training images (a seeded sample) that re-estimate a "
                                          "checkpoint's batch-norm statistics before it is scored.", minimum=1),
        Option("rounds", 1, "Mask-and-tune rounds: 1 is MaskTune; each further round re-masks the masked images "
                            "with the tuned model (masks accumulate) and tunes one more epoch.", minimum=1, maximum=3),
        SEED_OPTION,
    )

    def run(self, project: Project, parent_folder: Path, options: dict, progress: Progress) -> MitigationResult:
        gen = seed_everything(options["seed"])
        train = require_split(project, "train", "supplies the images to mask and tune on")
        model, card = load_model(parent_folder)
        device = pick_device()
        model.to(device)
        size = tuple(card.input_size)
        train_idx = np.flatnonzero(train)
        paths = project.table.frame["path"].to_numpy()[train_idx].tolist()  # one conversion of the column
        labels = torch.as_tensor(project.table.labels[train_idx])
        frame = project.table.frame
        cue_paths = frame[CUE_MASK_COLUMN].to_numpy()[train_idx].tolist() if CUE_MASK_COLUMN in frame else None
        n = len(paths)
        project.cache_dir.mkdir(parents=True, exist_ok=True)
        check = options.get("check", True) and "val" in project.table.splits
        scorer = None
        val_groups = val_group_ids(project.table)  # once: the checkpoints and the check both need them
        if options.get("checkpoints", 1) > 1 and "val" in project.table.splits:
            scorer = self._scorer(project, paths, size, options, device, val_groups)
        tuning = stage(progress, 0.0, 0.95 if check else 1.0)
        with tempfile.TemporaryDirectory(prefix=".masktune-", dir=project.cache_dir) as scratch, \
                PackedMasks(n, size, Path(scratch) / "masks.npy") as masks:
            result = self._run(model, paths, labels, size, masks, options, gen, device, tuning, cue_paths,
                               scorer)
        if check:
            result.metrics["validation_check"] = self._check(project, parent_folder, result, size, options,
                                                             stage(progress, 0.95, 1.0), val_groups)
        else:
            result.notes.append("not checked on a validation split" + ("" if options.get("check", True) else
                                                                       " ('check' is off)"))
        return result

    @staticmethod
    def _scorer(project, paths, size, options, device, val_groups) -> CheckpointScorer:
        """Scores checkpoints on val (`checkpoints`): val images, and a seeded sample of training images for
        their batch-norm statistics (its own generator: the epoch's order and draws stay those of the seed)."""
        table = project.table
        val_idx = np.flatnonzero(table.split_mask("val"))
        val_paths = table.frame["path"].to_numpy()[val_idx].tolist()
        take = min(len(paths), int(options["checkpoint_images"]))
        sample = np.sort(np.random.default_rng(options["seed"] + 1).choice(len(paths), size=take, replace=False))
        batch = options["mask_batch_size"]
        return CheckpointScorer(
            val_batches=lambda: _loader(val_paths, size, batch),
            recal_batches=(lambda: _loader(paths, size, batch, sample))
            if options.get("batchnorm", "recalibrate") == "recalibrate" else None,
            labels=table.labels[val_idx],
            group_ids=val_groups,
            device=device,
        )

    def _check(self, project, parent_folder, result, size, options, report, groups) -> dict:
        """The tuned model against the parent on val (`guard`); MitigationError when it did not help."""
        table = project.table
        val_idx = np.flatnonzero(table.split_mask("val"))
        report(0.0, f"checking the tuned model on {len(val_idx)} validation images")
        parent_preds = np.asarray(parent_store(project, parent_folder).preds)[val_idx]
        paths = table.frame["path"].to_numpy()[val_idx].tolist()
        model, device = result.model, pick_device()
        preds = predict_batches(model.to(device), _loader(paths, size, options["mask_batch_size"]), len(val_idx),
                                device)
        model.cpu()
        labels = table.labels[val_idx]
        before, after = held_out_figures(parent_preds, labels, groups), held_out_figures(preds, labels, groups)
        margin, smallest = required_gain(before["worst_group"], groups, options["required_gain_se"])
        why = guard_failure(after, before, options["max_accuracy_drop"], options["max_class_drop"], margin, smallest)
        if why and why.startswith("worst group rose"):  # the margin refused it: say how to waive it
            why += "; set 'required_gain_se' to 0 to accept any rise"
        shown = (f"accuracy {before['accuracy']:.1f} -> {after['accuracy']:.1f} %"
                 + (f", worst group {before['worst_group']:.1f} -> {after['worst_group']:.1f} %"
                    if np.isfinite(before["worst_group"]) else ""))
        if why:
            names = table.class_names
            why = re.sub(r"class (\d+)", lambda m: f"class '{names[int(m.group(1))]}'", why)
            raise MitigationError(
                f"{self.label} did not help: on the validation split {why} ({shown}). No model was written. The "
                "features the masks removed may not be the cue (a cue spread over the whole image, such as a colour "
                "tint, survives any pixel mask); look at the masked examples, or try head tuning or DFR.")
        result.notes.append(f"checked on {len(val_idx)} validation images against the original: {shown}")
        return {"images": int(len(val_idx)), "before": _rounded(before), "after": _rounded(after),
                "required_gain": round(margin, 2)}

    def _run(self, model, paths, labels, size, masks, options, gen, device, progress,
             cue_paths=None, scorer: CheckpointScorer | None = None) -> MitigationResult:
        n = len(paths)
        rounds = options["rounds"]
        round_stats = []
        coverage = None
        recalibrate = options.get("batchnorm", "recalibrate") == "recalibrate"
        step = (0.97 if recalibrate else 1.0) / rounds  # the rest of the bar: the batch-norm re-estimation
        for r in range(rounds):
            report_mask = stage(progress, r * step, r * step + 0.4 * step)
            report_tune = stage(progress, r * step + 0.4 * step, (r + 1) * step)
            share, agree = self._mask_round(model, paths, size, masks, labels, options, report_mask)
            if r == 0 and cue_paths is not None:
                coverage = cue_coverage_of_masks(masks, cue_paths, size)
            if r == 0 and options.get("head", "keep") == "reset":
                reset_head(model)
            losses = self._tune_epoch(model, paths, size, masks, labels, options, gen, device, report_tune, scorer)
            stats = share_summary(share)
            if scorer is not None:
                stats["checkpoints"] = scorer.history
                stats["chosen_checkpoint"] = scorer.best_fraction
            stats["predicted_equals_label_pct"] = round(100 * agree, 2)
            stats["mean_loss"] = round(float(np.mean(losses)), 4) if losses else float("nan")
            round_stats.append(stats)
        recalibrated = 0
        if recalibrate:
            recalibrated = self._recalibrate(model, paths, size, options, gen, device, stage(progress, 0.97, 1.0))
        model.cpu().eval()
        final_share = masks.shares()
        metrics = {
            "masked_share": share_summary(final_share),
            "masked_share_histogram": share_histogram(100 * final_share),
            "rounds": round_stats,
            "train_images": n,
            "batchnorm_recalibration_images": recalibrated,
        }
        if coverage is not None:  # the first round's masks against the known cue pixels
            metrics["cue_coverage"] = coverage
        notes = [
            f"MaskTune: XGradCAM of the predicted class at the feature map, rule '{options['rule']}', masks in the "
            f"model's {size[0]}×{size[1]} input coordinates; whole model fine-tuned {rounds} epoch(s) with "
            f"{options['optimizer']} lr {options['lr']:g}, head {options.get('head', 'keep')}, batch-norm statistics "
            f"{options.get('batchnorm', 'recalibrate')}"
            + (f" (re-estimated on {recalibrated} unmasked training images)" if recalibrated else ""),
        ]
        if metrics["masked_share"].get("nothing_masked_pct", 0) > 0:
            notes.append(f"{metrics['masked_share']['nothing_masked_pct']:.1f} % of the training images had "
                         "nothing masked")
        return MitigationResult(model=model, head_only=False, options=dict(options), metrics=metrics, notes=notes)

    @staticmethod
    def _mask_round(model, paths, size, masks, labels, options, report) -> tuple[torch.Tensor, float]:
        """Adds this round's masks into `masks` (`PackedMasks` of the n images).

        Returns (share masked this round, float [n]; fraction of images whose predicted class equals
        their label, i.e. how often the heatmap explained the true class)."""
        share = torch.zeros(len(paths))
        agree = 0
        with HeatmapMaker(model) as make:
            for x, pos in _loader(paths, size, options["mask_batch_size"]):
                x = apply_masks(x, masks[pos])  # later rounds look at the images as last tuned on
                out = mask_batch(make, x, options["rule"], options["fraction"])
                masks.add(pos, out.masks)
                share[pos] = out.share.cpu()
                agree += int((out.preds == labels[pos]).sum())
                done = int(pos[-1]) + 1
                report(done / len(paths), f"XGradCAM masks: {done}/{len(paths)} training images")
        return share, agree / max(len(paths), 1)

    @staticmethod
    def _recalibrate(model, paths, size, options, gen, device, report) -> int:
        """Re-estimate batch-norm statistics on (a seeded sample of) the unmasked training images."""
        take = min(len(paths), int(options.get("recalibration_images", 8192)))
        order = np.sort(torch.randperm(len(paths), generator=gen)[:take].numpy())  # sorted: sequential reads
        report(0.0, f"re-estimating batch-norm statistics on {take} unmasked training images")
        return recalibrate_batchnorm(model, (x for x, _ in _loader(paths, size, options["mask_batch_size"], order)),
                                     device)

    @staticmethod
    def _tune_epoch(model, paths, size, masks, labels, options, gen, device, report, scorer=None) -> list[float]:
        """One epoch over the masked training images in a seeded shuffled order; the whole model trains.

        With a `scorer`, the model is scored on val at evenly spaced steps and at the end, and leaves the
        epoch as its best checkpoint."""
        model.train()
        if options.get("batchnorm", "recalibrate") == "frozen":
            for module in model.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()  # normalise with the ERM statistics; affine weights still train
        if options["optimizer"] == "adam":
            opt = torch.optim.Adam(model.parameters(), lr=options["lr"], weight_decay=options["weight_decay"])
        else:
            opt = torch.optim.SGD(model.parameters(), lr=options["lr"], momentum=options["momentum"],
                                  weight_decay=options["weight_decay"])
        loss_fn = nn.CrossEntropyLoss(reduction="sum")
        order = torch.randperm(len(paths), generator=gen).numpy()
        share = float(options.get("masked_share", 1.0))
        # Which images this epoch shows masked: a seeded draw per image, the same in every process.
        show_masked = None if share >= 1.0 else (torch.rand(len(paths), generator=gen) < share)
        # 'others' fills the holes from other images with its own generator: the epoch's order and draws stay
        # those of the seed whichever fill is used.
        fill_gen = torch.Generator().manual_seed(int(options.get("seed", 0)) + 2)
        others = options.get("fill", "others") == "others"
        losses = []
        done = 0
        total_steps = -(-len(paths) // options["batch_size"])
        marks = set()
        if scorer is not None:
            scorer.reset()
            count = min(int(options["checkpoints"]), total_steps)
            # Steps after which a checkpoint is scored (the end is scored after the loop).
            marks = {int(round(k * total_steps / count)) - 1 for k in range(1, count)} - {total_steps - 1}
        # Under torchrun each process takes its slice of every batch and DDP averages the gradients (see
        # `distributed.EpochShard`); in one process this is the plain loop with the batch's mean loss.
        shard, net = distributed.EpochShard.of(order, options["batch_size"]), distributed.wrap(model, device)
        with distributed.join(net):
            for step, (x, pos) in enumerate(_loader(paths, size, shard.batch_size, shard.order)):
                m = masks[pos] if show_masked is None else masks[pos] & show_masked[pos][:, None, None]
                x = (fill_from_others(x, m, fill_gen) if others else apply_masks(x, m)).to(device, non_blocking=True)
                loss = loss_fn(net(x), labels[pos].to(device, non_blocking=True)) * shard.loss_weight(step)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(loss.item() / shard.world)
                done += len(pos) * shard.world
                report(min(1.0, done / len(paths)), f"fine-tuning on masked images: {min(done, len(paths))}/{len(paths)}, "
                       f"loss {losses[-1]:.3f}")
                if step in marks:
                    row = scorer(model, (step + 1) / total_steps)
                    worst = "" if row["val_worst_group"] is None else f", worst group {row['val_worst_group']:.1f} %"
                    report(min(1.0, done / len(paths)), f"checkpoint at {row['epoch_fraction']:.0%} of the epoch: "
                           f"val accuracy {row['val_accuracy']:.1f} %{worst}")
        if scorer is not None:
            # The end is scored after the loop: under torchrun a process may have no share of the last batch.
            scorer(model, 1.0)
            model.load_state_dict(scorer.best_state)
        model.eval()
        return losses


def _rounded(figures: dict) -> dict:
    return {k: ({c: round(a, 2) for c, a in v.items()} if isinstance(v, dict) else round(float(v), 2))
            for k, v in figures.items()}


def reset_head(model) -> None:
    """Zero the last layer: every class starts equal, and a feature the masked images never show keeps weight 0."""
    with torch.no_grad():
        model.head.weight.zero_()
        if model.head.bias is not None:
            model.head.bias.zero_()


def masked_examples(project: Project, model, indices, rule: str = DEFAULT_RULE, fraction: float = DEFAULT_FRACTION,
                    size=None, fill: str = "zero", seed: int = 0) -> dict:
    """MaskTune's view of a few images, for browsing (runs the model on these images only).

    Returns originals uint8 [n, H, W, 3], heatmaps float [n, H, W] in [0, 1], masks bool [n, H, W],
    masked uint8 [n, H, W, 3], share float [n] (fraction of pixels masked), preds int [n] (the class the
    heatmap explains), indices int [n]. size: (H, W), by default the project model's input size.
    fill: what the masked images show in the holes, as the tuning epoch's option: 'zero' (black) or
    'others' (the same pixels of another of these images, a seeded draw as in the epoch).
    """
    indices = np.asarray(indices, dtype=np.int64)
    if size is None:  # every model of a project sees the project model's input size
        size = ModelCard.from_yaml((project.model_folder / CARD_FILE).read_text()).input_size
    images = load_images(project, indices, size)
    model.eval()
    with HeatmapMaker(model) as make:
        out = mask_batch(make, images, rule, fraction)
    if fill == "others":
        out.masked = fill_from_others(images, out.masks.to(images.device), torch.Generator().manual_seed(seed))
    elif fill != "zero":
        raise ValueError(f"unknown fill '{fill}'; choose 'zero' or 'others'.")

    def to_uint8(x):
        return (x.clamp(0, 1).mul(255).round().byte().permute(0, 2, 3, 1).cpu().numpy())

    return {
        "indices": indices,
        "originals": to_uint8(images),
        "heatmaps": out.heatmaps.cpu().numpy(),
        "masks": out.masks.cpu().numpy(),
        "masked": to_uint8(out.masked),
        "share": out.share.cpu().numpy(),
        "preds": out.preds.cpu().numpy(),
    }

