"""`spuraudit collisions | flags | crop | marks`: collisions, flagged images, core cropping, the marks."""

from __future__ import annotations

import json
import math
from pathlib import Path


def _jsonable(obj):
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "item"):
        return obj.item()
    return obj


def _emit(args, data, text: str) -> None:
    print(json.dumps(_jsonable(data), indent=1) if args.json else text)


def _audit(args):
    from .audit import Audit
    from .project import Project

    return Audit.open(Project.find(args.project), args.model)


def _split(args, audit):
    return args.split or audit.default_split()


def _table(frame, empty: str) -> str:
    return empty if frame.empty else frame.to_string(index=False, float_format=lambda v: f"{v:.2f}")


def cmd_collisions(args):
    from .collisions import collision_report

    audit = _audit(args)
    report = collision_report(audit, _split(args, audit), top_k=args.top_k, gap_k=args.k)
    data = {"split": _split(args, audit), "collisions": report.collisions.to_dict("records"),
            "negative_gap_classes": report.negative, "flows": report.flows.to_dict("records"),
            "gaps": report.gaps.per_class.to_dict("records")}
    text = _table(report.collisions, "no collisions: no labelled spurious feature is a top feature of another class")
    names = audit.class_names
    text += "\nclasses with a negative gap: " + (", ".join(names[c] for c in report.negative) or "none")
    _emit(args, data, text)


def cmd_flags(args):
    from .collisions import collision_flags

    audit = _audit(args)
    flags = collision_flags(audit, split=_split(args, audit), top_k=args.top_k, cut=args.cut, gap_k=args.k)
    if not args.all:
        flags = flags[flags["flagged"]]
    _emit(args, {"split": _split(args, audit), "cut": args.cut, "images": flags.to_dict("records")},
          _table(flags.drop(columns=["class_index", "other_index", "predicted_index"]),
                 "nothing flagged (no class with a negative gap, or no image reaches the cut)"))


def cmd_crop(args):
    from .collisions import core_cropping

    audit = _audit(args)
    result = core_cropping(audit, split=_split(args, audit), top_k=args.top_k, model_folder=args.model)
    _emit(args, {"split": _split(args, audit), "results": result.to_dict("records")},
          _table(result, "no class with a negative gap: nothing to crop"))


def cmd_marks(args):
    from .project import Project
    from .labels.marks import MarkStore, marks_path

    project = Project.find(args.project)
    store = MarkStore(marks_path(project.folder))
    if args.action == "export":
        if not args.file:
            raise ValueError("export needs the CSV file to write, e.g. `spuraudit marks export marks.csv`")
        path = store.export_csv(Path(args.file))
        _emit(args, {"file": str(path), "marks": len(store.marks())}, f"{len(store.marks())} marks written to {path}")
    else:
        marks = store.marks()
        _emit(args, {"marks": marks}, "\n".join(f"{m['mark']:16} {m['annotator']:12} {m['image']}" for m in marks)
              or "no marks yet")


def configure_collision_parsers(add) -> None:
    """Add the four commands through the main parser's `add(name, fn, help, split=...)` helper."""
    for name, fn, text in (
        ("collisions", cmd_collisions, "spurious features of one class that are top features of another, with "
                                       "where each class's high-spuriosity images are predicted"),
        ("flags", cmd_flags, "high-spuriosity images of negative-gap classes where a colliding class's core "
                             "features fire (likely label errors or several objects)"),
        ("crop", cmd_crop, "core cropping: accuracy on flagged and high-spuriosity images before and after "
                           "cropping to the class's core features"),
    ):
        sp = add(name, fn, text, split=True)
        sp.add_argument("--top-k", type=int, default=5, help="top features per class that count (default 5)")
        sp.add_argument("-k", type=int, default=100, help="images per end of each ranking (clamped to n_c // 2)")
        if name == "flags":
            from .analysis.collisions import DEFAULT_FLAG_CUT

            sp.add_argument("--cut", type=float, default=DEFAULT_FLAG_CUT,
                            help="flag from this strength (1 = as strongly as on the other class's own images)")
            sp.add_argument("--all", action="store_true", help="list the unflagged candidates too")
    sp = add("marks", cmd_marks, "the marks given to flagged images (label error, several objects, fine)")
    sp.add_argument("action", choices=["list", "export"])
    sp.add_argument("file", nargs="?", help="export: the CSV file to write")
