"""The `spuraudit` command: every audit step from a shell; `--json` on each result for scripts."""

from __future__ import annotations

import argparse
import json
import math
import sqlite3
import sys
from pathlib import Path

from . import paths
from .jobs.kinds import DEMO_BUILD


# ---- output helpers ------------------------------------------------------------------------
def _jsonable(obj):
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if hasattr(obj, "item") and not isinstance(obj, (list, dict)):
        return obj.item()
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return obj


def _emit(args, data, text: str) -> None:
    if getattr(args, "json", False):
        print(json.dumps(_jsonable(data), indent=1))
    else:
        print(text)


class _Bar:
    """A tqdm bar driven by (fraction, message) callbacks, on stderr so --json stays clean."""

    def __init__(self, desc: str, quiet: bool = False):
        from tqdm import tqdm

        self.bar = None if quiet else tqdm(total=1000, desc=desc, file=sys.stderr, bar_format="{l_bar}{bar}| {postfix}")

    def __call__(self, fraction: float, message: str = "") -> None:
        if self.bar is None:
            return
        self.bar.n = int(1000 * min(max(fraction, 0.0), 1.0))
        self.bar.set_postfix_str(message, refresh=False)
        self.bar.refresh()

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _project(args):
    from .project import Project

    return Project.find(args.project)


def _audit(args):
    from .audit import Audit

    return Audit.open(_project(args), getattr(args, "model", None))


def _split(args, audit):
    return None if args.split == "all" else (args.split or audit.default_split())


# ---- commands --------------------------------------------------------------------------------
def cmd_demo(args):
    from .demo import build_demo

    bar = _Bar("demo", args.json)
    project = build_demo(seed=args.seed, progress=bar)
    bar.close()
    from .modelio import load_model

    _, card = load_model(project.model_folder)
    _emit(args, {"project": str(project.folder), "model": str(project.model_folder), "metrics": card.metrics},
          f"demo project: {project.folder}\nmodel: {project.model_folder}\nmetrics: {json.dumps(card.metrics)}")


def cmd_create(args):
    """The same checks and steps as the app's "Add data & model" page (`spuraudit.create`)."""
    from .create import create_project

    options = {k: v for k, v in (("feature_layer", args.feature_layer), ("head", args.head)) if v}
    bar = _Bar("create", args.json)
    notes: list[str] = []
    try:
        project = create_project(
            args.name, args.data, args.group_columns or [], args.arch, args.checkpoint, args.input_size,
            args.mean, args.std, args.trust_pickle, model_name=args.model_name, class_names=args.class_names,
            linear_probe=args.linear_probe, class_balanced=args.class_balanced,
            probe_train_fraction=args.probe_train_fraction, model_options=options or None,
            image_root=args.image_root, progress=bar, replace=args.replace, notes=notes,
        )
    finally:
        bar.close()
    table = project.table
    msg = (f"project: {project.folder}\nimages: {len(table)} ({len(table.skipped)} skipped)\n"
           f"model: {project.model_folder}\nnext: spuraudit extract --project {project.folder.name}")
    msg += "".join(f"\nnote: {n}" for n in notes)
    _emit(args, {"project": str(project.folder), "images": len(table), "skipped": table.skipped,
                 "model": str(project.model_folder), "notes": notes}, msg)


def cmd_extract(args):
    """Under torchrun every process runs this; the rows are shared out and rank 0 reports (see `distributed`)."""
    from . import distributed

    project = _project(args)
    distributed.setup(args.device)
    bar = _Bar("features", args.json or not distributed.is_main())
    store = project.extract(model_folder=args.model, device=args.device, batch_size=args.batch_size,
                            num_workers=args.workers, progress=bar, precision=args.precision, decode=args.decode)
    bar.close()
    if distributed.is_main():
        _emit(args, store.meta, f"features: {store.path}\n{json.dumps(store.meta)}")
    distributed.finish()


def cmd_summary(args):
    audit = _audit(args)
    split = _split(args, audit)
    data = audit.summary(split)
    lines = [f"split {data['split']}: {data['n']} images, accuracy {data['accuracy']:.1f}%"]
    lines += [f"  {k}: {v:.1f}%" for k, v in data["per_class_accuracy"].items()]
    if "group_accuracy" in data:
        lines += ["groups:"] + [f"  {k}: {v:.1f}%" for k, v in data["group_accuracy"].items()]
        lines.append(f"worst group: {data['worst_group_accuracy']:.1f}%")
    _emit(args, data, "\n".join(lines))


def _class_index(audit, value: str) -> int:
    names = audit.class_names
    if value in names:
        return names.index(value)
    if value.isdigit() and int(value) < len(names):
        return int(value)
    raise SystemExit(f"error: class '{value}' is neither a class index 0..{len(names) - 1} nor one of {names}")


def cmd_top_features(args):
    audit = _audit(args)
    split = _split(args, audit)
    classes = [_class_index(audit, args.cls)] if args.cls is not None else range(len(audit.class_names))
    result, lines = {}, []
    for c in classes:
        df = audit.top_features(c, k=args.k, split=split, mode=args.image_set)
        result[audit.class_names[c]] = df.to_dict("records")
        lines.append(f"class {c} ({audit.class_names[c]}), S_c = {args.image_set}, split {split or 'all'}:")
        lines.append(df.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    _emit(args, result, "\n".join(lines))


def cmd_mark(args):
    import sqlite3

    from .labels import NewVote

    project = _project(args)
    answer = {"spurious": "background", "core": "main_object"}.get(args.as_, args.as_)
    votes = [NewVote(class_index=args.cls, feature_index=d, answer=answer, annotator=args.annotator,
                     confidence=args.confidence, reason=args.reason) for d in args.feature]
    try:
        store = project.labels()
        store.add_votes(votes)  # one transaction: all of the command's votes, or none
    except sqlite3.OperationalError as exc:
        raise OSError(
            f"could not save the votes in {project.labels_path} ({exc}): the disk is probably full or the folder "
            "is read-only. None of this command's votes were saved and the earlier votes are unchanged; free "
            "some space and run the command again.") from None
    spurious = store.spurious_features()
    _emit(args, {"spurious": spurious}, f"spurious features now: {json.dumps(spurious)}")


def cmd_rank(args):
    audit = _audit(args)
    split = _split(args, audit)
    c = _class_index(audit, args.cls)
    if c not in audit.spurious:
        raise SystemExit(f"error: class {c} has no spurious features yet; mark some with `spuraudit mark`.")
    order, scores = audit.ranking(c, split)
    rows = [{"index": int(i), "path": audit.table.path(i), "spuriosity": float(s), "correct": bool(audit.correct[i])}
            for i, s in zip(order, scores)]
    head = rows[: args.show] + (rows[-args.show:] if len(rows) > 2 * args.show else rows[args.show:])
    text = "\n".join(f"{r['spuriosity']:+.2f}  {'ok ' if r['correct'] else 'err'}  {r['path']}" for r in head)
    _emit(args, rows, f"{len(rows)} images of class {c}, low -> high spuriosity (first and last {args.show}):\n{text}")


def cmd_gaps(args):
    audit = _audit(args)
    split = _split(args, audit)
    report = audit.gaps(split, k=args.k, n_boot=args.n_boot)
    data = {"split": split or "all", "k": args.k, "per_class": report.per_class.to_dict("records"),
            "pooled_gap": report.pooled_gap, "pooled_ci": report.pooled_ci,
            "macro_gap": report.macro_gap, "macro_ci": report.macro_ci}
    if report.per_class.empty:
        text = "no ranked classes: mark spurious features first (`spuraudit mark`)"
    else:
        text = report.per_class.to_string(index=False, float_format=lambda v: f"{v:.1f}")
        text += (f"\npooled gap {report.pooled_gap:+.1f} points (95% CI {report.pooled_ci[0]:+.1f} .. "
                 f"{report.pooled_ci[1]:+.1f}); macro {report.macro_gap:+.1f}")
    _emit(args, data, text)


def cmd_verify(args):
    from .verify import verify_dataset

    report = verify_dataset(_project(args), args.model)
    _emit(args, report.as_dict(), report.text())
    return 0 if report.ok or report.baseline_recorded else 1


def cmd_heatmaps(args):
    from .evidence import render_pair_files

    audit = _audit(args)
    split = _split(args, audit)
    c = _class_index(audit, args.cls)
    files = render_pair_files(audit, c, args.feature, Path(args.out), k=args.k, split=split, mode=args.image_set,
                              cam_method=args.cam, attack=not args.no_attack)
    _emit(args, {"files": [str(f) for f in files]}, "\n".join(str(f) for f in files))


def cmd_labels(args):
    """Import or export the project's votes: Salient ImageNet's vote CSV, aggregated JSON, spurious map."""
    from .labels import (export_labels_json, export_salient_csv, export_spurious_map, import_salient_csv,
                         write_json)

    project = _project(args)
    store = project.labels()
    if args.action == "import":
        audit = _audit(args)
        num_features = int(audit.store.head_weight.shape[1])
        report = import_salient_csv(store, args.file, len(audit.class_names), num_features,
                                    allow_duplicate=args.allow_duplicate)
        _emit(args, {"file": report.path, "votes": report.n_votes, "pairs": report.n_pairs,
                     "classes": report.n_classes, "workers": report.n_workers, "answers": report.answers,
                     "warnings": list(report.warnings)}, report.summary())
        return 0
    out = Path(args.file)
    if args.format == "salient-csv":
        n = export_salient_csv(store, out)
        summary = {"file": str(out), "rows": n}
    elif args.format == "json":
        write_json(export_labels_json(store), out)
        summary = {"file": str(out), "pairs": len(store.labels())}
    else:
        spurious = export_spurious_map(store, include_proposed=not args.confirmed_only)
        write_json(spurious, out)
        summary = {"file": str(out), "classes": len(spurious)}
    _emit(args, summary, f"wrote {out}")
    return 0


def cmd_mitigate(args):
    """Run one mitigation method in this process and print the new model folder and its metrics."""
    import os

    if getattr(args, "device", None):
        os.environ["SPURAUDIT_DEVICE"] = args.device  # read by `training.pick_device` inside the method
    from .mitigate import METHODS, get_method, run_mitigation

    if args.list:
        for method in METHODS.values():
            print(f"{method.name}: {method.label}")
            for opt in method.options:
                print(f"    {opt.name} = {opt.default!r}  {opt.help}")
        return 0
    if not args.method:
        raise ValueError("choose a method with --method (see --list)")
    options = {}
    for item in args.option or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--option takes NAME=VALUE, got '{item}'")
        options[key.strip()] = json.loads(value) if _is_json(value) else value  # numbers, true/false
    get_method(args.method).resolve_options(options)  # a bad option fails before any work
    from . import distributed

    if distributed.launched():
        return _mitigate_distributed(args, options)
    bar = _Bar(args.method, args.json)
    project = _project(args)
    folder = run_mitigation(project, args.method, options, progress=bar,
                            parent_folder=args.model)
    bar.close()
    from .modelio import load_model

    _, card = load_model(folder)
    metrics = {k: v for k, v in card.metrics.items() if k != "diagnostics"}
    _emit(args, {"model_folder": str(folder), "name": card.name, "method": args.method, "options": card.options,
                 "metrics": metrics},
          f"new model: {folder}\nmetrics: {json.dumps(_jsonable(metrics))}")
    return 0


def _mitigate_distributed(args, options) -> int:
    """`mitigate` under torchrun: every rank trains (DDP), rank 0 writes the model folder and reports."""
    from . import distributed
    from .mitigate import run_mitigation

    import shutil
    import tempfile

    distributed.setup(args.device)
    bar = _Bar(args.method, args.json or not distributed.is_main())
    project = _project(args)
    if distributed.is_main():
        folder = run_mitigation(project, args.method, options, progress=bar, parent_folder=args.model)
    else:  # the same model as rank 0's, written to a scratch folder that is dropped
        project.cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".rank-", dir=project.cache_dir) as scratch:
            folder = run_mitigation(project, args.method, options, progress=bar, parent_folder=args.model,
                                    out_folder=Path(scratch) / "model")
            shutil.rmtree(folder, ignore_errors=True)
    distributed.barrier()
    bar.close()
    if distributed.is_main():
        _emit(args, {"model_folder": str(folder), "method": args.method}, f"new model: {folder}")
    distributed.finish()
    return 0


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def cmd_compare(args):
    """Parent and mitigated models side by side: accuracy, worst group, pooled and macro gaps."""
    from .mitigate import compare_models, list_mitigated_models

    project = _project(args)
    folders = [project.model_folder] + ([Path(m) for m in args.models] if args.models
                                        else [f for f, _ in list_mitigated_models(project)])
    report = compare_models(project, folders, split=args.split or "test", k=args.k)
    rows = report.summary.to_dict(orient="records")
    _emit(args, {"split": report.split, "k": report.k, "ranked_by": report.ranked_by, "models": rows},
          report.summary.to_string(index=False))
    return 0


def cmd_worker(args):
    import os

    from .jobs.worker import main as worker_main

    if args.device:
        os.environ["SPURAUDIT_DEVICE"] = args.device  # the jobs' processes inherit it (`training.pick_device`)

    argv = ["--db", str(args.db or paths.jobs_db())]
    if args.workers:
        argv += ["--workers", str(args.workers)]
    if args.once:
        argv.append("--once")
    if args.idle_exit:
        argv += ["--idle-exit", str(args.idle_exit)]
    if args.backend:
        argv += ["--backend", args.backend]
    return worker_main(argv)


def app_launch(args) -> tuple[list[str], dict[str, str], str | None]:
    """The Streamlit command line and environment `spuraudit app` starts, and the access token it made (None
    without one). Secrets travel in the environment, never on the command line. Raises SystemExit when a
    server bound beyond this machine would have no sign-in."""
    import os
    import secrets

    from .auth import ALLOW_PICKLE_ENV, SHARED_ENV, TOKEN_ENV, USERS_ENV, is_loopback, read_users

    shared = not is_loopback(args.host)
    env = {k: v for k, v in os.environ.items() if k not in (TOKEN_ENV, USERS_ENV, SHARED_ENV, ALLOW_PICKLE_ENV)}
    token = None
    if args.token:
        token = os.environ.get(TOKEN_ENV) or secrets.token_urlsafe(24)  # a fixed one may come from the env
        env[TOKEN_ENV] = token
    if args.users:
        users_file = Path(args.users).expanduser().resolve()
        if not read_users(users_file):  # checks the whole file now rather than at the first sign-in
            raise SystemExit(f"error: {users_file} holds no users; add one with `spuraudit users add NAME --file {users_file}`.")
        env[USERS_ENV] = str(users_file)
    if shared and not (token or args.users):
        raise SystemExit(
            f"error: --host {args.host} lets other machines reach the app, so it needs sign-in: add --token (a random "
            "access token, printed at start) and/or --users FILE (see `spuraudit users add`). Without --host the app "
            "listens on 127.0.0.1 only."
        )
    if shared:
        env[SHARED_ENV] = "1"
    if args.allow_pickle_uploads:
        env[ALLOW_PICKLE_ENV] = "1"
    if getattr(args, "device", None):
        env["SPURAUDIT_DEVICE"] = args.device  # the workers the app starts, and their jobs, compute there
    roots = [Path(r).expanduser().resolve() for r in (args.data_root or [Path.home()])]
    missing = [str(r) for r in roots if not r.is_dir()]
    if missing:
        raise SystemExit(f"error: data roots {missing} are not folders.")
    env[paths.DATA_ROOTS_ENV] = os.pathsep.join(str(r) for r in roots)
    app = Path(__file__).resolve().parent.parent / "app.py"
    argv = [sys.executable, "-m", "streamlit", "run", str(app), "--server.address", args.host,
            "--server.port", str(args.port)] + _app_config_flags(app.parent / ".streamlit" / "config.toml")
    if shared:
        argv += ["--server.headless", "true"]  # a server: no browser to open on its own screen
    return argv, env, token


def _app_config_flags(config: Path) -> list[str]:
    """The app's own .streamlit/config.toml as command-line flags: Streamlit reads that file only from the
    current folder, and `spuraudit app` runs from wherever the user is (their home for projects)."""
    import tomllib

    try:
        sections = tomllib.loads(config.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        sections = {}
    server = sections.setdefault("server", {})
    server.setdefault("fileWatcherType", "none")  # never watch the user's folder
    server.pop("headless", None)  # on this machine the browser may open by itself; a shared server says so below
    flags = []
    for section, values in sections.items():
        for name, value in values.items():
            text = str(value).lower() if isinstance(value, bool) else str(value)
            flags += [f"--{section}.{name}", text]
    return flags


def cmd_app(args):
    import subprocess

    argv, env, token = app_launch(args)
    if args.demo and not (paths.projects_dir() / "demo" / "project.json").is_file():
        from .jobs import JobQueue, ensure_worker

        queue = JobQueue(paths.jobs_db())
        queue.recover_stale()
        if not any(j.kind == DEMO_BUILD and j.status in ("queued", "running") for j in queue.list()):
            queue.submit(DEMO_BUILD, {"base": str(paths.home())}, title="Build the demo")
        ensure_worker(paths.jobs_db())
        print("building the demo in the background; the app's Home page shows its progress", file=sys.stderr)
    shown = "localhost" if args.host in ("127.0.0.1", "::1") else args.host
    if token:
        print(f"sign in with the access token: http://{shown}:{args.port}/?token={token}", file=sys.stderr)
    print(f"data roots (where typed paths and manifests may point): {env[paths.DATA_ROOTS_ENV]}", file=sys.stderr)
    return subprocess.call(argv, env=env)


def cmd_users(args):
    """Add a person to a users file (the password is asked for, or read from stdin when piped), or list them."""
    import getpass

    from .auth import UsersFileError, add_user, read_users

    try:
        if args.action == "list":
            users = read_users(args.file)
            print("\n".join(f"{u.name}\t{u.role}" for u in users.values()) or "no users")
            return 0
        if not args.name:
            raise SystemExit("error: give the user's name: spuraudit users add NAME --role annotator")
        if sys.stdin.isatty():
            password = getpass.getpass(f"password for {args.name}: ")
            if getpass.getpass("again: ") != password:
                raise SystemExit("error: the two passwords differ; nothing was written.")
        else:
            password = sys.stdin.readline().rstrip("\r\n")
        new = add_user(args.file, args.name, args.role, password)
    except UsersFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{'added' if new else 'updated'} {args.name} ({args.role}) in {args.file}")
    return 0


def cmd_relocate(args):
    from .data.relocate import relocate

    project = _project(args)
    result = relocate(project.folder, args.dataset_root)
    project.save()  # a new project.json: running apps reopen the project and read the new root
    _emit(args, result, f"{project.name}: images now read from {result['root']} (was {result['old_root']})")


def cmd_thumbs(args):
    from . import thumbnails

    project = _project(args)
    bar = _Bar("thumbnails", args.json)
    try:
        done = thumbnails.warm(project, size=args.size, progress=bar)
    finally:
        bar.close()
    _emit(args, {"thumbnails": done, "folder": str(thumbnails.thumbs_dir(project.folder, args.size))},
          f"{done:,} thumbnails ready in {thumbnails.thumbs_dir(project.folder, args.size)}")


# ---- feature sensitivity and several models of one dataset -------------------------------------
def cmd_sensitivity(args):
    """Masked corruptions per feature, core/spurious accuracy per class; saved for the app."""
    from .sensitivity import measure_sensitivity, save_report

    project = _project(args)
    audit_classes = None
    if args.cls:
        from .audit import Audit

        audit = Audit.open(project, args.model)
        audit_classes = [_class_index(audit, value) for value in args.cls]
    bar = _Bar("sensitivity", args.json)
    try:
        report = measure_sensitivity(project, classes=audit_classes, split=args.split, k=args.k,
                                     max_images=args.max_images, sigma=args.sigma, seed=args.seed,
                                     model_folder=args.model, progress=bar)
    finally:
        bar.close()
    path = save_report(project, report, args.model, report.params["split"])
    shown = ["class", "feature", "label", "n", "acc_clean"] + [c for c in report.features.columns if "drop_" in c]
    text = (report.features[shown].to_string(index=False, float_format=lambda v: f"{v:.1f}")
            + "\n\n" + (report.classes.to_string(index=False, float_format=lambda v: f"{v:.2f}")
                         if len(report.classes) else "no class has core or spurious labels: no core/spurious accuracy")
            + f"\n\nsaved: {path}")
    _emit(args, {**report.to_dict(), "saved": str(path)}, text)
    return 0


def cmd_models(args):
    """Add, list or remove a project's further models, or report across all of them."""
    from .multimodel import add_checkpoint, model_table, models_report

    project = _project(args)
    if args.action == "add":
        if args.checkpoint:
            if not args.arch:
                raise ValueError("--checkpoint needs --arch (e.g. spuraudit:cifar_resnet56)")
            folder = add_checkpoint(project, args.checkpoint, args.arch, name=args.name, size=args.input_size,
                                    mean=args.mean, std=args.std, trust_pickle=args.trust_pickle)
        elif args.folder:
            folder = project.add_model(Path(args.folder) if Path(args.folder).is_dir()
                                       else paths.models_dir() / args.folder)
        else:
            raise ValueError("give a model folder, or --checkpoint and --arch to import one")
        if args.extract:
            bar = _Bar("features", args.json)
            try:
                project.extract(model_folder=folder, progress=bar)
            finally:
                bar.close()
    elif args.action == "remove":
        if not args.folder:
            raise ValueError("give the model folder to take out of the project")
        target = Path(args.folder) if Path(args.folder).is_dir() else paths.models_dir() / args.folder
        if not project.remove_model(target):
            raise ValueError(f"{args.folder} is not one of the project's added models (see `spuraudit models list`)")
    if args.action == "report":
        report = models_report(project, split=args.split, k=args.k, proxy=args.proxy)
        text = (report.per_class.to_string(index=False, float_format=lambda v: f"{v:.1f}")
                + "\n\nPearson r of per-class gaps\n" + report.pearson.round(3).to_string()
                + "\n\nSpearman rho of per-class gaps\n" + report.spearman.round(3).to_string()
                + (f"\n\nnot extracted yet (left out): {', '.join(report.missing)}" if report.missing else "")
                + (f"\nranked by a proxy feature: classes {report.proxy_classes}" if report.proxy_classes else ""))
        _emit(args, report.to_dict(), text)
        return 0
    table = model_table(project)
    _emit(args, {"models": table.to_dict(orient="records")}, table.to_string(index=False))
    return 0


def _add_sensitivity_and_models_commands(add) -> None:
    sp = add("sensitivity", cmd_sensitivity, "accuracy drops under masked corruptions per feature; core and "
             "spurious accuracy per class (Salient ImageNet noise)", split=True)
    sp.add_argument("--class", dest="cls", nargs="*", help="class indices or names (default: every class)")
    sp.add_argument("-k", type=int, default=50, help="images per feature: the class's top-k by its activation")
    sp.add_argument("--max-images", type=int, default=200, help="images per class for core/spurious accuracy")
    sp.add_argument("--sigma", type=float, default=0.25, help="σ of the Gaussian noise")
    sp.add_argument("--seed", type=int, default=0)

    sp = add("models", cmd_models, "several models of the project's classes: add, list, remove, report "
             "(effective robustness, gap correlations)", split=True)
    sp.add_argument("action", choices=["add", "list", "remove", "report"])
    sp.add_argument("folder", nargs="?", help="add/remove: a model folder (or its name under models/)")
    sp.add_argument("--checkpoint", help="add: import this checkpoint of the project's classes")
    sp.add_argument("--arch", help="add --checkpoint: the architecture, e.g. spuraudit:cifar_resnet56")
    sp.add_argument("--name", help="add --checkpoint: the model folder's name under models/")
    sp.add_argument("--input-size", type=int, default=None, help="add --checkpoint: pixels (default: the arch's)")
    sp.add_argument("--mean", default=None, help="add --checkpoint: comma-separated normalisation mean")
    sp.add_argument("--std", default=None, help="add --checkpoint: comma-separated normalisation std")
    sp.add_argument("--trust-pickle", action="store_true", help="add --checkpoint: allow full pickle loading")
    sp.add_argument("--extract", action="store_true", help="add: extract the new model's features now")
    sp.add_argument("-k", type=int, default=None, help="report: images per end of each ranking (default gap_k)")
    sp.add_argument("--proxy", action="store_true",
                    help="report: rank classes without spurious labels by a proxy feature (largest |triage gap|)")


# ---- parser ----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spuraudit", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = p.add_subparsers(dest="command", required=True)

    def add(name, fn, help_text, project=True, split=False, json_out=True):
        sp = sub.add_parser(name, help=help_text, description=help_text.replace("%%", "%"))
        sp.set_defaults(func=fn)
        if project:
            sp.add_argument("--project", "-p", default="demo", help="project name (under projects/) or folder")
            sp.add_argument("--model", help="model folder to audit instead of the project's own model")
        if split:
            sp.add_argument("--split", default=None, help="train / val / test / all (default: test when present)")
        if json_out:
            sp.add_argument("--json", action="store_true", help="print the result as JSON")
        return sp

    sp = add("demo", cmd_demo, "build the built-in demo: ten digit classes with planted cues, a small CNN, extracted features", project=False)
    sp.add_argument("--seed", type=int, default=0)

    sp = add("create", cmd_create, "create a project from your dataset and checkpoint", project=False)
    sp.add_argument("--name", required=True, help="project name")
    sp.add_argument("--data", required=True,
                    help="ImageFolder root, CSV manifest, Waterbirds metadata.csv (detected), or a .zip of one")
    sp.add_argument("--image-root", help="folder that relative CSV paths start from (default: the CSV's folder)")
    sp.add_argument("--group-columns", nargs="*", help="CSV attribute columns that define groups")
    sp.add_argument("--waterbirds", action="store_true",
                    help="(kept for old scripts) Waterbirds metadata.csv is recognised by its columns")
    sp.add_argument("--arch", required=True,
                    help="e.g. torchvision:resnet50, timm:resnet18, spuraudit:cifar_resnet20, robustness:resnet50, "
                         "torchscript")
    sp.add_argument("--checkpoint", required=True, help="weights file (.pt/.pth/.th/.safetensors, TorchScript)")
    sp.add_argument("--model-name", help="name of the model folder under models/")
    sp.add_argument("--class-names", help="comma-separated, in the head's order (default: the dataset's)")
    sp.add_argument("--input-size", type=int, default=None, help="pixels (default: the architecture's)")
    sp.add_argument("--mean", default=None, help="comma-separated (default: the architecture's usual weights')")
    sp.add_argument("--std", default=None, help="comma-separated (default: the architecture's usual weights')")
    sp.add_argument("--trust-pickle", action="store_true",
                    help="allow full pickle loading (can run code in the file): only for files you trust")
    sp.add_argument("--linear-probe", action="store_true",
                    help="the checkpoint is a backbone: fit a linear head on the training split")
    sp.add_argument("--class-balanced", action="store_true", help="linear probe: weight classes equally")
    sp.add_argument("--probe-train-fraction", type=float, default=None,
                    help="linear probe on a dataset without a train split: this share becomes train, at random")
    sp.add_argument("--replace", action="store_true",
                    help="replace the dataset and model of an existing project of this name (its votes are "
                         "kept only when the model is the same; otherwise they are moved aside)")
    sp.add_argument("--feature-layer", help="TorchScript: the submodule whose output is the feature map")
    sp.add_argument("--head", help="TorchScript: the final linear layer (default: the last one)")

    sp = add("extract", cmd_extract, "extract pooled features, logits and predictions into the feature store")
    sp.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    sp.add_argument("--batch-size", type=int, default=128)
    sp.add_argument("--workers", type=int, default=None, help="data-loading processes")
    sp.add_argument("--precision", choices=("fp32", "bf16", "fp16"),
                    help="autocast precision (default: fp16 on CUDA, fp32 on the CPU)")
    sp.add_argument("--decode", choices=("pil", "device"),
                    help="decode JPEGs in batches on the device, or with PIL in the workers (default: device on CUDA)")

    add("summary", cmd_summary, "accuracy, per-class and per-group accuracy", split=True)

    sp = add("top-features", cmd_top_features, "list each class's top-k neural features by importance", split=True)
    sp.add_argument("--class", dest="cls", help="class index or name (default: every class)")
    sp.add_argument("-k", type=int, default=5)
    sp.add_argument("--image-set", default="correct", choices=["correct", "predicted", "labelled"])

    sp = add("heatmaps", cmd_heatmaps, "render top images, NAMs, CAMs and feature attacks of a feature to PNG", split=True)
    sp.add_argument("--class", dest="cls", required=True)
    sp.add_argument("--feature", type=int, required=True)
    sp.add_argument("--out", required=True, help="folder for the PNG files")
    sp.add_argument("-k", type=int, default=8)
    sp.add_argument("--image-set", default="correct", choices=["correct", "predicted", "labelled"])
    sp.add_argument("--cam", default="gradcam", help="CAM method from pytorch-grad-cam")
    sp.add_argument("--no-attack", action="store_true", help="skip the (slower) feature attack")

    sp = add("mark", cmd_mark, "label (class, feature) pairs core or spurious")
    sp.add_argument("--class", dest="cls", type=int, required=True)
    sp.add_argument("--feature", type=int, nargs="+", required=True)
    sp.add_argument("--as", dest="as_", default="spurious",
                    choices=["spurious", "core", "background", "separate_object", "main_object"])
    sp.add_argument("--annotator", default="cli")
    sp.add_argument("--confidence", type=int, default=None)
    sp.add_argument("--reason", default="")

    sp = add("rank", cmd_rank, "a class's images sorted by spuriosity (low -> high)", split=True)
    sp.add_argument("--class", dest="cls", required=True)
    sp.add_argument("--show", type=int, default=5, help="images to print at each end")

    sp = add("gaps", cmd_gaps, "per-class and pooled spurious gaps with bootstrap 95%% CIs", split=True)
    sp.add_argument("-k", type=int, default=100, help="images per end of each ranking (clamped to n_c // 2)")
    sp.add_argument("--n-boot", type=int, default=1000)

    sp = add("labels", cmd_labels, "import or export votes: Salient ImageNet CSV, aggregated JSON, spurious map")
    sp.add_argument("action", choices=["import", "export"])
    sp.add_argument("file", help="the CSV to import, or the file to write")
    sp.add_argument("--format", default="salient-csv", choices=["salient-csv", "json", "spurious-map"],
                    help="export format: Salient ImageNet's vote CSV, aggregated labels, or {class: [features]}")
    sp.add_argument("--allow-duplicate", action="store_true", help="import a file that was imported before")
    sp.add_argument("--confirmed-only", action="store_true",
                    help="spurious map without machine proposals no human has confirmed")

    from .autolabel.cli import cmd_autolabel, configure_autolabel_parser

    sp = add("autolabel", cmd_autolabel, "propose core/spurious labels with the segmentation or CLIP labeler",
             split=True)
    configure_autolabel_parser(sp)

    from .collisions_cli import configure_collision_parsers  # collisions, flags, crop, marks

    configure_collision_parsers(add)

    sp = add("mitigate", cmd_mitigate, "train a mitigated model (masktune, head_tuning, error_tuning, dfr)")
    sp.add_argument("--method", help="method name (see --list)")
    sp.add_argument("--option", "-o", action="append", metavar="NAME=VALUE", help="a method option (repeatable)")
    sp.add_argument("--list", action="store_true", help="list the methods and their options with defaults")
    sp.add_argument("--device", help="cpu or cuda (default: cuda when available); under torchrun, one GPU per process")

    sp = add("compare", cmd_compare, "the project's model and its mitigated models side by side", split=True)
    sp.add_argument("--models", nargs="*", help="model folders (default: every mitigated model of the project's)")
    sp.add_argument("-k", type=int, default=100, help="images per end of each ranking (clamped to n_c // 2)")

    add("verify", cmd_verify, "check the images against the record kept when their features were extracted "
        "(missing or changed files)")

    sp = add("worker", cmd_worker, "run background-job workers", project=False, json_out=False)
    sp.add_argument("--db", help="job database (default: <home>/jobs.db)")
    sp.add_argument("--workers", type=int, default=1)
    sp.add_argument("--once", action="store_true", help="run the queued jobs, then exit")
    sp.add_argument("--idle-exit", type=float, help="exit after this many idle seconds")
    sp.add_argument("--backend", choices=("local", "ray"),
                    help="run jobs in local processes (default) or on a Ray cluster ($SPURAUDIT_RAY_ADDRESS)")
    sp.add_argument("--device", help="device of the jobs, e.g. cpu, cuda, cuda:1 (default: cuda when available)")

    sp = add("relocate", cmd_relocate, "point a project at its images after they moved (dataset.csv is kept)")
    sp.add_argument("--dataset-root", required=True, help="the folder that now holds the dataset's images")
    sp = add("thumbs", cmd_thumbs, "render the gallery thumbnails of every image ahead of time")
    sp.add_argument("--size", type=int, default=96, help="thumbnail size in pixels (the app shows 96)")
    sp = add("app", cmd_app, "start the web app (on this machine only, unless --host says otherwise)",
             project=False, json_out=False)
    sp.add_argument("--host", default="127.0.0.1",
                    help="address to listen on (default 127.0.0.1: this machine only); any other needs --token "
                         "and/or --users")
    sp.add_argument("--port", type=int, default=8501)
    sp.add_argument("--device", help="device of the background jobs, e.g. cpu, cuda, cuda:1 (default: cuda when "
                                     "available); the Jobs page shows where each job runs")
    sp.add_argument("--token", action="store_true",
                    help="require a random access token (printed at start; SPURAUDIT_AUTH_TOKEN fixes one)")
    sp.add_argument("--users", metavar="FILE", help="require sign-in with the users in FILE (spuraudit users add)")
    sp.add_argument("--data-root", action="append", metavar="DIR",
                    help="a folder typed paths and CSV manifests may point into (repeatable; default: your home "
                         "folder)")
    sp.add_argument("--allow-pickle-uploads", action="store_true",
                    help="offer 'I trust this file' (full pickle loading, can run code) to admins of a shared "
                         "server; without it, checkpoints from browsers load as tensors only")
    sp.add_argument("--demo", action="store_true", help="build the built-in demo first if it is not there yet")

    sp = add("users", cmd_users, "add a person to a users file for a shared app, or list them", project=False,
             json_out=False)
    sp.add_argument("action", choices=["add", "list"])
    sp.add_argument("name", nargs="?", help="the user's name (letters, digits, '.', '_', '@', '-')")
    sp.add_argument("--role", default="annotator", choices=["viewer", "annotator", "admin"],
                    help="viewer: look; annotator: also vote; admin: also create projects, upload, launch jobs")
    sp.add_argument("--file", default="users.tsv", help="the users file (default: users.tsv)")
    _add_sensitivity_and_models_commands(add)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .data.table import DatasetError
    from .labels import LabelStoreError
    from .modelio import CheckpointError

    try:
        return args.func(args) or 0
    except (DatasetError, CheckpointError, LabelStoreError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # full disk, unreadable file: the message names the path
        detail = str(exc) if exc.filename is None or str(exc.filename) in str(exc) else f"{exc.filename}: {exc}"
        print(f"error: {detail}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        text = str(exc).lower()
        if "streamwriter" not in text and "unexpected pos" not in text and "file write failed" not in text:
            raise
        # torch.save's zip writer reports a failed write without an errno or a file name
        print(f"error: a file could not be written ({str(exc).splitlines()[0]}): the disk is probably full. "
              "Nothing half-written was kept; free some space and run the command again.", file=sys.stderr)
        return 2
    except sqlite3.Error as exc:
        print(f"error: a database could not be used ({exc}); the disk may be full or the file damaged.",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
