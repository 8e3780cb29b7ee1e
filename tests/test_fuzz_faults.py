"""Faults and bad input: odd file names, huge numbers, full disks, lost job databases, clashing names.

Every case goes through the real CLI (in process, or in a subprocess where a resource limit must apply),
real SQLite files and real worker processes, and checks four things: the message names the file, row or
name and what to do; nothing outside the home was touched; nothing half-made remains; earlier data is
intact.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from spuraudit.cli import main
from spuraudit.jobs import JobQueue
from spuraudit.jobs.util import child_env

from .fuzzcases import bad_input

ROOT = Path(__file__).resolve().parents[1]
COLOURS = {"green": (30, 200, 40), "red": (220, 30, 30)}
ARGS_28 = ["--arch", "spuraudit:digitnet", "--input-size", "28", "--mean", "0.5,0.5,0.5", "--std", "0.5,0.5,0.5"]


# ---- helpers -------------------------------------------------------------------------------------
def _square(path: Path, colour, seed: int, size: int = 28) -> None:
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour)[None, None, :] + rng.integers(-25, 25, (size, size, 3)), 0, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8)).save(path)


def _colour_folder(root: Path, per_class: int = 4, subdir: str = "") -> Path:
    for name, colour in COLOURS.items():
        for i in range(per_class):
            _square(root / name / subdir / f"{i}.png", colour, seed=i + 100 * len(name))
    return root


def _weights(path: Path, seed: int = 0) -> Path:
    from spuraudit.modelio.digitnet import DigitNet

    torch.manual_seed(seed)
    torch.save(DigitNet(2).state_dict(), path)
    return path


class World:
    """tmp_path split into `inputs/` (the user's files) and `home/` (SPURAUDIT_HOME); remembers every file
    outside the home so a test can check that none was changed, added or removed."""

    def __init__(self, tmp_path: Path, monkeypatch):
        self.root = tmp_path
        self.inputs = tmp_path / "inputs"
        self.home = tmp_path / "home"
        self.inputs.mkdir()
        self.home.mkdir()
        monkeypatch.setenv("SPURAUDIT_HOME", str(self.home))
        monkeypatch.chdir(self.inputs)
        self.before: dict[str, tuple[int, int]] | None = None

    def _outside(self) -> dict[str, tuple[int, int]]:
        out = {}
        for dirpath, dirnames, filenames in os.walk(os.fsencode(self.root)):
            if Path(os.fsdecode(dirpath)) == self.home:
                dirnames[:] = []
                continue
            for f in filenames:
                full = os.path.join(dirpath, f)
                st = os.lstat(full)
                out[repr(full)] = (st.st_size, st.st_mtime_ns)
        return out

    def freeze(self) -> None:
        self.before = self._outside()

    def assert_outside_untouched(self) -> None:
        assert self.before is not None and self._outside() == self.before

    def assert_nothing_half_made(self) -> None:
        leftovers = [p for p in self.home.rglob("*")
                     if p.name.endswith(".tmp") or p.name.startswith((".creating-", ".replaced-", ".tmp-", ".upload-"))]
        assert leftovers == []

    def snapshot(self) -> dict[str, bytes]:
        """Contents of every file in the home (to compare earlier data before and after)."""
        return {str(p.relative_to(self.home)): p.read_bytes() for p in sorted(self.home.rglob("*"))
                if p.is_file() and not p.name.startswith("labels.db")}


@pytest.fixture
def world(tmp_path, monkeypatch) -> World:
    return World(tmp_path, monkeypatch)


def _cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _create(world: World, capsys, name: str, data: Path, weights: Path, *extra) -> tuple[int, str, str]:
    return _cli(capsys, "create", "--name", name, "--data", data, "--checkpoint", weights, *ARGS_28, *extra)


def _votes(project_folder: Path) -> list[tuple]:
    with sqlite3.connect(project_folder / "labels.db") as conn:
        return conn.execute("SELECT class_index, feature_index, answer, annotator FROM votes ORDER BY id").fetchall()


# The demo CNN at width 2 (a 13 kB state dict), so a dataset table can be larger than the weights.
TINY_ARCH = textwrap.dedent("""
    import spuraudit.modelio.registry as registry
    from spuraudit.modelio.digitnet import DigitNet
    registry._REGISTRY["test:digitnet2"] = registry.Architecture(
        name="test:digitnet2", build=lambda n: DigitNet(n, width=2),
        split=lambda net: registry.Split(trunk=net.features, head=net.fc), default_input_size=(28, 28))
""")
TINY_ARGS = ["--arch", "test:digitnet2", "--input-size", "28", "--mean", "0.5,0.5,0.5", "--std", "0.5,0.5,0.5"]


def _limited_cli(world: World, argv: list[str], max_file_bytes: int, timeout: float = 240,
                 setup: str = "") -> subprocess.CompletedProcess:
    """The CLI in a child process whose files cannot grow past `max_file_bytes`: writes beyond fail with
    EFBIG, as on a full disk (no privileges or special file systems needed). SIGXFSZ is ignored so the
    write fails instead of killing the process."""
    code = textwrap.dedent(f"""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, ({max_file_bytes}, {max_file_bytes}))
        from spuraudit.cli import main
    """) + setup + textwrap.dedent(f"""
        sys.exit(main({[str(a) for a in argv]!r}))
    """)
    env = child_env({"SPURAUDIT_HOME": str(world.home), "PYTHONDONTWRITEBYTECODE": "1"})
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=world.inputs, env=env,
                          timeout=timeout)


# ---- datasets ------------------------------------------------------------------------------------
@bad_input("datasets", "an ImageFolder holding one file whose name is not UTF-8 (`caf\\xe9.jpg` in Latin-1)",
           "the dataset loads without it; `skipped` names the file (its bytes) and how to rename it")
def test_a_file_name_that_is_not_utf8_is_skipped_and_named(world, capsys):
    data = _colour_folder(world.inputs / "data")
    with open(os.path.join(os.fsencode(data / "red"), b"caf\xe9.jpg"), "wb") as fh:
        fh.write((data / "red" / "0.png").read_bytes())
    weights = _weights(world.inputs / "w.pt")
    world.freeze()
    code, out, err = _create(world, capsys, "accents", data, weights, "--json")
    assert code == 0, err
    created = json.loads(out)
    assert created["images"] == 8
    (name, reason), = [s for s in created["skipped"] if "caf" in s[0]]
    assert "caf\\xe9.jpg" in name and "not UTF-8" in reason and "rename" in reason
    world.assert_outside_untouched()
    world.assert_nothing_half_made()

    from spuraudit.create import preview_dataset  # what the Add-data page shows

    preview = preview_dataset(data)
    assert len(preview.table) == 8 and any("caf\\xe9" in f for f in preview.skipped_frame["file"])


@bad_input("datasets", "an ImageFolder with only one class folder",
           "refused: the message says it has one class and a dataset needs at least 2; nothing is written")
def test_a_one_class_folder_says_it_needs_two_classes(world, capsys):
    data = world.inputs / "only"
    for i in range(3):
        _square(data / "cats" / f"{i}.png", (10, 10, 10), i)
    weights = _weights(world.root / "w.pt")
    world.freeze()
    code, _, err = _create(world, capsys, "one", data, weights)
    assert code == 2 and "one class" in err and "at least 2" in err and "cats" in err
    world.assert_outside_untouched()
    assert list(world.home.iterdir()) == []


@bad_input("images", "a 16-bit PNG, a JPEG with an EXIF rotation, and `.hidden.jpg` dotfiles in class folders",
           "the 16-bit image keeps its grey levels, the JPEG is upright, dotfiles are not images")
def test_sixteen_bit_exif_and_dotfiles(world):
    from spuraudit.data import read_imagefolder
    from spuraudit.data.images import load_rgb

    data = _colour_folder(world.inputs / "data", per_class=2)
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(ramp).save(data / "red" / "deep.png")
    assert Image.open(data / "red" / "deep.png").mode.startswith("I;16")
    rgb = np.asarray(load_rgb(data / "red" / "deep.png"))
    assert (rgb == 255).mean() < 0.01 and 120 < rgb.mean() < 135  # a ramp, not a white square
    wide = Image.new("RGB", (40, 20), (200, 0, 0))
    exif = wide.getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise to view"
    wide.save(data / "green" / "turned.jpg", exif=exif)
    assert load_rgb(data / "green" / "turned.jpg").size == (20, 40)
    (data / "green" / ".hidden.jpg").write_bytes((data / "green" / "0.png").read_bytes())
    (data / "green" / ".thumbs").mkdir()
    (data / "green" / ".thumbs" / "a.png").write_bytes((data / "green" / "0.png").read_bytes())
    world.freeze()
    table = read_imagefolder(data)
    assert sorted(Path(p).name for p in table.paths) == ["0.png", "0.png", "1.png", "1.png", "deep.png", "turned.jpg"]
    world.assert_outside_untouched()


@bad_input("manifests", "a CSV listing one image twice with two different labels, or with empty and NaN labels",
           "refused naming the lines (both lines of the conflict); a repeat with the same label counts once")
def test_conflicting_duplicates_and_missing_labels_name_the_lines(world, capsys):
    data = _colour_folder(world.inputs / "data", per_class=2)
    weights = _weights(world.root / "w.pt")
    csv = data / "labels.csv"
    rows = ["path,label", "red/0.png,red", "green/0.png,green", "red/1.png,red", "red/0.png,green"]
    csv.write_text("\n".join(rows) + "\n")
    world.freeze()
    code, _, err = _create(world, capsys, "dupes", csv, weights)
    assert code == 2 and "lines 2 and 5" in err and "red/0.png" in err
    csv.write_text("path,label\nred/0.png,red\ngreen/0.png,\nred/1.png,NaN\ngreen/1.png,green\n")
    world.freeze()
    code, _, err = _create(world, capsys, "dupes", csv, weights)
    assert code == 2 and "line(s) 3, 4" in err and "no label" in err
    assert not (world.home / "projects").exists() and not (world.home / "models").exists()
    world.assert_outside_untouched()
    csv.write_text("path,label\nred/0.png,red\ngreen/0.png,green\nred/0.png,red\n")
    code, out, err = _create(world, capsys, "dupes", csv, weights, "--json")
    assert code == 0, err
    created = json.loads(out)
    assert created["images"] == 2 and any("line 4" in reason for _, reason in created["skipped"])


# ---- names ---------------------------------------------------------------------------------------
@bad_input("names", "project names `..`, `.`, `проект`, 300 characters, and `a/b` next to an existing `a-b`",
           "refused before any work with a message naming the name; no model folder is imported")
@pytest.mark.parametrize("name", ["..", ".", "проект", "x" * 300, "a/b"])
def test_bad_project_names_are_refused_up_front(world, capsys, name):
    data = _colour_folder(world.inputs / "data", per_class=2)
    weights = _weights(world.root / "w.pt")
    if name == "a/b":
        assert _create(world, capsys, "a-b", data, weights)[0] == 0
    before = world.snapshot()
    world.freeze()
    code, _, err = _create(world, capsys, name, data, weights)
    assert code == 2 and "error: " in err
    assert "Traceback" not in err and len(err) < 600
    if name == "a/b":
        assert "'a/b'" in err and "a-b" in err and "choose another name" in err
    elif len(name) > 100:
        assert "300 characters" in err
    else:
        assert repr(name) in err
    assert world.snapshot() == before  # no model folder, no project: nothing new, nothing changed
    world.assert_outside_untouched()
    world.assert_nothing_half_made()


@bad_input("names", "`spuraudit create` with the name of an existing project (with and without `--replace`)",
           "refused without --replace; with it, votes stay when the model is the same, else are moved aside")
def test_create_over_an_existing_project_needs_replace(world, capsys):
    data = _colour_folder(world.inputs / "data", per_class=2)
    weights, other = _weights(world.root / "w.pt"), _weights(world.root / "other.pt", seed=1)
    assert _create(world, capsys, "mine", data, weights)[0] == 0
    folder = world.home / "projects" / "mine"
    assert _cli(capsys, "mark", "-p", "mine", "--class", "0", "--feature", "3", "4")[0] == 0
    votes = _votes(folder)
    before = world.snapshot()
    world.freeze()
    code, _, err = _create(world, capsys, "mine", data, other)
    assert code == 2 and "already exists" in err and "--replace" in err
    assert world.snapshot() == before and _votes(folder) == votes
    # the same weights again: the votes still describe this model's features and stay
    code, out, err = _create(world, capsys, "mine", data, weights, "--replace")
    assert code == 0, err
    assert "kept the project's votes" in out and _votes(folder) == votes
    # another model: the votes are moved aside, not lost, and the project starts without votes
    code, out, err = _create(world, capsys, "mine", data, other, "--replace")
    assert code == 0, err
    moved = list(folder.glob("labels-before-*.db"))
    assert len(moved) == 1 and str(moved[0]) in out
    assert not (folder / "labels.db").exists()
    with sqlite3.connect(moved[0]) as conn:
        kept = conn.execute("SELECT class_index, feature_index, answer, annotator FROM votes ORDER BY id").fetchall()
    assert kept == votes
    assert (world.home / "models" / "mine-model").is_dir()  # the earlier models stay
    world.assert_outside_untouched()
    world.assert_nothing_half_made()


# ---- full disk -----------------------------------------------------------------------------------
@bad_input("disk", "`spuraudit mark` while the disk is full (files cannot grow)",
           "a message says the votes could not be saved in labels.db and the disk is probably full; earlier "
           "votes are intact")
def test_mark_on_a_full_disk(world, capsys):
    data = _colour_folder(world.inputs / "data", per_class=2)
    assert _create(world, capsys, "p", data, _weights(world.root / "w.pt"))[0] == 0
    assert _cli(capsys, "mark", "-p", "p", "--class", "1", "--feature", "7")[0] == 0
    folder = world.home / "projects" / "p"
    votes = _votes(folder)
    world.freeze()
    done = _limited_cli(world, ["mark", "-p", "p", "--class", "0", "--feature", "1", "2"], max_file_bytes=2048)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert str(folder / "labels.db") in done.stderr and "disk is probably full" in done.stderr
    assert _votes(folder) == votes
    world.assert_outside_untouched()


@bad_input("disk", "`spuraudit create` on a full disk: failing while writing the model, and while writing the "
                   "project after the model was written",
           "'disk full while writing <path>'; no model folder, no project folder and no .tmp file remains")
def test_create_on_a_full_disk_leaves_nothing(world, capsys, monkeypatch):
    import spuraudit.modelio.registry as registry
    from spuraudit.modelio.digitnet import DigitNet

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # the test architecture goes after
    exec(TINY_ARCH, {})
    weights = world.root / "w.pt"
    torch.save(DigitNet(2, width=2).state_dict(), weights)
    # paths long enough that dataset.csv outgrows the weights file: the second run fails at the project
    data = _colour_folder(world.inputs / "data", per_class=60, subdir="d" * 200)
    code, _, err = _cli(capsys, "create", "--name", "earlier", "--data", data, "--checkpoint", weights, *TINY_ARGS)
    assert code == 0, err  # earlier data that must survive
    before = world.snapshot()
    csv_size = (world.home / "projects" / "earlier" / "dataset.csv").stat().st_size
    weights_size = weights.stat().st_size
    assert csv_size > weights_size + 8192
    world.freeze()
    for limit, where in ((weights_size // 2, "models"), (weights_size + 4096, "projects")):
        done = _limited_cli(world, ["create", "--name", "new", "--data", data, "--checkpoint", weights, *TINY_ARGS],
                            max_file_bytes=limit, setup=TINY_ARCH)
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr
        assert "disk full while writing" in done.stderr or "the disk may be full" in done.stderr
        assert str(world.home / where) in done.stderr
        assert world.snapshot() == before
        assert not (world.home / "projects" / "new").exists() and not (world.home / "models" / "new-model").exists()
        world.assert_outside_untouched()
        world.assert_nothing_half_made()


# ---- votes ---------------------------------------------------------------------------------------
HEADER = "WorkerId,Input.wordnet_id,Input.class_index,Input.feature_index,Input.feature_rank,Answer.main," \
         "Answer.confidence,Answer.reasons"


@pytest.fixture
def voted(world, capsys) -> Path:
    """A project `p` with extracted features and two votes; returns its folder."""
    data = _colour_folder(world.inputs / "data", per_class=3)
    assert _create(world, capsys, "p", data, _weights(world.root / "w.pt"))[0] == 0
    assert _cli(capsys, "extract", "-p", "p", "--workers", "0", "--device", "cpu")[0] == 0
    assert _cli(capsys, "mark", "-p", "p", "--class", "1", "--feature", "5", "6")[0] == 0
    return world.home / "projects" / "p"


@bad_input("votes", "a vote CSV whose class index has 5,000 digits",
           "refused naming the file, the row and the column, with the digit count; no vote is imported")
def test_a_five_thousand_digit_index_names_the_row(world, capsys, voted):
    votes = _votes(voted)
    csv = world.inputs / "votes.csv"
    csv.write_text(f"{HEADER}\nann,n01,0,3,1,background,4,ok\nann,n01,{'9' * 5000},3,1,background,4,ok\n")
    before = world.snapshot()
    world.freeze()
    code, _, err = _cli(capsys, "labels", "import", csv, "-p", "p")
    assert code == 2 and str(csv) in err and "row 3" in err and "Input.class_index" in err
    assert "5000 digits" in err and "Nothing was imported" in err and len(err) < 500
    # the Review page passes the upload's bytes to the same function and shows this message
    import io

    from spuraudit.labels import LabelStore, SalientCSVError, import_salient_csv

    with pytest.raises(SalientCSVError, match="5000 digits"):
        import_salient_csv(LabelStore(voted / "labels.db"), io.BytesIO(csv.read_bytes()), 2, 64)
    assert _votes(voted) == votes and world.snapshot() == before
    world.assert_outside_untouched()


@bad_input("votes", "votes whose reason or annotator starts with `=`, `+`, `-`, `@` (spreadsheet formulas), "
                    "exported, then imported twice: once as exported, once re-saved with a BOM and CRLF",
           "exported cells start with an apostrophe; the import restores the text; the re-saved copy is "
           "refused as already imported")
def test_exported_votes_cannot_run_as_formulas_and_resaves_are_not_counted_twice(world, capsys, voted):
    reasons = ['=HYPERLINK("http://example.com/x","click")', "+1+1", "-2", "'=already quoted"]
    for i, reason in enumerate(reasons):
        assert _cli(capsys, "mark", "-p", "p", "--class", "0", "--feature", str(10 + i), "--reason", reason,
                    "--annotator", "@cmd|' /C calc'!A0")[0] == 0
    out = world.inputs / "export.csv"
    assert _cli(capsys, "labels", "export", out, "-p", "p")[0] == 0
    import csv as csvlib

    rows = list(csvlib.reader(out.open(newline="")))[1:]
    cells = [c for row in rows for c in row]
    assert not [c for c in cells if c.startswith(("=", "+", "-", "@"))]
    assert "'=HYPERLINK(\"http://example.com/x\",\"click\")" in cells and "''=already quoted" in cells
    # into another project: the same text comes back
    shutil_copy = world.home / "projects" / "q"
    import shutil

    shutil.copytree(voted, shutil_copy, ignore=shutil.ignore_patterns("labels.db*"))
    data = json.loads((shutil_copy / "project.json").read_text())
    (shutil_copy / "project.json").write_text(json.dumps({**data, "name": "q"}))
    code, _, err = _cli(capsys, "labels", "import", out, "-p", "q")
    assert code == 0, err
    with sqlite3.connect(shutil_copy / "labels.db") as conn:
        got = [r[0] for r in conn.execute("SELECT reason FROM votes WHERE feature_index >= 10 ORDER BY id")]
        annotators = {r[0] for r in conn.execute("SELECT annotator FROM votes WHERE feature_index >= 10")}
    assert got == reasons and annotators == {"@cmd|' /C calc'!A0"}
    votes = _votes(shutil_copy)
    resaved = world.inputs / "resaved.csv"
    resaved.write_bytes(b"\xef\xbb\xbf" + out.read_bytes().replace(b"\n", b"\r\n"))
    world.freeze()
    code, _, err = _cli(capsys, "labels", "import", resaved, "-p", "q")
    assert code == 2 and "already imported" in err and "export.csv" in err and str(resaved) in err
    assert _votes(shutil_copy) == votes
    world.assert_outside_untouched()


# ---- the job database ----------------------------------------------------------------------------
def _worker(world: World):
    from tests.jobfuncs import start_worker

    return start_worker(world.home / "jobs.db", log=world.home / "worker.log")


def _done(queue: JobQueue, job_id: int):
    try:
        job = queue.get(job_id)
    except KeyError:
        return None
    return job if job.is_finished else None


@bad_input("jobs", "`jobs.db` deleted while a job runs, with a worker serving it",
           "the file is recreated with its schema; the running job's row is put back and gets its result; "
           "`jobs/lost.txt` and the job's log say what happened; the next job takes a new id and folder")
def test_jobs_db_deleted_while_a_job_runs(world):
    from tests.jobfuncs import stop_process, wait_for

    db = world.home / "jobs.db"
    queue = JobQueue(db)
    first = queue.submit("tests.jobfuncs:steps", {"n": 1, "delay": 0.0})
    worker = _worker(world)
    try:
        wait_for(lambda: _done(queue, first), timeout=60, what="the first job")
        running = queue.submit("tests.jobfuncs:steps", {"n": 25, "delay": 0.2})
        wait_for(lambda: queue.get(running).progress > 0.1, timeout=60, what="the job to make progress")
        world.freeze()
        db.unlink()
        job = wait_for(lambda: _done(queue, running), timeout=60, what="the job to finish after the loss")
        assert job.status == "done" and job.result["sum"] == sum(range(25))
        notes = queue.lost_notes()
        assert len(notes) == 1 and "missing" in notes[0] and "recreated" in notes[0]
        log = (queue.work_dir(running) / "log.txt").read_text()
        assert "database was lost" in log and "restored" in log
        following = queue.submit("tests.jobfuncs:steps", {"n": 2, "delay": 0.0})
        assert following > running
        wait_for(lambda: _done(queue, following), timeout=60, what="the next job")
        assert queue.get(following).status == "done"
        assert (queue.work_dir(running) / "log.txt").read_text().startswith(log)  # not overwritten
    finally:
        stop_process(worker)
    world.assert_outside_untouched()
    world.assert_nothing_half_made()


@bad_input("jobs", "`jobs.db` deleted, then replaced by garbage bytes, while the worker is idle",
           "the next call recreates it (a damaged file is kept aside, named in `lost.txt`); ids keep growing; "
           "the worker neither crashes nor logs errors in a loop")
def test_jobs_db_deleted_or_damaged_while_idle(world):
    from tests.jobfuncs import stop_process, wait_for

    db = world.home / "jobs.db"
    queue = JobQueue(db)
    worker = _worker(world)
    try:
        ids = [queue.submit("tests.jobfuncs:steps", {"n": 1, "delay": 0.0}) for _ in range(2)]
        for job_id in ids:
            wait_for(lambda: _done(queue, job_id), timeout=60, what="a job")
        world.freeze()
        db.unlink()
        time.sleep(1.5)  # the idle worker polls the missing file several times
        again = JobQueue(db).submit("tests.jobfuncs:steps", {"n": 1, "delay": 0.0})  # the app's next call
        assert again > max(ids)
        assert wait_for(lambda: _done(queue, again), timeout=60, what="the job after the loss").status == "done"
        # Fold the log into the file, then drop it: while a log exists a reader can still see its pages
        # over the garbage. The garbage then lands in one step, so the idle worker sees either the
        # whole good file or the whole damaged one, never an empty or half-written file in between.
        conn = sqlite3.connect(db, timeout=10)
        try:  # busy (0 = done) while the worker happens to be reading; it reads briefly
            assert wait_for(lambda: conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0 or None,
                            timeout=30, what="the log folded into the file")
        finally:
            conn.close()
        for suffix in ("-wal", "-shm"):
            db.with_name(db.name + suffix).unlink(missing_ok=True)
        garbage = db.with_name("garbage.tmp")
        garbage.write_bytes(os.urandom(8192))
        os.replace(garbage, db)
        counts = queue.counts()  # the app's jobs page: works, on an empty list
        assert counts["queued"] == 0
        later = queue.submit("tests.jobfuncs:steps", {"n": 1, "delay": 0.0})
        assert later > again
        assert wait_for(lambda: _done(queue, later), timeout=60, what="the job after the damage").status == "done"
        notes = queue.lost_notes()
        assert len(notes) == 2 and "damaged" in notes[1]
        kept = list(world.home.glob("jobs.db.damaged-*"))
        assert len(kept) == 1 and kept[0].name in notes[1] and kept[0].stat().st_size == 8192
        time.sleep(1.0)
    finally:
        stop_process(worker)
    text = (world.home / "worker.log").read_text()
    assert "no such table" not in text and text.count("database busy") <= 2
    world.assert_outside_untouched()
    world.assert_nothing_half_made()


def fill_disk(ctx, path: str, limit: int = 65536) -> None:
    """A job whose process cannot grow files past `limit` bytes (as on a full disk) and writes more."""
    import resource
    import signal

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    ctx.progress(0.5, "writing")
    with open(path, "wb") as fh:
        for _ in range(4):
            fh.write(os.urandom(limit))
            fh.flush()


@bad_input("jobs", "a job that fails on a full disk (its process cannot grow files, the job database included)",
           "the job is failed with 'disk full while writing <path>', not only an exit code")
def test_a_job_on_a_full_disk_says_so(world):
    from tests.jobfuncs import stop_process, wait_for

    queue = JobQueue(world.home / "jobs.db")
    target = world.home / "out" / "big.bin"
    target.parent.mkdir()
    job_id = queue.submit("tests.test_fuzz_faults:fill_disk", {"path": str(target)})
    worker = _worker(world)
    try:
        job = wait_for(lambda: _done(queue, job_id), timeout=90, what="the job to fail")
    finally:
        stop_process(worker)
    assert job.status == "failed"
    assert f"disk full while writing {target}" in job.message, job.message


# ---- checkpoints, uploads, options ---------------------------------------------------------------
@bad_input("checkpoints", "random bytes saved as `weights.pt`, given by path and uploaded twice",
           "refused as 'not a checkpoint' (no offer to trust it); an upload is kept once per content and a "
           "refused one is removed")
def test_random_bytes_are_not_a_checkpoint(world, capsys):
    from spuraudit.create import discard_upload, inspect_model, save_upload

    data = _colour_folder(world.inputs / "data", per_class=2)
    junk = world.inputs / "weights.pt"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    world.freeze()
    for trust in ([], ["--trust-pickle"]):
        code, _, err = _create(world, capsys, "junk", data, junk, *trust)
        assert code == 2 and "is not a checkpoint" in err and str(junk) in err and "trust" not in err.lower()
    summary = inspect_model(junk, "spuraudit:digitnet", trust_pickle=True)
    assert not summary.needs_trust and "is not a checkpoint" in summary.refusal
    assert not (world.home / "projects").exists() and not (world.home / "models").exists()
    first = save_upload("weights.pt", junk.read_bytes())
    again = save_upload("weights (1).pt", junk.open("rb"))
    assert first == again and len(list((world.home / "uploads").iterdir())) == 1
    assert discard_upload(first) and list((world.home / "uploads").iterdir()) == []
    assert not discard_upload(junk) and junk.exists()  # only files under uploads/ are ever removed
    world.assert_outside_untouched()
    world.assert_nothing_half_made()


@bad_input("checkpoints", "a state dict whose float weights were saved as int64 (a conv weight) and bool (a bias)",
           "refused, naming each tensor with its dtype and the dtype the model expects (integer buffers such "
           "as BatchNorm's counter still load); no project or model folder is made")
def test_integer_and_bool_weights_are_refused(world, capsys):
    from spuraudit.modelio.digitnet import DigitNet

    data = _colour_folder(world.inputs / "data", per_class=2)
    torch.manual_seed(0)
    state = DigitNet(2).state_dict()
    state["features.0.weight"] = (state["features.0.weight"] * 10).to(torch.int64)
    state["fc.bias"] = state["fc.bias"] > 0
    state["features.1.num_batches_tracked"] = torch.tensor(7, dtype=torch.int32)  # an integer buffer: fine
    weights = world.inputs / "weights.pt"
    torch.save(state, weights)
    world.freeze()
    code, _, err = _create(world, capsys, "ints", data, weights)
    assert code == 2, err
    assert "features.0.weight: checkpoint int64 where the model expects float32" in err
    assert "fc.bias: checkpoint bool where the model expects float32" in err
    assert "num_batches_tracked" not in err
    assert not (world.home / "projects").exists() and not (world.home / "models").exists()
    world.assert_outside_untouched()
    world.assert_nothing_half_made()


@bad_input("options", "`spuraudit mitigate -o lr=nan` (and `inf`)",
           "refused before any work: the message names the option and asks for a finite number")
@pytest.mark.parametrize("value", ["nan", "NaN", "Infinity", "-inf"])
def test_non_finite_option_values_are_refused_up_front(world, capsys, value):
    world.freeze()
    code, _, err = _cli(capsys, "mitigate", "-p", "nowhere", "--method", "error_tuning", "-o", f"lr={value}")
    assert code == 2 and "option 'lr'" in err and "finite number" in err
    assert list(world.home.iterdir()) == []
    world.assert_outside_untouched()


@bad_input("names", "project and class names holding Markdown: `![x](http://example.com/p.png)`, `**red**`",
           "shown as typed (escaped) in titles and captions; the browser is never told to fetch an image")
def test_markdown_in_names_is_shown_as_text(world, capsys):
    from streamlit.testing.v1 import AppTest

    data = _colour_folder(world.inputs / "data", per_class=3)
    names = {"green": "![g](http://example.com/g.png)", "red": "**red**"}
    lines = ["path,label"] + [f"{c}/{i}.png,{names[c]}" for c in names for i in range(3)]
    (data / "labels.csv").write_text("\n".join(lines) + "\n")
    name = "![x](http://example.com/p.png)"
    code, out, err = _create(world, capsys, name, data / "labels.csv", _weights(world.root / "w.pt"), "--json")
    assert code == 0, err
    folder = Path(json.loads(out)["project"]).name
    assert _cli(capsys, "extract", "-p", folder, "--workers", "0", "--device", "cpu")[0] == 0
    from spuraudit.project import Project

    Project.open(world.home / "projects" / folder).update_settings(image_set="labelled")  # an untrained model
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.query_params["project"] = folder
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    header = next(h.value for h in at.header if "Project" in h.value)
    assert "http\\://example.com" in header and "![" not in header
    at.switch_page("pages/features.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    shown = [m.value for m in [*at.markdown, *at.caption, *at.subheader, *at.header, *at.info, *at.warning, *at.error]]
    assert not any("](http" in text for text in shown), [t for t in shown if "http" in t]
    assert any("\\!\\[g\\]" in text or "\\*\\*red\\*\\*" in text for text in shown), shown


@bad_input("disk", "`spuraudit mitigate --method error_tuning` when the disk fills while the new model is written",
           "a message says the disk is probably full; neither the new model folder nor its derived feature "
           "store remains; the parent's store is intact")
def test_error_tuning_on_a_full_disk_leaves_no_store(world, capsys):
    data = world.inputs / "data"
    for split in ("train", "val", "test"):
        _colour_folder(data / split, per_class=3)
    assert _create(world, capsys, "p", data, _weights(world.root / "w.pt"))[0] == 0
    assert _cli(capsys, "extract", "-p", "p", "--workers", "0", "--device", "cpu")[0] == 0
    before = world.snapshot()
    world.freeze()
    done = _limited_cli(world, ["mitigate", "-p", "p", "--method", "error_tuning", "-o", "max_epochs=1",
                                "-o", "min_steps=1", "-o", "other_classes=none"], max_file_bytes=128 * 1024)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "disk is probably full" in done.stderr
    after = world.snapshot()
    assert {k: v for k, v in after.items() if k in before} == before
    assert [k for k in after if k not in before] == []  # no model folder, no derived store
    world.assert_nothing_half_made()
    world.assert_outside_untouched()


@bad_input("datasets", "on the Add-data page: a folder with a non-UTF-8 file name, random bytes as the checkpoint, "
                       "and the project names `проект` and `..`",
           "the preview lists the file as skipped; the checkpoint is refused as not a checkpoint without "
           "offering trust; each name is refused in words and Create stays disabled")
def test_add_data_page_with_bad_names_and_files(world):
    from streamlit.testing.v1 import AppTest

    data = _colour_folder(world.inputs / "data", per_class=2)
    with open(os.path.join(os.fsencode(data / "green"), b"caf\xe9.png"), "wb") as fh:
        fh.write((data / "green" / "0.png").read_bytes())
    junk = world.inputs / "weights.pt"
    junk.write_bytes(np.random.default_rng(1).bytes(2048))
    world.freeze()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    at.switch_page("pages/data.py")
    at.run()
    at.text_input(key="data_path").set_value(str(data)).run()
    assert not at.exception, [e.value for e in at.exception]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Images"] == "4" and metrics["Skipped files"] == "1"
    at.selectbox(key="architecture").set_value("spuraudit:digitnet").run()
    at.text_input(key="checkpoint_path").set_value(str(junk)).run()
    assert any("is not a checkpoint" in e.value for e in at.error)
    assert not any("trust" in i.value.lower() for i in at.info)
    for name in ("проект", ".."):
        at.text_input(key="project_name").set_value(name).run()
        assert not at.exception, [e.value for e in at.exception]
        assert any("name" in e.value and ("letters" in e.value) for e in at.error), [e.value for e in at.error]
        assert at.button(key="create").disabled
    assert not {"projects", "models", "uploads"} & {p.name for p in world.home.iterdir()}
    world.assert_outside_untouched()
