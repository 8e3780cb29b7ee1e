"""The feature store: one batched pass over a dataset, kept on disk and memory-mapped.

For every image it stores the pooled neural features r(x) [N, D] (float16), the logits [N, C]
(float32) and the predictions [N], plus the statistics every page needs (`featurestats`). The folder
name is a hash of the model's weights, the dataset table and the input size, so reopening a project
or switching pages recomputes nothing, and a different model gets its own store.

Extraction writes rows into the memory-mapped files chunk by chunk, so its memory does not grow with
the dataset, and records the rows done in `progress.json` after each chunk: a run that is killed
continues where it stopped (the dataset is read in a fixed order). Until the last row is written the
store lives in `.partial-<key>/`; it is renamed to `<key>/` when complete, so a folder with a
`meta.json` is always whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from .common import Progress
from .data.images import EncodedImageDataset, ImageTensorDataset, collate_encoded, decode_batch
from .data.table import ImageTable
from .modelio import AuditModel, weights_hash


FEATURE_DTYPE = np.float16
PROGRESS_FILE = "progress.json"
STAMPS_FILE = "stamps.npy"  # size and mtime of every image when its row was extracted (`verify`)
CHUNK_ROWS = 4096  # rows held in memory before they are written and the progress is recorded
_FLOAT16_MAX = float(np.finfo(np.float16).max)


@dataclass
class FeatureStore:
    """Memory-mapped arrays of one (model, dataset) pair. Shapes: features [N, D], logits [N, C]."""

    path: Path
    features: np.ndarray
    logits: np.ndarray
    preds: np.ndarray
    head_weight: np.ndarray  # W [C, D], so analysis never needs to load the model
    head_bias: np.ndarray  # b [C]
    meta: dict

    @classmethod
    def open(cls, path: str | Path) -> "FeatureStore":
        path = Path(path)
        meta = json.loads((path / "meta.json").read_text())
        return cls(
            path=path,
            features=np.load(path / "features.npy", mmap_mode="r"),
            logits=np.load(path / "logits.npy", mmap_mode="r"),
            preds=np.load(path / "preds.npy", mmap_mode="r"),
            head_weight=np.load(path / "head_weight.npy"),
            head_bias=np.load(path / "head_bias.npy"),
            meta=meta,
        )

    @property
    def key(self) -> str:
        return self.path.name

    def correct(self, labels: np.ndarray) -> np.ndarray:
        return np.asarray(self.preds) == labels


def store_key(model_hash: str, table: ImageTable | str, input_size) -> str:
    """Folder name of the store: model weights × table identity × input size (no file is statted)."""
    table_id = table if isinstance(table, str) else table.content_hash()
    h = hashlib.sha256(f"{model_hash}|{table_id}|{tuple(input_size)}".encode())
    return h.hexdigest()[:20]


def file_stamps(paths: list[str]) -> np.ndarray:
    """int64 [n, 2]: (size, mtime in ns) of each file, (-1, -1) when it cannot be read."""
    out = np.full((len(paths), 2), -1, dtype=np.int64)
    for i, path in enumerate(paths):
        try:
            st = os.stat(path)
        except OSError:
            continue
        out[i] = (st.st_size, st.st_mtime_ns)
    return out


PRECISIONS = ("fp32", "bf16", "fp16")
DECODERS = ("pil", "device")


def _loader(paths: list[str], input_size, batch_size: int, num_workers: int, start: int = 0,
            stop: int | None = None, decode: str = "pil", device: torch.device | None = None):
    """Batches (images [B, 3, H, W] in [0, 1], dataset rows [B]) of rows start..stop, in order.

    decode "pil": the workers decode and resize (PIL), batches come pinned when the device is a GPU.
    decode "device": the workers only read the files; JPEGs are decoded a batch at a time on `device`
    (see `data.images.decode_batch`), and the batches come already on it.
    """
    size = tuple(input_size)
    stop = len(paths) if stop is None else stop
    on_gpu = device is not None and device.type == "cuda"
    extra = {"prefetch_factor": 4, "persistent_workers": False} if num_workers > 0 else {}
    if decode == "device":
        dataset = torch.utils.data.Subset(EncodedImageDataset(paths, size), range(start, stop))
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                                             collate_fn=collate_encoded, pin_memory=on_gpu, **extra)
        dev = device or torch.device("cpu")
        return ((decode_batch(items, size, dev, [paths[i] for i in idx.tolist()]), idx) for items, idx in loader)
    if decode != "pil":
        raise ValueError(f"decode must be one of {DECODERS}, got '{decode}'")
    dataset = torch.utils.data.Subset(ImageTensorDataset(paths, size), range(start, stop))
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,  # a fixed order is what makes a killed run resumable
        num_workers=num_workers,
        pin_memory=on_gpu if device is not None else torch.cuda.is_available(),
        **extra,
    )


def _store_files(n: int, num_features: int, num_classes: int, with_stamps: bool) -> dict:
    files = {
        "features.npy": ((n, num_features), FEATURE_DTYPE),
        "logits.npy": ((n, num_classes), np.float32),
        "preds.npy": ((n,), np.int64),
    }
    if with_stamps:
        files[STAMPS_FILE] = ((n, 2), np.int64)
    return files


def _header(path: Path) -> tuple[tuple, np.dtype, int] | None:
    """(shape, dtype, offset of the first data byte) of a .npy file, None when it is missing or not one."""
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(fh)
            return (tuple(shape), np.dtype(dtype), fh.tell()) if not fortran else None
    except (OSError, ValueError):
        return None


def prepare_store_files(folder: Path, n: int, num_features: int, num_classes: int, with_stamps: bool) -> None:
    """Make sure the row files of a partial store exist with the right shapes (done once, by rank 0, before
    the ranks write their rows); files of the wrong shape are recreated and all progress forgotten."""
    files = _store_files(n, num_features, num_classes, with_stamps)
    fresh = False
    for name, (shape, dtype) in files.items():
        head = _header(folder / name)
        if head is None or head[0] != tuple(shape) or head[1] != np.dtype(dtype):
            np.lib.format.open_memmap(folder / name, mode="w+", dtype=dtype, shape=shape).flush()
            fresh = True
    if fresh:
        for stale in folder.glob("progress*.json"):
            stale.unlink(missing_ok=True)


def rank_progress_file(rank: int, world: int) -> str:
    """The progress file of one rank of a `world`-process extraction (a run with another world size
    ignores it and redoes that rank's rows)."""
    return f"progress-{rank}-of-{world}.json"


class _ChunkWriter:
    """Writes row blocks into the .npy files of a partial store and records the rows done.

    Each block is written through its own short-lived map, flushed, then the progress file is replaced
    (temp + rename): rows below `rows_done` are always on disk, whatever kills the process. A writer
    owns the rows `rows` = [lo, hi) (all of them by default); several writers, one per process, can
    fill disjoint rows of the same files, each with its own progress file.
    """

    def __init__(self, folder: Path, n: int, num_features: int, num_classes: int, paths: list[str] | None,
                 rows: tuple[int, int] | None = None, progress_file: str = PROGRESS_FILE, create: bool = True):
        self.folder = folder
        self.n = n
        self.paths = paths
        self.lo, self.hi = rows if rows is not None else (0, n)
        self.progress_file = progress_file
        self.files = _store_files(n, num_features, num_classes, paths is not None)
        progress = folder / progress_file
        shapes_ok = progress.is_file() and all((folder / name).is_file() for name in self.files)
        try:
            state = json.loads(progress.read_text()) if shapes_ok else {}
        except ValueError:
            state = {}
        valid = (state.get("shapes") == {name: list(shape) for name, (shape, _) in self.files.items()}
                 and state.get("rows", [0, n]) == [self.lo, self.hi])
        if not valid:
            if create:
                for name, (shape, dtype) in self.files.items():
                    np.lib.format.open_memmap(folder / name, mode="w+", dtype=dtype, shape=shape).flush()
            state = {"rows_done": self.lo}
        self.offsets = {}
        for name, (shape, dtype) in self.files.items():
            head = _header(folder / name)
            if head is None or head[0] != tuple(shape) or head[1] != np.dtype(dtype):
                raise RuntimeError(f"{folder / name} is not a {shape} {np.dtype(dtype).name} array; "
                                   "delete the partial store folder and extract again")
            self.offsets[name] = head[2]
        self.rows_done = int(state["rows_done"])
        if not valid:
            self._record()

    def _record(self) -> None:
        data = {"rows_done": self.rows_done, "num_images": self.n, "rows": [self.lo, self.hi],
                "shapes": {name: list(shape) for name, (shape, _) in self.files.items()}}
        tmp = self.folder / (self.progress_file + ".tmp")
        with open(tmp, "w") as fh:
            fh.write(json.dumps(data))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.folder / self.progress_file)

    def _write(self, name: str, start: int, block: np.ndarray) -> None:
        shape, dtype = self.files[name]
        row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * np.dtype(dtype).itemsize
        view = np.memmap(self.folder / name, dtype=dtype, mode="r+", offset=self.offsets[name] + start * row_bytes,
                         shape=(len(block),) + tuple(shape[1:]))
        view[:] = block
        view.flush()
        del view

    def write(self, start: int, feats: np.ndarray, logits: np.ndarray) -> None:
        if start != self.rows_done:
            raise RuntimeError(f"rows must be written in order: expected row {self.rows_done}, got {start}")
        if start + len(feats) > self.hi:
            raise RuntimeError(f"rows {start}..{start + len(feats) - 1} lie beyond this writer's rows "
                               f"{self.lo}..{self.hi - 1}")
        if not np.all(np.abs(feats) <= _FLOAT16_MAX):
            raise ValueError(f"features of rows {start}..{start + len(feats) - 1} are not finite or exceed the "
                             "float16 range (65504); this model's features cannot be stored as float16.")
        self._write("features.npy", start, feats.astype(FEATURE_DTYPE))
        self._write("logits.npy", start, logits.astype(np.float32))
        self._write("preds.npy", start, logits.argmax(1).astype(np.int64))
        if self.paths is not None:
            self._write(STAMPS_FILE, start, file_stamps(self.paths[start:start + len(feats)]))
        self.rows_done = start + len(feats)
        self._record()


class _BackgroundWriter:
    """Runs `_ChunkWriter.write` in a thread, one chunk behind the model, so the GPU never waits for the
    disk. At most one chunk waits; an error in the thread is raised at the next `write` or at `close`."""

    def __init__(self, writer: _ChunkWriter):
        import queue
        import threading

        self.writer = writer
        self.queue: "queue.Queue" = queue.Queue(maxsize=1)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._loop, name="store-writer", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            if self.error is None:
                try:
                    self.writer.write(*item)
                except BaseException as exc:  # handed to the main thread
                    self.error = exc

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    def write(self, start: int, feats: np.ndarray, logits: np.ndarray) -> None:
        self._raise()
        self.queue.put((start, feats, logits))

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()
        self._raise()


def autocast_dtype(precision: str | None, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of `precision` ("fp32", "bf16", "fp16"; None = fp16 on CUDA, fp32 elsewhere)."""
    if precision is None:
        precision = "fp16" if device.type == "cuda" else "fp32"
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got '{precision}'")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("fp16 autocast needs a CUDA device; use bf16 (or fp32) on the CPU")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def run_extraction(
    model: AuditModel,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    n: int,
    device: torch.device,
    progress: Progress | None = None,
    folder: str | Path | None = None,
    start: int = 0,
    chunk_rows: int = CHUNK_ROWS,
    paths: list[str] | None = None,
    rows: tuple[int, int] | None = None,
    progress_file: str = PROGRESS_FILE,
    create_files: bool = True,
    precision: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The core loop: (images [B, 3, H, W] in [0, 1], dataset indices [B]) -> features [n, D], logits [n, C].

    With `folder`, rows go into the memory-mapped files there, `chunk_rows` at a time (memory bounded
    by one chunk, whatever `n`), resuming after the rows the progress file records; `batches` must then
    yield the dataset in order from that row on, up to the end of `rows` (default: all n rows; a
    process of a torchrun extraction owns a shard). Chunks are written by a background thread while
    the model computes the next ones. The returned arrays are then the on-disk maps.
    Without `folder`, the arrays are built in memory (small datasets, tests).
    """
    amp = autocast_dtype(precision, device)
    lo, hi = rows if rows is not None else (0, n)
    writer = None
    if folder is not None:
        chunk_writer = _ChunkWriter(Path(folder), n, model.num_features, model.num_classes, paths, rows=(lo, hi),
                                    progress_file=progress_file, create=create_files)
        start = chunk_writer.rows_done
        writer = _BackgroundWriter(chunk_writer)
    else:
        start = max(start, lo)
        in_memory = (np.empty((n, model.num_features), dtype=np.float32),
                     np.empty((n, model.num_classes), dtype=np.float32))
    pending_f, pending_z, pending_start = [], [], start
    done = start
    first = start
    began = time.perf_counter()

    def flush() -> None:
        nonlocal pending_f, pending_z, pending_start
        if not pending_f:
            return
        # One device -> host copy per chunk rather than one per batch (each copy waits for the GPU).
        f = torch.cat(pending_f).float().cpu().numpy()
        z = torch.cat(pending_z).float().cpu().numpy()
        if writer is not None:
            writer.write(pending_start, f, z)
        else:
            in_memory[0][pending_start:pending_start + len(f)] = f
            in_memory[1][pending_start:pending_start + len(f)] = z
        pending_start += len(f)
        pending_f, pending_z = [], []

    try:
        with torch.inference_mode():
            for x, idx in batches:
                rows_ = idx.numpy()
                if len(rows_) and (rows_[0] != done or rows_[-1] - rows_[0] != len(rows_) - 1):
                    raise RuntimeError(f"batches must come in dataset order: expected row {done}, got {rows_[:3]}...")
                x = x.to(device, non_blocking=True)
                if device.type == "cuda":
                    x = x.contiguous(memory_format=torch.channels_last)
                with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                    _, f, z = model.forward_all(x)
                pending_f.append(f.detach())
                pending_z.append(z.detach())
                done += len(rows_)
                if done - pending_start >= chunk_rows:
                    flush()
                if progress:
                    rate = (done - first) / max(time.perf_counter() - began, 1e-9)
                    progress((done - lo) / max(hi - lo, 1), f"extracted {done - lo}/{hi - lo} images ({rate:.0f} img/s)")
        flush()
    finally:
        if writer is not None:
            writer.close()
    if done != hi:
        raise RuntimeError(f"extraction ended at row {done} of {hi}")
    if writer is None:
        return in_memory
    return (np.load(Path(folder) / "features.npy", mmap_mode="r"), np.load(Path(folder) / "logits.npy", mmap_mode="r"))


def extract_features(
    model: AuditModel,
    table: ImageTable,
    root: str | Path,
    input_size,
    batch_size: int = 128,
    num_workers: int | None = None,
    device: str | None = None,
    progress: Progress | None = None,
    model_hash: str | None = None,
    chunk_rows: int = CHUNK_ROWS,
    precision: str | None = None,
    decode: str | None = None,
) -> FeatureStore:
    """Compute (or reuse, or finish) the store under `root/<key>/`.

    Rows go to `root/.partial-<key>/` as they are extracted; a later call with the same model and
    table resumes there. The complete folder is renamed into place, statistics included.

    Under torchrun (see `distributed`) every process runs this same call: each takes a contiguous
    shard of the rows and writes them into the same partial store; rank 0 then builds the statistics
    and renames the folder, and every rank returns the finished store.
    precision: autocast "fp32" / "bf16" / "fp16" (default fp16 on CUDA, fp32 on the CPU).
    decode: "device" decodes JPEG batches on the device, "pil" in the loader's workers (default:
    "device" on CUDA, "pil" elsewhere).
    """
    from . import distributed
    from .featurestats import build_stats

    root = Path(root)
    model_hash = model_hash or weights_hash(model)
    table_id = table.content_hash()
    key = store_key(model_hash, table_id, input_size)
    final = root / key
    if (final / "meta.json").is_file():
        if progress:
            progress(1.0, "features already computed (cached)")
        return FeatureStore.open(final)
    partial = root / f".partial-{key}"
    dev = distributed.setup(device)
    distributed.same_on_all_ranks(key, "the store (model weights, dataset or input size)")
    rank, world = distributed.rank(), distributed.world_size()
    decode = decode or ("device" if dev.type == "cuda" else "pil")
    model = model.to(dev).eval()
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    if num_workers is None:
        num_workers = min(2, os.cpu_count() or 1)
    n = len(table)
    paths = table.paths
    began = time.perf_counter()
    if rank == 0:
        partial.mkdir(parents=True, exist_ok=True)
        np.save(partial / "head_weight.npy", model.head.weight.detach().float().cpu().numpy())
        bias = model.head.bias if model.head.bias is not None else torch.zeros(model.num_classes)
        np.save(partial / "head_bias.npy", bias.detach().float().cpu().numpy())
        if world > 1:
            prepare_store_files(partial, n, model.num_features, model.num_classes, True)
    distributed.barrier()
    rows = distributed.shard(n)
    progress_file = PROGRESS_FILE if world == 1 else rank_progress_file(rank, world)
    writer_probe = _ChunkWriter(partial, n, model.num_features, model.num_classes, paths, rows=rows,
                                progress_file=progress_file, create=world == 1)
    start = writer_probe.rows_done
    if start > rows[0] and progress:
        progress((start - rows[0]) / max(rows[1] - rows[0], 1),
                 f"resuming the extraction at image {start - rows[0]}/{rows[1] - rows[0]}")
    report = progress if rank == 0 else None
    run_extraction(model, _loader(paths, input_size, batch_size, num_workers, start, rows[1], decode, dev), n, dev,
                   report, folder=partial, chunk_rows=chunk_rows, paths=paths, rows=rows,
                   progress_file=progress_file, create_files=world == 1, precision=precision)
    distributed.barrier()  # every shard is on disk
    if rank == 0:
        meta = {
            "key": key,
            "model_hash": model_hash,
            "table": table_id,
            "num_images": n,
            "num_features": int(model.num_features),
            "num_classes": int(model.num_classes),
            "input_size": list(input_size),
            "feature_dtype": np.dtype(FEATURE_DTYPE).name,
            "seconds": round(time.perf_counter() - began, 2),
            "device": str(dev) if world == 1 else f"{world} × {dev.type}",
            "precision": precision or ("fp16" if dev.type == "cuda" else "fp32"),
            "decode": decode,
            "processes": world,
        }
        (partial / "meta.json").write_text(json.dumps(meta, indent=1))
        build_stats(FeatureStore.open(partial), table,
                    (lambda f, m: progress(1.0, m)) if progress else None)
        try:
            os.replace(partial, final)
        except OSError:
            if not (final / "meta.json").is_file():  # another process may have finished it first
                raise
            shutil.rmtree(partial, ignore_errors=True)
        for done_file in final.glob("progress*.json"):
            done_file.unlink(missing_ok=True)
    distributed.barrier()  # the store is in place for every rank
    return FeatureStore.open(final)


STORE_INDEX = "index.json"


def store_index(root: str | Path) -> dict[str, str]:
    """features/index.json: (model hash | table identity | input size) -> store folder ("" = none)."""
    try:
        return dict(json.loads((Path(root) / STORE_INDEX).read_text()))
    except (OSError, ValueError):
        return {}


def write_store_index(root: str | Path, index: dict[str, str]) -> None:
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = root / (STORE_INDEX + ".tmp")
        tmp.write_text(json.dumps(index, indent=1))
        os.replace(tmp, root / STORE_INDEX)
    except OSError:
        pass  # read-only project: the lookup is simply repeated next time


def write_store(folder: str | Path, n: int, head_weight: np.ndarray, head_bias: np.ndarray,
                blocks: Iterable[tuple[np.ndarray, np.ndarray]], meta: dict | None = None,
                paths: list[str] | None = None) -> FeatureStore:
    """A complete store at `folder` from (features [b, D], logits [b, C]) blocks in row order.

    For stores whose rows come from elsewhere than a model pass (synthetic benchmarks, imports);
    written chunk by chunk like an extraction. Statistics are not built here (see `featurestats`).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    head_weight = np.asarray(head_weight, dtype=np.float32)
    np.save(folder / "head_weight.npy", head_weight)
    np.save(folder / "head_bias.npy", np.asarray(head_bias, dtype=np.float32))
    writer = _ChunkWriter(folder, n, head_weight.shape[1], head_weight.shape[0], paths)
    for feats, logits in blocks:
        writer.write(writer.rows_done, np.asarray(feats), np.asarray(logits))
    if writer.rows_done != n:
        raise ValueError(f"{folder}: blocks held {writer.rows_done} rows, expected {n}")
    info = {"key": folder.name, "num_images": n, "num_features": int(head_weight.shape[1]),
            "num_classes": int(head_weight.shape[0]), "feature_dtype": np.dtype(FEATURE_DTYPE).name,
            **(meta or {})}
    (folder / "meta.json").write_text(json.dumps(info, indent=1))
    (folder / PROGRESS_FILE).unlink(missing_ok=True)
    return FeatureStore.open(folder)
