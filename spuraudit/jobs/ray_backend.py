"""Running queued jobs on a Ray cluster instead of in local processes (optional: `pip install -e '.[cluster]'`).

The SQLite queue stays the one place where jobs live: pages and the CLI submit to it as always, and
the Jobs page reads progress, logs and state from it. What changes is where a claimed job runs. A
worker whose backend is Ray (`SPURAUDIT_JOBS_BACKEND=ray`, or `spuraudit worker --backend ray`)
connects to the cluster (`SPURAUDIT_RAY_ADDRESS`: "auto", "ray://head:10001", or "local" for a
private instance on this machine) and sends each job it claims there as one Ray task. The task calls
the job function with a context whose progress, log lines and cancel checks travel through a small
Ray actor (`JobChannel`); the worker drains that channel into the job's row and log file. Cancel on
the Jobs page sets the row's flag as usual; the worker then tells the job through the channel and
cancels the task with `ray.cancel(force=True)`, which kills the process running it on its node.

The cluster's nodes need spuraudit installed and the spuraudit home (projects, models) at the same
path (a shared file system): jobs read and write projects there, never the queue's database.
"""

from __future__ import annotations

import json
import os
import socket
import time
import traceback
from pathlib import Path
from typing import Any

from .context import LOG_FILE, JobCancelled
from .job import Job
from .kinds import target_for
from .util import utc_now

BACKEND_ENV = "SPURAUDIT_JOBS_BACKEND"  # "local" (default) or "ray"
ADDRESS_ENV = "SPURAUDIT_RAY_ADDRESS"  # "auto" (default), "local", or a cluster address
CPUS_ENV = "SPURAUDIT_RAY_CPUS"  # CPUs each job asks for (default 1)
LOCAL_CPUS_ENV = "SPURAUDIT_RAY_LOCAL_CPUS"  # size of the private "local" instance (default 2)
GPUS_ENV = "SPURAUDIT_RAY_GPUS"  # GPUs each job asks for (default 0)
BACKENDS = ("local", "ray")
PLACEMENT_FILE = "placement.json"  # where a job runs: backend, host, process, device (the Jobs page shows it)


def backend_name() -> str:
    name = (os.environ.get(BACKEND_ENV) or "local").strip().lower()
    if name not in BACKENDS:
        raise ValueError(f"{BACKEND_ENV}={name!r}: the job backend must be one of {BACKENDS}")
    return name


def available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def _require_ray():
    try:
        import ray
    except ImportError as exc:
        raise RuntimeError("the Ray job backend needs Ray: pip install -e '.[cluster]'") from exc
    return ray


def connect() -> None:
    """Join the cluster once per worker process (or start a private instance for "local")."""
    ray = _require_ray()
    if ray.is_initialized():
        return
    address = os.environ.get(ADDRESS_ENV) or "auto"
    if address == "local":
        ray.init(num_cpus=int(_number(LOCAL_CPUS_ENV, 2)), include_dashboard=False, log_to_driver=False)
    else:
        ray.init(address=address, log_to_driver=False)


def _number(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name) or default)
    except ValueError as exc:
        raise ValueError(f"{name} must be a number, got {os.environ.get(name)!r}") from exc


def write_placement(work_dir: str | Path, info: dict[str, Any]) -> None:
    """Record where a job runs (temp + rename: the page never reads half a file)."""
    path = Path(work_dir) / PLACEMENT_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(info))
    os.replace(tmp, path)


def read_placement(work_dir: str | Path) -> dict[str, Any] | None:
    try:
        return json.loads((Path(work_dir) / PLACEMENT_FILE).read_text())
    except (OSError, ValueError):
        return None


def process_device() -> str:
    """The device a job in this process computes on unless told otherwise (see `training.pick_device`).

    Without torch loaded yet, judged from the environment and the driver's device files, so a job
    runner does not pay torch's import for this note."""
    import sys

    if "torch" in sys.modules:
        from ..training import pick_device

        return str(pick_device())
    if os.environ.get("SPURAUDIT_DEVICE"):
        return os.environ["SPURAUDIT_DEVICE"]
    gpu = Path("/dev/nvidia0").exists() and os.environ.get("CUDA_VISIBLE_DEVICES", "0") not in ("", "-1")
    return "cuda" if gpu else "cpu"


# ---- inside the cluster ---------------------------------------------------------------------------
class RayJobContext:
    """The `ctx` a job function gets on the cluster: `JobContext`'s interface over a `JobChannel`."""

    def __init__(self, channel, job_id: int, work_dir: str | Path, min_interval: float = 0.2,
                 cancel_poll_interval: float = 0.5) -> None:
        self.channel = channel
        self.job_id = int(job_id)
        self.work_dir = Path(work_dir)
        try:
            self.work_dir.mkdir(parents=True, exist_ok=True)
        except OSError:  # the job folder is not shared with this node: a private one will do
            import tempfile

            self.work_dir = Path(tempfile.mkdtemp(prefix=f"spuraudit-job-{job_id}-"))
        self.log_path = self.work_dir / LOG_FILE
        self.min_interval = min_interval
        self.cancel_poll_interval = cancel_poll_interval
        self._last_write = -1e18
        self._pending: tuple[float | None, str] | None = None
        self._last_poll = -1e18
        self._cancelled = False

    def progress(self, fraction: float | None, message: str = "") -> None:
        fraction = None if fraction is None else min(max(float(fraction), 0.0), 1.0)
        now = time.monotonic()
        if now - self._last_write >= self.min_interval or (fraction is not None and fraction >= 1.0):
            self._last_write = now
            self._pending = None
            self.channel.report.remote(fraction, message)
        else:
            self._pending = (fraction, message)

    def flush(self) -> None:
        if self._pending is not None:
            fraction, message = self._pending
            self._pending = None
            self.channel.report.remote(fraction, message)

    def log(self, message: str) -> None:
        stamp = utc_now()
        lines = str(message).rstrip("\n").splitlines() or [""]
        self.channel.log.remote("".join(f"{stamp} {line}\n" for line in lines))

    def request_cancel(self) -> None:
        self._cancelled = True

    def cancelled(self) -> bool:
        if self._cancelled:
            return True
        now = time.monotonic()
        if now - self._last_poll >= self.cancel_poll_interval:
            import ray

            self._last_poll = now
            self._cancelled = bool(ray.get(self.channel.is_cancelled.remote()))
        return self._cancelled

    def check_cancelled(self) -> None:
        if self.cancelled():
            raise JobCancelled(f"job {self.job_id} was cancelled")

    def iterate(self, iterable, total=None, message="", start=0.0, end=1.0):
        from .context import JobContext

        return JobContext.iterate(self, iterable, total, message, start, end)  # type: ignore[arg-type]


def _channel_class():
    import ray

    @ray.remote(num_cpus=0)
    class JobChannel:
        """Progress, log text and the cancel flag of one job, between the task and the worker."""

        def __init__(self):
            self.reports: list[tuple[float | None, str]] = []
            self.text: list[str] = []
            self.placement: dict | None = None
            self.cancel_flag = False

        def report(self, fraction, message):
            self.reports.append((fraction, message))

        def log(self, text):
            self.text.append(text)

        def place(self, info):
            self.placement = info

        def cancel(self):
            self.cancel_flag = True

        def is_cancelled(self):
            return self.cancel_flag

        def drain(self):
            out = (self.reports, "".join(self.text), self.placement)
            self.reports, self.text, self.placement = [], [], None
            return out

    return JobChannel


def _run_in_cluster(target: str, params: dict, job_id: int, work_dir: str, channel) -> dict:
    """The body of the Ray task: the job function, its outcome as a JSON-able dict."""
    import ray

    from .kinds import load_target

    gpus = ray.get_gpu_ids()
    if gpus and not os.environ.get("SPURAUDIT_DEVICE"):
        os.environ["SPURAUDIT_DEVICE"] = "cuda"  # Ray set CUDA_VISIBLE_DEVICES to this task's GPU(s)
    channel.place.remote({"backend": "ray", "host": socket.gethostname(), "pid": os.getpid(),
                          "node": ray.get_runtime_context().get_node_id(), "device": process_device(),
                          "gpus": [str(g) for g in gpus]})
    ctx = RayJobContext(channel, job_id, work_dir)
    ctx.log(f"job {job_id} started on {socket.gethostname()} (Ray), process {os.getpid()}")
    try:
        result = load_target(target)(ctx, **params)
        ctx.flush()
        json.dumps(result)
        return {"status": "done", "result": result}
    except JobCancelled:
        ctx.flush()
        return {"status": "cancelled"}
    except BaseException as exc:  # noqa: BLE001 - reported to the row by the worker
        ctx.flush()
        return {"status": "failed", "error": traceback.format_exc(), "message": f"{type(exc).__name__}: {exc}"}


# ---- in the worker ---------------------------------------------------------------------------------
def run_claimed(queue, job: Job, worker_pid: int, stop, stop_reason, say, cancel_grace: float = 5.0,
                tick: float = 0.25, heartbeat_every: float = 2.0) -> str:
    """Run a claimed job as a Ray task and mirror it into its row until it ends; returns its final status.

    `stop_reason(queue, job, stop)` and `say(text)` are the worker's own (why to stop the job, its log)."""
    _stop_reason, _say, HEARTBEAT_EVERY_S = stop_reason, say, heartbeat_every
    ray = _require_ray()
    connect()
    work_dir = queue.work_dir(job.id)
    work_dir.mkdir(parents=True, exist_ok=True)
    log_path = work_dir / LOG_FILE
    queue.set_runner(job.id, worker_pid, log_path)
    channel = _channel_class().remote()
    # max_calls=1: a fresh process per job, as with local jobs (memory and GPU memory are returned when it
    # ends, and a job that stopped is really gone); max_retries=0: a failed job is reported, not rerun.
    # (max_calls is a property of the remote function, not an option of one call.)
    task = ray.remote(max_calls=1, max_retries=0)(_run_in_cluster).options(
        num_cpus=_number(CPUS_ENV, 1), num_gpus=_number(GPUS_ENV, 0))
    ref = task.remote(job.target or target_for(job.kind), job.params, job.id, str(work_dir), channel)
    _say(f"job {job.id} ({job.kind}) sent to Ray")
    write_placement(work_dir, {"backend": "ray", "device": "waiting for a node"})

    def drain() -> None:
        try:
            reports, text, placement = ray.get(channel.drain.remote(), timeout=30)
        except Exception:  # noqa: BLE001 - the channel died with a cancelled task's node: nothing to copy
            return
        if text:
            with open(log_path, "a", encoding="utf-8") as fh:
                fh.write(text)
        if placement:
            write_placement(work_dir, placement)
        if reports:
            fractions = [f for f, _ in reports if f is not None]
            messages = [m for _, m in reports if m]
            queue.set_progress(job.id, fractions[-1] if fractions else None, messages[-1] if messages else None)

    reason = None
    stopped_at = 0.0
    last_beat = time.monotonic()
    outcome: dict | None = None
    while True:
        done, _ = ray.wait([ref], timeout=tick)
        drain()
        if done:
            try:
                outcome = ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - a cancelled or crashed task
                outcome = {"status": "cancelled" if reason else "failed",
                           "error": f"the Ray task ended without a result: {exc}",
                           "message": f"Ray task lost ({type(exc).__name__})"}
            break
        now = time.monotonic()
        if now - last_beat >= HEARTBEAT_EVERY_S:
            queue.touch_worker(worker_pid, job.id)
            last_beat = now
        if reason is None:
            reason, _ended = _stop_reason(queue, job, stop)
            if reason is not None:
                _say(f"job {job.id}: stopping its Ray task ({reason})")
                channel.cancel.remote()
                stopped_at = now
        elif now - stopped_at >= min(cancel_grace, 2.0):
            ray.cancel(ref, force=True)  # kills the process that runs it, wherever it is
    drain()
    status = outcome.get("status")
    if reason == "cancelled" or (status == "cancelled" and reason):
        queue.mark_cancelled(job.id)
        final = "cancelled"
    elif reason == "worker stopped":
        queue.fail(job.id, "the worker was stopped while the job ran on Ray", message="stopped")
        final = "failed"
    elif status == "done":
        queue.finish(job.id, outcome.get("result"))
        final = "done"
    else:
        queue.fail(job.id, outcome.get("error") or "the job failed on Ray", message=outcome.get("message"))
        final = "failed"
    with open(log_path, "a", encoding="utf-8") as fh:
        fh.write(f"{utc_now()} {final} (Ray)\n")
    try:
        ray.kill(channel)
    except Exception:  # noqa: BLE001 - already gone
        pass
    _say(f"job {job.id}: {final}")
    return final
