"""`spuraudit autolabel`: run an auto-labeler from a shell (the same run the review page queues as a job).

    spuraudit autolabel --project demo --labeler segmentation --threshold 1.35
    spuraudit autolabel --project birds --labeler clip --concepts "water" "a tree | separate_object" \\
        --clip-model ViT-B-32 --pretrained /models/clip/ViT-B-32-openai.bin
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .masks import FOREGROUND, SEGMENTATION_ARCHITECTURES


def configure_autolabel_parser(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the autolabel options to a sub-command parser (which brings --project, --split, --json)."""
    sp.add_argument("--labeler", required=True, choices=["segmentation", "clip"])
    sp.add_argument("--pair", nargs=2, type=int, action="append", metavar=("CLASS", "FEATURE"),
                    help="label this pair (repeatable); default: every class's top-k features")
    sp.add_argument("--top-k", type=int, default=None, help="features per class (default: the project's setting)")
    sp.add_argument("--images-per-pair", type=int, default=8)
    sp.add_argument("--image-set", default=None, choices=["correct", "predicted", "labelled"])
    seg = sp.add_argument_group("segmentation")
    seg.add_argument("--metric", default="lift", choices=["lift", "mass_inside", "iou"])
    seg.add_argument("--threshold", type=float, default=None, help="default: the metric's measured default")
    seg.add_argument("--mask-source", default="dataset", choices=["dataset", "model"])
    seg.add_argument("--seg-architecture", default="deeplabv3_mobilenet_v3_large", choices=SEGMENTATION_ARCHITECTURES)
    seg.add_argument("--seg-checkpoint", default="", help="local weights file of the segmentation model")
    seg.add_argument("--seg-target", default=FOREGROUND, help="'foreground', a class index or a VOC class name")
    clip = sp.add_argument_group("clip")
    clip.add_argument("--concepts", nargs="+", default=[], help="concepts; end one with '| separate_object' "
                                                                 "for an object (default: background)")
    clip.add_argument("--clip-model", default="ViT-B-32", help="open_clip architecture or local-dir:/folder")
    clip.add_argument("--pretrained", default="openai", help="pretrained tag or local weights file")
    clip.add_argument("--margin", type=float, default=0.0)
    clip.add_argument("--device", default="cpu")
    return sp


def autolabel_options(args: argparse.Namespace) -> dict[str, Any]:
    """The labeler's constructor options from parsed arguments."""
    common = {"images_per_pair": args.images_per_pair, "split": args.split, "image_set": args.image_set,
              "top_k": args.top_k}
    if args.labeler == "segmentation":
        options = {**common, "metric": args.metric, "threshold": args.threshold, "mask_source": args.mask_source}
        if args.mask_source == "model":
            options.update(seg_architecture=args.seg_architecture, seg_checkpoint=args.seg_checkpoint,
                           seg_target=args.seg_target)
        return options
    return {**common, "concepts": "\n".join(args.concepts), "model_name": args.clip_model,
            "pretrained": args.pretrained, "margin": args.margin, "device": args.device}


def cmd_autolabel(args: argparse.Namespace) -> int:
    """Run the labeler in this process, store its proposals and print them (or JSON with --json)."""
    from . import make_labeler, run_autolabel
    from .base import _open_project

    project = _open_project(args.project)
    labeler = make_labeler(args.labeler, **autolabel_options(args))
    quiet = getattr(args, "json", False)

    def progress(fraction: float, message: str) -> None:
        if not quiet:
            print(f"[{100 * fraction:5.1f}%] {message}", file=sys.stderr, flush=True)

    report = run_autolabel(project, labeler, [tuple(p) for p in args.pair] if args.pair else None, progress)
    if quiet:
        print(json.dumps(report.as_dict(), indent=1))
    else:
        for p in report.proposals:
            print(f"class {p.class_index} feature {p.feature_index}: {p.answer} (confidence {p.confidence}) "
                  f"{p.reason}")
        for item in report.skipped:
            print(f"skipped class {item['class_index']} feature {item['feature_index']}: {item['reason']}")
        print(report.summary())
    return 0
