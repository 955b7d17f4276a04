"""Group commit: concurrent write jobs share one database transaction and one fsync.

SQLite with synchronous=FULL costs one fsync per COMMIT; a mail server that commits each accepted
message alone is bounded by the disk's fsync rate. The committer collects the jobs waiting while the
previous commit runs (natural batching; optionally it also waits `window` seconds for more), runs them
one after the other in a single transaction, commits once, then resolves every waiter's future. A job
acknowledges its client only after that commit (ARCHITECTURE.md: 250 only after commit).

If the batch fails (one bad job, a deadlock, a lost connection), each job of the batch is run again
alone in its own transaction, so that one failing job never fails the others.

A job is `async def job(session) -> T`; it must be safe to run twice on a fresh transaction after a
rollback (it only writes through `session`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

log = logging.getLogger("mssante.store.groupcommit")

T = TypeVar("T")
Job = Callable[[AsyncSession], Awaitable[Any]]


class CommitterClosed(RuntimeError):
    pass


class GroupCommitter:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        max_batch: int = 64,
        window: float = 0.0,
        workers: int = 1,
    ) -> None:
        """`workers` concurrent batches (1 for SQLite's single writer; a few on PostgreSQL)."""
        self._sessions = sessions
        self._max_batch = max_batch
        self._window = window
        self._workers = max(1, workers)
        self._queue: asyncio.Queue[tuple[Job, asyncio.Future[Any]]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        self.batches = 0  # for benchmarks: commits made
        self.jobs = 0

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [asyncio.create_task(self._run(), name=f"groupcommit-{i}") for i in range(self._workers)]

    async def submit(self, job: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """Run `job` in a shared transaction; return its result once that transaction has committed."""
        if self._closed:
            raise CommitterClosed("the store is shutting down")
        self.start()
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((job, fut))
        return await fut

    async def close(self) -> None:
        """Finish the jobs already submitted, then stop."""
        self._closed = True
        while not self._queue.empty():
            await asyncio.sleep(0.005)
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except asyncio.CancelledError:
                pass
        self._tasks = []

    async def _collect(self) -> list[tuple[Job, asyncio.Future[Any]]]:
        batch = [await self._queue.get()]
        if self._window > 0:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self._window
            while len(batch) < self._max_batch:
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), left))
                except asyncio.TimeoutError:
                    break
        while len(batch) < self._max_batch and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        return batch

    async def _run(self) -> None:
        while True:
            batch = await self._collect()
            live = [(j, f) for j, f in batch if not f.cancelled()]
            while live:
                try:
                    results = await self._run_batch(live)
                except asyncio.CancelledError:
                    for _, f in live:
                        if not f.done():
                            f.set_exception(CommitterClosed("the store is shutting down"))
                    raise
                except _JobFailed as jf:
                    # One job raised: it alone fails; the others are run again without it (the failed
                    # transaction was rolled back, so nothing of theirs was kept).
                    _, f = live.pop(jf.index)
                    if not f.done():
                        f.set_exception(jf.error)
                    continue
                except Exception:
                    # The commit itself failed (disk, deadlock, lost connection): each job alone.
                    log.warning("group commit of %d jobs failed; retrying each alone", len(live), exc_info=True)
                    await self._one_by_one(live)
                    break
                self.batches += 1
                self.jobs += len(live)
                for (_, f), r in zip(live, results):
                    if not f.done():
                        f.set_result(r)
                break

    async def _one_by_one(self, live: list[tuple[Job, asyncio.Future[Any]]]) -> None:
        for job, f in live:
            try:
                (r,) = await self._run_batch([(job, f)])
            except asyncio.CancelledError:
                if not f.done():
                    f.set_exception(CommitterClosed("the store is shutting down"))
                raise
            except _JobFailed as jf:
                if not f.done():
                    f.set_exception(jf.error)
            except Exception as e:
                if not f.done():
                    f.set_exception(e)
            else:
                self.batches += 1
                self.jobs += 1
                if not f.done():
                    f.set_result(r)

    async def _run_batch(self, batch: list[tuple[Job, asyncio.Future[Any]]]) -> list[Any]:
        async with self._sessions() as session:
            async with session.begin():
                results = []
                for i, (job, _) in enumerate(batch):
                    try:
                        results.append(await job(session))
                    except asyncio.CancelledError:
                        raise
                    except Exception as e:
                        raise _JobFailed(i, e) from e
        return results


class _JobFailed(Exception):
    def __init__(self, index: int, error: Exception) -> None:
        super().__init__(str(error))
        self.index = index
        self.error = error
