"""`spuraudit autolabel`: run an auto-labeler from a shell (the same run the review page queues as a job).

    spuraudit autolabel --project demo --labeler segmentation --threshold 1.35
    spuraudit autolabel --project birds --labeler clip --concepts "water" "a tree | separate_object" \\
        --clip-model ViT-B-32 --pretrained /models/clip/ViT-B-32-openai.bin

The flags come from the labelers' declared options, so `--help` lists every labeler's.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..options import add_option_flags, options_from_flags


def configure_autolabel_parser(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the autolabel options to a sub-command parser (which brings --project, --split, --json).

    One flag per declared option of every registered labeler (`AutoLabeler.declared_options`), grouped by
    labeler; a labeler registered by a plug-in gets its flags here without any change to this file.
    """
    from . import labeler_classes
    from .base import COMMON_OPTIONS

    classes = labeler_classes()
    sp.add_argument("--labeler", required=True, choices=sorted(classes))
    sp.add_argument("--pair", nargs=2, type=int, action="append", metavar=("CLASS", "FEATURE"),
                    help="label this pair (repeatable); default: every class's top-k features")
    seen = {"--split"}  # the sub-command helper adds --split itself
    add_option_flags(sp, [o for o in COMMON_OPTIONS if o.name != "split"], "all labelers", seen)
    for name, cls in classes.items():
        group = sp.add_argument_group(name, cls.title or None)
        add_option_flags(group, cls.declared_options, name, seen)
    return sp


def autolabel_options(args: argparse.Namespace) -> dict[str, Any]:
    """The labeler's constructor options from parsed arguments: the flags given for its declared options
    (and the common ones); the declared defaults apply to the rest."""
    from . import labeler_classes

    cls = labeler_classes()[args.labeler]
    options = options_from_flags(args, cls.all_options())
    if getattr(args, "split", None) is not None:
        options["split"] = args.split
    for option in cls.declared_options:  # options of another mode (e.g. model masks) are left out
        if option.when and options.get(option.when[0], _default(cls, option.when[0])) != option.when[1]:
            options.pop(option.name, None)
    return options


def _default(cls, name: str) -> Any:
    return next(o.default for o in cls.all_options() if o.name == name)


def cmd_autolabel(args: argparse.Namespace) -> int:
    """Run the labeler in this process, store its proposals and print them (or JSON with --json)."""
    from . import make_labeler, run_autolabel
    from ..project import Project

    project = Project.find(args.project)
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
