"""``--engine dask``: the same work as :mod:`analyzers.parallel`, spread over a Dask cluster.

Files are tasks; a file of at least ``split_bytes`` becomes one task per flow shard (as many shards
as the cluster has worker threads), and the shards are stitched back together by
:func:`analyzers.parallel.merge_results` exactly as on one machine, so every document equals
``analyze_file(path, options).to_dict()``.

The workers open the files themselves: every path must be readable at the same name on every
worker (a shared or replicated file system), as for ``dask.dataframe.read_csv``.  Only picklable
options travel (no observers, no ``keep_payload`` callable).

``distributed`` is an optional dependency (``pip install 'loopcap[dask]'``); it is imported only
when this engine runs.
"""

from __future__ import annotations

import importlib
import os
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from analyzers.analysis import AnalysisOptions
from analyzers.errors import UsageError
from analyzers.parallel import (
    DEFAULT_SPLIT_BYTES,
    TaskResult,
    can_cross_processes,
    merge_results,
    plan_tasks,
    run_task,
)

__all__ = ["analyze_many_dask", "connect", "iter_analyze_many_dask"]


def _distributed() -> Any:
    """The ``distributed`` module (typed as Any: its API is only partly annotated)."""
    try:
        return importlib.import_module("distributed")
    except ImportError:  # pragma: no cover - dask is installed with the dev/dask extras
        raise UsageError("--engine dask needs the 'distributed' package",
                         hint="Install it with: pip install 'loopcap[dask]'") from None


def connect(scheduler: str, timeout: str | float = "10s") -> Any:
    """A ``distributed.Client`` for a scheduler address such as ``tcp://10.0.0.5:8786``."""
    dist = _distributed()
    try:
        return dist.Client(scheduler, timeout=timeout)
    except (OSError, TimeoutError) as exc:
        raise UsageError(f"cannot reach the Dask scheduler at {scheduler}: {exc}",
                         hint="Start one with `dask scheduler` (and `dask worker ADDRESS` on each machine), "
                              "or check the address.") from None


def _worker_threads(client: Any) -> int:
    try:
        return max(1, sum(int(n) for n in client.nthreads().values()))
    except Exception:  # pragma: no cover - a scheduler without workers yet
        return 1


def iter_analyze_many_dask(paths: Sequence[str | os.PathLike[str]], options: AnalysisOptions | None = None, *,
                           scheduler: str | Any, split_bytes: int = DEFAULT_SPLIT_BYTES,
                           shards: int | None = None, connect_timeout: str | float = "10s"
                           ) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``(path, loopcap/1 document)`` for every file, in the order given.

    ``scheduler`` is an address (a client is opened and closed here) or a ``distributed.Client``.
    ``shards`` (default: the cluster's worker threads) is how many flow shards a large file is cut
    into.  A file that cannot be read raises its :class:`~analyzers.errors.LoopcapError` at its turn."""
    if not can_cross_processes(options):
        raise UsageError("--engine dask cannot run observers or a keep_payload callable on the cluster",
                         hint="Use the local engine for follow-style options.")
    names = [os.fspath(p) for p in paths]
    if not names:
        return
    own = isinstance(scheduler, str)
    client: Any = connect(scheduler, connect_timeout) if isinstance(scheduler, str) else scheduler
    try:
        as_completed = _distributed().as_completed
        n_shards = shards if shards is not None else _worker_threads(client)
        tasks = plan_tasks(names, max(1, n_shards), split_bytes)
        need = {t.index: t.shards for t in tasks}
        token = uuid.uuid4().hex[:12]
        futures = [client.submit(run_task, t, options, key=f"loopcap-{token}-{t.index}-{t.shard}", pure=False)
                   for t in tasks]
        parts: dict[int, list[TaskResult]] = {}
        ready: dict[int, list[TaskResult]] = {}
        nxt = 0
        try:
            for fut in as_completed(futures):
                r: TaskResult = fut.result()
                lst = parts.setdefault(r.task.index, [])
                lst.append(r)
                fut.release()
                if len(lst) == need[r.task.index]:
                    ready[r.task.index] = parts.pop(r.task.index)
                while nxt in ready:
                    yield names[nxt], merge_results(ready.pop(nxt))
                    nxt += 1
        finally:
            client.cancel([f for f in futures if not f.done()])
    finally:
        if own:
            client.close()


def analyze_many_dask(paths: Sequence[str | os.PathLike[str]], options: AnalysisOptions | None = None, *,
                      scheduler: str | Any, split_bytes: int = DEFAULT_SPLIT_BYTES,
                      shards: int | None = None, connect_timeout: str | float = "10s") -> list[dict[str, Any]]:
    """The ``loopcap/1`` document of every file (in order), computed on a Dask cluster; each equals
    ``analyze_file(path, options).to_dict()``."""
    return [doc for _, doc in iter_analyze_many_dask(paths, options, scheduler=scheduler,
                                                     split_bytes=split_bytes, shards=shards,
                                                     connect_timeout=connect_timeout)]
