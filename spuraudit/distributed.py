"""Many processes on one job: torchrun's process group, row shards, DDP for fine-tuning.

Launch any command that extracts or fine-tunes with torchrun; everything else is unchanged:

    torchrun --nproc_per_node=4 -m spuraudit extract --project P
    torchrun --nproc_per_node=4 -m spuraudit mitigate --project P --method masktune

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; `setup` joins the group
through them (env://), with NCCL when the process has a GPU and gloo otherwise, and binds each rank
to GPU LOCAL_RANK. Without torchrun (WORLD_SIZE unset or 1) every function here is a no-op: one
process does all the rows.

Rules the callers follow: rows are split into contiguous, disjoint shards (`shard`); each rank
writes only its rows; side effects on shared state (renaming a store, writing a model folder,
updating the job row) happen on rank 0 only, after a `barrier`.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn


def launched() -> bool:
    """True when this process is one of several started by torchrun (or an equivalent env:// launcher)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def active() -> bool:
    """True when a process group of more than one process is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0, or the only process: the one that renames stores, writes model folders and reports."""
    return rank() == 0


def setup(device: torch.device | str | None = None) -> torch.device:
    """Join torchrun's process group (once) and return this rank's device.

    `device` is what the user asked for ("cuda", "cpu", None = automatic); under torchrun a CUDA
    device becomes cuda:LOCAL_RANK, so each process drives its own GPU.
    """
    from .training import pick_device

    dev = pick_device(str(device) if device is not None else None)
    if not launched():
        return dev
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if dev.type == "cuda":
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, init_method="env://")
    return dev


def barrier() -> None:
    if active():
        dist.barrier()


def broadcast(obj):
    """Rank 0's value of a small picklable object on every rank (paths, options; never user data)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shard(n: int, rank_: int | None = None, world: int | None = None) -> tuple[int, int]:
    """Rows [lo, hi) of `n` that rank `rank_` handles: contiguous, disjoint, covering 0..n, sizes within one."""
    r = rank() if rank_ is None else rank_
    w = world_size() if world is None else world
    return (r * n) // w, ((r + 1) * n) // w


@dataclass(frozen=True)
class EpochShard:
    """This rank's part of a training epoch whose global order and batch size are fixed.

    Every global batch of `batch_size` positions is cut into `world` equal slices; rank r takes slice
    r. `order` lists this rank's positions batch after batch, so a loader over `order` with batches of
    `batch_size // world` sees exactly its slices (the last one may be short or absent). With
    `loss_weight(step)` the summed loss of a slice, averaged over ranks by DDP, is the global batch's
    mean loss: the same gradient as one process taking the whole batch.
    """

    order: np.ndarray
    batch_size: int  # per rank
    global_batch: int
    total: int
    world: int

    @classmethod
    def of(cls, order, batch_size: int) -> "EpochShard":
        order = np.asarray(order)
        w, r = world_size(), rank()
        if batch_size % w:
            raise ValueError(f"batch size {batch_size} must be a multiple of the {w} processes, so that every "
                             "process takes an equal share of each batch; choose e.g. "
                             f"{max(w, batch_size - batch_size % w)}.")
        per = batch_size // w
        mine = [order[s + r * per: min(s + (r + 1) * per, len(order))] for s in range(0, len(order), batch_size)]
        mine = np.concatenate(mine) if mine else order[:0]
        return cls(order=mine, batch_size=per, global_batch=batch_size, total=len(order), world=w)

    def loss_weight(self, step: int) -> float:
        """Factor for the summed loss of local batch `step`: world / (size of the global batch)."""
        start = step * self.global_batch
        return self.world / max(1, min(self.global_batch, self.total - start))


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """`model` for training on this rank: DDP when launched, the model itself otherwise.

    On CUDA BatchNorm layers become SyncBatchNorm, so the statistics of a batch are those of the
    global batch, as in one process. gloo has no synchronised BatchNorm: on the CPU each process
    normalises with the statistics of its own slice (the usual DDP behaviour), so a model with
    BatchNorm differs slightly from a one-process run; models without batch statistics match.
    """
    if not active():
        return model
    if device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return nn.parallel.DistributedDataParallel(model, device_ids=[device.index], output_device=device.index)
    return nn.parallel.DistributedDataParallel(model)


@contextlib.contextmanager
def join(module: nn.Module):
    """Context for a training loop under DDP: ranks may take different numbers of steps (the short last
    batch), and on leaving it every rank holds rank 0's parameters and buffers. (BatchNorm's running
    statistics are updated by each rank's own forward passes; the model saved and the store's key must
    be one and the same on every rank.)"""
    if not isinstance(module, nn.parallel.DistributedDataParallel):
        yield
        return
    from torch.distributed.algorithms.join import Join

    with Join([module], divide_by_initial_world_size=True):
        yield
    for tensor in list(module.module.parameters()) + list(module.module.buffers()):
        dist.broadcast(tensor.data, src=0)


def same_on_all_ranks(value, what: str) -> None:
    """Raise when ranks disagree on a small picklable value (e.g. a store key: all must hold one model)."""
    if not active():
        return
    values = [None] * world_size()
    dist.all_gather_object(values, value)
    if any(v != values[0] for v in values):
        raise RuntimeError(f"the {world_size()} processes disagree on {what}: {values}")


def unwrap(module: nn.Module) -> nn.Module:
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module


def finish() -> None:
    """Leave the process group (end of a torchrun command)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
