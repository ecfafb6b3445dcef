"""The Ray executor: each task of a pass is a Ray task, on a Ray cluster or on a Ray instance started here.

    refinery run recipe.yaml --executor ray                      # as ray.init(): $RAY_ADDRESS, else the cluster
                                                                 # `ray start` started here, else a new instance
    refinery run recipe.yaml --executor ray --address local      # always a new Ray instance, for this run only
    refinery run recipe.yaml --executor ray --address HOST:6379  # any cluster; ray://HOST:10001 is Ray Client

What the nodes need (docs/cluster.md):
- The run folder at the same path on every node (shared storage such as NFS): tasks write their outputs there and
  the driver reads them back. A task on a node that cannot see it fails at once, naming the node. With an output
  on object storage (`output: s3://...`) that folder is the run's staging folder ($REFINERY_STAGING), and the
  driver publishes the finished run (refinery.pipelines.engine.publish).
- The object-store settings the driver has (AWS_ENDPOINT_URL, credentials, ...: corpora.storage.SETTING_VARIABLES)
  are set in the tasks' workers too (a runtime env), so tasks read s3:// inputs as the driver does.
- `refinery` importable by the worker processes. On one machine that is the installed (or editable) package; on a
  cluster, install it in the nodes' image, or give Ray a runtime_env (`ray job submit --runtime-env-json ...`).

Progress: a task reports the records it reads to a small counter actor (calls that do not wait), and waits for its
reports to land before it returns, so the bar is exact when a pass ends; the driver reads the counter between
completions, as the local executor drains its queue.

Retries: a task whose worker process or node dies is retried by Ray (`max_retries`, Ray's default 3); a task that
raises is not (the error is the input's or the code's and would come back): it becomes TaskFailed naming the task,
and the tasks in flight are cancelled.

Why a retry cannot change the output (the tasks are idempotent):
1. A task's outputs are a function of its job alone (its input range, the stages, the previous pass's decisions),
   never of the attempt, the node or the time, so every attempt writes the same bytes.
2. A task clears its outputs first, writes each one under a temp name renamed into place when complete, and
   writes its done-marker last. An attempt killed midway leaves no marker, so it is redone from nothing; its temp
   files (`.NAME.tmp-PID`) never carry a real name, and the next run of the folder deletes them.
3. Ray starts a retry only once the previous attempt's worker is known to be dead, so two attempts of a task never
   interleave their clearing and writing (a node cut off by the network but still running is the exception Ray
   itself cannot rule out; its attempt writes the same bytes).
4. An attempt that completed (marker written) on a node that died before Ray had its result is retried too: the
   retry finds the marker and returns it without redoing the work. So the task leaves one result, and there is no
   window in which a marker exists while a redo has cleared the outputs (a driver crash there would leave a marker
   without its files).
5. The engine decides completion from the markers only, so a crashed driver's rerun redoes exactly the tasks
   without one.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from refinery.pipelines.engine.executors import register
from refinery.pipelines.engine.executors.base import Executor, TaskFn, guarded

INSTALL_HINT = 'pip install "refinery[ray]" (from a checkout: pip install -e ".[ray]")'
SHARED_STORAGE = ("with --executor ray every node must see the run folder, the inputs and the stages' files at the "
                  "same paths: put them on storage all nodes mount (NFS or similar; see docs/cluster.md)")
POLL_SECONDS = 0.2  # how often the driver reads progress while no task finishes
CANCEL_WAIT_SECONDS = 10.0  # cancelled tasks get this long to stop before the run's lock is released


def import_ray() -> Any:
    """The `ray` module, imported on first use: the registry stays cheap, and works where ray is not installed."""
    try:
        import ray
    except ImportError:
        raise ImportError(f"--executor ray needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


class _Counter:
    """Records read, reported by the tasks and taken by the driver (a Ray actor, one per executor)."""

    def __init__(self) -> None:
        self.total = 0

    def add(self, n: int) -> None:
        self.total += n

    def take(self) -> int:
        total, self.total = self.total, 0
        return total


def _attempt(fn: TaskFn, job: Any, counter: Any) -> Any:
    """One attempt of one task, in a Ray worker process (see the module docstring for points 2–4; a retry of an
    attempt that completed returns its done-marker: run_task does that for every executor)."""
    ray = import_ray()
    run_dir = getattr(job, "run_dir", None)  # a TaskJob; other jobs (tests of the contract) carry none
    if run_dir is not None:
        from refinery.pipelines.engine.layout import RunLayout

        if not RunLayout(run_dir).manifest.is_file():
            node = ray.get_runtime_context().get_node_id()
            raise FileNotFoundError(f"node {socket.gethostname()} (Ray node {node[:12]}) does not see the run folder "
                                    f"{run_dir}: {SHARED_STORAGE}")
    sent: list[Any] = []
    result = fn(job, lambda n: sent.append(counter.add.remote(n)))
    if sent:  # errors (a lost counter) are not the task's: wait, never get
        ray.wait(sent, num_returns=len(sent), timeout=30)
    return result


@register
class RayExecutor(Executor):
    """Ray tasks on a Ray cluster: `address` as `ray.init` takes it (None: $RAY_ADDRESS, else the cluster `ray
    start` started on this machine, else a Ray instance started for this run; "local": always the last), at most
    `workers` in flight (None: the cluster's CPUs at each pass), each retried up to `max_retries` times when its
    worker or node dies. Where this process is already connected to Ray, that connection is used as it is (the
    address is not looked at) and left open by close()."""

    name = "ray"

    def __init__(self, workers: int | None = None, address: str | None = None, max_retries: int = 3):
        ray = import_ray()
        self.workers = workers
        self.max_retries = max_retries
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self._owns_ray = not ray.is_initialized()  # a caller's own connection is the caller's to close
        if self._owns_ray:
            _connect(ray, self.address)
        self._attempt = ray.remote(_attempt)
        self._counter: Any = None

    def map(
        self, fn: TaskFn, jobs: Sequence[Any], on_progress: Callable[[int], None], describe: Callable[[Any], str]
    ) -> Iterator[tuple[Any, Any]]:
        """Yield (job, result) as tasks finish; `on_progress(n)` receives records read as they are read."""
        if not jobs:
            return
        ray = import_ray()
        counter = self._progress_counter()
        progress = _ProgressReader(ray, counter)
        limit = max(1, self.workers or int(ray.cluster_resources().get("CPU", 0)) or 1)
        waiting = iter(enumerate(jobs))
        in_flight: dict[Any, int] = {}

        attempt = self._attempt.options(max_retries=self.max_retries, retry_exceptions=False,
                                        runtime_env=_store_settings())

        def submit() -> None:
            for index, job in itertools.islice(waiting, limit - len(in_flight)):
                in_flight[attempt.remote(fn, job, counter)] = index

        try:
            submit()
            while in_flight:
                refs = list(in_flight)
                ready, _ = ray.wait(refs, num_returns=1, timeout=POLL_SECONDS)
                if ready:  # take every task that has finished, not only the first
                    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
                progress.read(on_progress)
                for ref in sorted(ready, key=in_flight.__getitem__):
                    job = jobs[in_flight.pop(ref)]
                    result = guarded(lambda r=ref: _result(ray, r), job, describe)
                    submit()  # before yielding: the engine's bookkeeping never leaves a slot idle
                    yield job, result
            progress.read(on_progress, final=True)
        except BaseException:
            _cancel(ray, list(in_flight))
            raise

    def close(self) -> None:
        """Stop the progress actor; disconnect from Ray (stopping the instance) only if this executor started it."""
        ray = import_ray()
        if self._counter is not None and ray.is_initialized():
            try:
                ray.kill(self._counter)
            except Exception:  # the cluster is gone: the counter with it; never hide why the run stopped
                pass
            self._counter = None
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()

    def _progress_counter(self) -> Any:
        if self._counter is None:
            ray = import_ray()
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            # Beside the driver when it is a node of the cluster (soft: anywhere else otherwise); restarted if its
            # node dies, losing only counts of the bar. It takes no CPU, so it never waits for a task slot.
            here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
            self._counter = ray.remote(_Counter).options(num_cpus=0, max_restarts=-1, scheduling_strategy=here).remote()
        return self._counter


def _store_settings() -> dict[str, Any] | None:
    """A runtime env with the object-store settings of this process (endpoint, region, credentials, as
    refinery.corpora.storage lists them) for the tasks' workers, so tasks reach the stores the driver reaches."""
    from refinery.corpora.storage import SETTING_VARIABLES

    settings = {name: os.environ[name] for name in SETTING_VARIABLES if name in os.environ}
    return {"env_vars": settings} if settings else None


class _ProgressReader:
    """The driver's side of the counter: one `take` in flight at a time, never blocking the loop."""

    def __init__(self, ray: Any, counter: Any):
        self.ray, self.counter, self.pending = ray, counter, None

    def read(self, on_progress: Callable[[int], None], final: bool = False) -> None:
        for _ in range(2 if final else 1):  # final: a fresh take after every task's reports have landed
            if self.pending is None:
                self.pending = self.counter.take.remote()
            ready, _ = self.ray.wait([self.pending], timeout=10 if final else 0)
            if not ready:
                return
            try:
                taken = self.ray.get(self.pending)
            except self.ray.exceptions.RayError:  # the counter's node died: it restarts, the bar misses a few
                taken = 0
            self.pending = None
            if taken:
                on_progress(taken)


class WorkerEnvironmentError(RuntimeError):
    """A Ray worker could not load the task: its Python environment is not the driver's."""


def _result(ray: Any, ref: Any) -> Any:
    """A task's result; when the task raised, its own exception (the Ray error, with the remote traceback, as
    the cause), so TaskFailed says `ValueError: ...` rather than Ray's wrapper."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as err:
        cause = err.cause if isinstance(err.cause, Exception) else None
        if isinstance(cause, ray.exceptions.RaySystemError):  # e.g. "No module named ..." unpickling the task
            raise WorkerEnvironmentError(
                f"{str(cause).splitlines()[0]} (a Ray worker could not load the task: every node needs refinery, "
                "the same version as the driver's, importable by Ray's workers; see docs/cluster.md)") from err
        if cause is None:
            raise
        raise cause from err


def _cancel(ray: Any, refs: list[Any]) -> None:
    """Cancel tasks in flight (a queued one never starts, a running one gets KeyboardInterrupt) and give them a
    moment to stop, so a rerun started at once does not meet them writing."""
    for ref in refs:
        try:
            ray.cancel(ref)
        except Exception:  # already finished, or its node is gone: nothing to stop
            pass
    if refs:
        ray.wait(refs, num_returns=len(refs), timeout=CANCEL_WAIT_SECONDS)


def _connect(ray: Any, address: str | None) -> None:
    where = f"the Ray cluster at {address}" if address and address != "local" else "Ray on this machine"
    if address and address not in ("auto", "local") and "://" not in address:
        _check_reachable(address)
    try:
        ray.init(address=address, logging_level=logging.WARNING)
    except (Exception, SystemExit) as err:  # Ray exits (SystemExit) when its GCS never answers
        client = " (ray:// addresses need Ray Client: pip install \"ray[client]\")" if "://" in (address or "") else ""
        reason = f"{type(err).__name__}: {str(err).rstrip('. ')}{client}"
        raise ConnectionError(f"could not connect to {where}: {reason}; check --address (or RAY_ADDRESS), start a "
                              "cluster with `ray start --head` (then --address auto), or give --address local to "
                              "start Ray on this machine for the run") from err


def _check_reachable(address: str) -> None:
    """Fail in seconds, not after Ray's two-minute wait, when nothing listens at HOST:PORT."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConnectionError(f"--address {address!r} is not HOST:PORT, auto, local or ray://HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as err:
        raise ConnectionError(f"nothing answers at {address} ({err}): is the Ray head running there (`ray status` "
                              "on it prints the address), and is the port open from this machine?") from None


__all__ = ["INSTALL_HINT", "RayExecutor", "import_ray"]
