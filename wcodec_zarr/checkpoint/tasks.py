"""Running many tasks of known weight (bytes) with a progress bar: in this process, a bounded
number in flight (threads, or coroutines on zarr's event loop), or on a Dask cluster. ``convert``
and ``verify`` run one task per shard this way."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from tqdm.auto import tqdm
from zarr.core.sync import sync

IN_FLIGHT_BYTES = 128 << 20  # source bytes of the tasks in flight in this process
MAX_TASKS = 8

T = TypeVar("T")


@contextlib.contextmanager
def dask_client(workers: Any) -> Iterator[Any]:
    """A ``distributed`` client: ``workers`` is a worker count (a LocalCluster of that many
    single-threaded processes), a scheduler address, or a ``Client``."""
    import distributed

    if isinstance(workers, distributed.Client):
        yield workers
    elif isinstance(workers, str):
        with distributed.Client(workers) as client:  # type: ignore[no-untyped-call]
            yield client
    else:
        with (
            distributed.LocalCluster(  # type: ignore[no-untyped-call]
                n_workers=int(workers),
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
            ) as cluster,
            distributed.Client(cluster) as client,  # type: ignore[no-untyped-call]
        ):
            yield client


async def _gather_bounded(
    fn: Callable[[Any], Awaitable[Any]],
    tasks: Sequence[Any],
    weights: Sequence[int],
    budget: int,
    advance: Callable[[int], Any],
) -> list[Any]:
    """Runs the tasks in order, as many at once as fit in ``budget`` bytes of weight (at least
    one, at most ``MAX_TASKS``); results in task order. The first failure stops the launches."""

    async def run(task: Any, weight: int) -> Any:
        result = await fn(task)
        advance(weight)
        return result

    started: list[asyncio.Future[Any]] = []
    in_flight: list[tuple[asyncio.Future[Any], int]] = []
    try:
        for task, weight in zip(tasks, weights, strict=True):
            while in_flight and (
                len(in_flight) >= MAX_TASKS or sum(w for _, w in in_flight) + weight > budget
            ):
                futures = [f for f, _ in in_flight]
                done, _ = await asyncio.wait(futures, return_when="FIRST_COMPLETED")
                for future in done:
                    if future.exception() is not None:
                        raise future.exception()  # type: ignore[misc]
                in_flight = [(f, w) for f, w in in_flight if f not in done]
            future = asyncio.ensure_future(run(task, weight))
            started.append(future)
            in_flight.append((future, weight))
        if started:
            await asyncio.wait(started)
        return [f.result() for f in started]
    except BaseException:
        # a failure, or this coroutine cancelled (Ctrl-C in the caller, ``_sync_to_the_end``):
        # the tasks started finish first (``wait``, unlike ``gather``, does not cancel them:
        # their encoding runs on threads that would go on writing), so that none still writes
        # once the caller removes what they wrote
        if started:
            await asyncio.wait(started)
        raise


def _sync_to_the_end(coro: Awaitable[T]) -> T:
    """``coro`` run on zarr's event loop (``sync``). Should this thread be interrupted meanwhile
    (Ctrl-C), the coroutine is cancelled there and waited for before the interruption goes on:
    ``sync`` alone would leave it running, writing into what the caller then removes."""
    runner: list[asyncio.Task[Any]] = []

    async def tracked() -> T:
        task = asyncio.current_task()
        if task is not None:
            runner.append(task)
        return await coro

    try:
        return sync(tracked())
    except BaseException:
        if runner:
            task, finished = runner[0], threading.Event()

            def stop() -> None:
                task.add_done_callback(lambda _: finished.set())
                task.cancel()

            task.get_loop().call_soon_threadsafe(stop)
            finished.wait()
        raise


def run_tasks(
    fn: Callable[[Any], Any],
    tasks: Sequence[Any],
    weights: Sequence[int],
    *,
    workers: Any,
    progress: bool | None,
    desc: str,
    local_fn: Callable[[Any], Awaitable[Any]] | None = None,
) -> list[Any]:
    """Runs ``fn`` over ``tasks`` here (``workers`` None or 1) or on Dask; results in task
    order. Here, ``local_fn`` (a coroutine function doing the same) runs on zarr's event loop
    instead when given. Tasks in flight here hold at most about ``IN_FLIGHT_BYTES``. The
    progress bar advances by each task's weight (bytes)."""
    show = sys.stderr.isatty() if progress is None else progress
    with tqdm(total=sum(weights), unit="B", unit_scale=True, desc=desc, disable=not show) as bar:
        if workers is None or workers == 1:
            # a few tasks in flight overlap one task's Python and I/O with another's encoding
            # (native code releases the GIL)
            budget = 0 if workers == 1 else IN_FLIGHT_BYTES
            if local_fn is not None:
                bounded = _gather_bounded(local_fn, tasks, weights, budget, bar.update)
                return _sync_to_the_end(bounded)
            heaviest = max(weights, default=1)
            # more threads than CPUs only add switching (two still overlap reads with encoding)
            cpus = max(2, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2)
            limit = max(1, min(MAX_TASKS, cpus, budget // max(heaviest, 1)))
            pool = ThreadPoolExecutor(limit)
            try:
                results = []
                for result, weight in zip(pool.map(fn, tasks), weights, strict=True):
                    results.append(result)
                    bar.update(weight)
                return results
            finally:
                # after a failure or Ctrl-C, tasks not started yet are dropped, not run
                pool.shutdown(wait=True, cancel_futures=True)
        import distributed

        with dask_client(workers) as client:
            futures = client.map(fn, tasks, pure=False)
            position = {f.key: i for i, f in enumerate(futures)}
            for future in distributed.as_completed(futures):  # type: ignore[no-untyped-call]
                bar.update(weights[position[future.key]])
            gathered: list[Any] = client.gather(futures)
            return gathered
