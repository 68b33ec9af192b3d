"""Where work-unit tasks run (docs/scale.md): one context for all executors.

- in-process (the default): one task after another in this process;
- `local`: a Dask `LocalCluster` on this machine, one single-threaded worker process per core
  (Polars in each worker limited to one thread, so workers do not oversubscribe the cores);
- `tcp://HOST:PORT`: an existing Dask cluster (every worker must be able to read the trace's
  path); `dask`: the address in Dask's own configuration (`DASK_SCHEDULER_ADDRESS`).

Dask runs the same pure functions (units.py) through distributed futures; results come back in
task order whatever order they finish in, so the output is deterministic. Dask is an optional
extra: `pip install 'coherence-diag[dask]'`; it is imported only here, and only when asked for.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

from coherence_diag.errors import InputError

# After each finished task: (label, tasks done, tasks in all, the task's result).
ProgressCallback = Callable[[str, int, int, Any], None]

_INSTALL = "pip install 'coherence-diag[dask]'"


class Executor(Protocol):
    # Tasks this executor runs at once on this machine (a remote cluster's: 1, as a unit's
    # budget is per worker there): the whole-run budget is shared by that many units.
    units_at_once: int

    def share(self, value: Any) -> Any:
        """`value` as an argument every task receives (sent to a cluster's workers once)."""
        ...

    def map(
        self,
        fn: Callable[..., Any],
        args: Sequence[tuple[Any, ...]],
        *,
        progress: ProgressCallback | None = None,
        label: str = "units",
        keep: Callable[[Any], Any] | None = None,
    ) -> list[Any]:
        """`[fn(*a) for a in args]`, in that order; `progress` after each finished task. `keep`,
        in this process, on each result as it arrives (before the next: scale/spill.py writes
        a result's tables to disk so that results do not pile up in memory)."""
        ...


class InProcess:
    units_at_once = 1

    def share(self, value: Any) -> Any:
        return value

    def map(
        self,
        fn: Callable[..., Any],
        args: Sequence[tuple[Any, ...]],
        *,
        progress: ProgressCallback | None = None,
        label: str = "units",
        keep: Callable[[Any], Any] | None = None,
    ) -> list[Any]:
        results = []
        for done, a in enumerate(args, start=1):
            result = fn(*a)
            results.append(result if keep is None else keep(result))
            if progress is not None:
                progress(label, done, len(args), results[-1])
        return results


class DaskExecutor:
    """Tasks as Dask distributed futures on `client`'s cluster."""

    def __init__(self, client: Any, *, local_workers: int = 0) -> None:
        self.client = client
        # A LocalCluster's single-threaded workers run one unit each at once on this machine.
        self.units_at_once = max(1, local_workers)

    def share(self, value: Any) -> Any:
        return None if value is None else self.client.scatter(value, broadcast=True)

    def map(
        self,
        fn: Callable[..., Any],
        args: Sequence[tuple[Any, ...]],
        *,
        progress: ProgressCallback | None = None,
        label: str = "units",
        keep: Callable[[Any], Any] | None = None,
    ) -> list[Any]:
        from distributed import as_completed

        futures = [self.client.submit(fn, *a, pure=False) for a in args]
        slot = {f.key: i for i, f in enumerate(futures)}
        results: list[Any] = [None] * len(futures)
        pending = set(slot)
        try:
            for done, future in enumerate(as_completed(futures), start=1):
                result = future.result()  # raises the task's own error (a TraceError names the file)
                results[slot[future.key]] = result if keep is None else keep(result)
                pending.discard(future.key)
                future.release()  # the worker may drop its copy now
                if progress is not None:
                    progress(label, done, len(futures), results[slot[future.key]])
            return results
        finally:
            self.client.cancel([f for f in futures if f.key in pending])


@contextmanager
def executor(scheduler: str | None = None, *, workers: int | None = None) -> Iterator[Executor]:
    """The executor `scheduler` names: None or "" in-process, `local` (with `workers` processes,
    default one per core), `tcp://HOST:PORT`, or `dask` (Dask's configured scheduler address)."""
    if not scheduler:
        yield InProcess()
        return
    if scheduler != "local" and "://" not in scheduler and scheduler != "dask":
        raise InputError(f"--scheduler {scheduler!r}: expected local, a Dask scheduler address such as tcp://HOST:PORT, or dask")
    try:
        import dask
        from distributed import Client, LocalCluster
    except ImportError:
        raise InputError(f"--scheduler {scheduler} needs Dask, which is not installed: {_INSTALL}") from None
    if scheduler == "local":
        count = workers or local_workers()
        with _local_cluster(dask, LocalCluster, count) as cluster, Client(cluster) as client:
            yield DaskExecutor(client, local_workers=count)
        return
    address = scheduler if scheduler != "dask" else dask.config.get("scheduler-address", None)
    if not address:
        raise InputError("--scheduler dask: no scheduler address in Dask's configuration (set DASK_SCHEDULER_ADDRESS=tcp://HOST:PORT)")
    try:
        client = Client(address, timeout="10s")
    except OSError as exc:
        raise InputError(f"--scheduler {address}: cannot reach the Dask scheduler ({exc})") from None
    with client:
        yield DaskExecutor(client)


def local_workers() -> int:
    """The worker processes of `--scheduler local`: one per core."""
    return os.cpu_count() or 1


@contextmanager
def _local_cluster(dask: Any, local_cluster: Any, workers: int) -> Iterator[Any]:
    # POLARS_MAX_THREADS must be set before Polars is imported in a worker: Dask's pre-spawn
    # environment is set in this process just before each worker process starts (this process's
    # Polars is already imported, so unaffected); this process's environment is restored after.
    saved = os.environ.get("POLARS_MAX_THREADS")
    try:
        with dask.config.set({"distributed.nanny.pre-spawn-environ.POLARS_MAX_THREADS": "1"}):
            # ":0": the scheduler's HTTP server on a free port. It starts even without a dashboard,
            # on 8787 by default, and a second run at once then warns that the port is taken.
            cluster = local_cluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0")
    finally:
        if saved is None:
            os.environ.pop("POLARS_MAX_THREADS", None)
        else:
            os.environ["POLARS_MAX_THREADS"] = saved
    with cluster:
        yield cluster
