"""IMAP writes on the event loop, COMMIT on a thread (mssante.imap.sqlite_fast, issue 6).

The writer thread of `SqliteRunner` runs each operation's statements while the event loop's thread
runs everything else: the two take turns on the GIL, and every statement's return waits for the
loop to let go of it (up to the 5 ms switch interval when the loop is busy). The SQLite write lock
(and, with several IMAP processes, the write lock file) is held all that while.

`InlineWriter` runs a batch's statements on the loop itself, where they would have held the GIL
anyway, and hands only the COMMIT (the fsync) to a thread, so the loop never waits for the disk:

- operations queued in one loop iteration form a batch (≤ max_batch); while a batch commits, the
  next one queues;
- the loop never waits for a lock: with several IMAP processes, the lock file is tried with
  LOCK_NB and, when another process holds it, waited for on the commit thread while operations
  keep queueing (they join the batch that runs once the lock is ours); `BEGIN IMMEDIATE` runs
  with busy_timeout 0, and when SQLite's lock is held by a writer outside IMAP (the MTA), the batch
  goes to the runner's writer thread, which waits for it as before;
- each operation in its own SAVEPOINT, as on the thread (`run_ops`); callers are answered after
  COMMIT returned, never before: nothing is acknowledged that is not durable (synchronous=FULL).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import queue
import threading
from typing import Any

from mssante.imap.sqlite_fast import failed, rollback, run_ops, settle

log = logging.getLogger("mssante.imap.sqlite")


class InlineWriter:
    def __init__(self, runner: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._runner = runner  # SqliteRunner: connections, lock file, max_batch, the thread fallback
        self.loop = loop
        self._conn: sqlite3.Connection | None = None
        self._pending: list[Any] = []
        self._scheduled = False
        self.committing = False  # a COMMIT, or a wait for the lock file, is in flight on the thread
        # One commit thread, fed by a plain queue (a ThreadPoolExecutor.submit cost 2 % of the CPU).
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._thread_main, name="imap-sqlite-commit", daemon=True)
        self._thread.start()
        self.fallbacks = 0  # statistics: batches handed to the writer thread (SQLite's lock busy)
        self.lock_waits = 0  # statistics: batches that waited for another process's lock file

    def submit(self, item: Any) -> None:
        self._pending.append(item)
        if not self._scheduled and not self.committing:
            self._scheduled = True
            self.loop.call_soon(self._start)

    def drain_to_thread(self) -> None:
        """At shutdown: what has not started goes to the writer thread (which commits it)."""
        pending, self._pending = self._pending, []
        for item in pending:
            self._runner.to_thread(item)

    def _next(self) -> None:
        if self._pending and not self._scheduled and not self.committing:
            self._scheduled = True
            self.loop.call_soon(self._start)

    def _start(self) -> None:
        self._scheduled = False
        if self.committing or not self._pending:
            return
        r = self._runner
        try:
            if self._conn is None:
                self._conn = r.connect()
                self._conn.execute("PRAGMA busy_timeout=0")  # never wait on the loop
        except BaseException as e:  # noqa: BLE001 - every member gets the error
            batch, self._pending = self._pending, []
            self._answer(batch, [(False, e)] * len(batch))
            return
        if r.try_lock():
            self._run_locked()
            return
        # Another IMAP process writes: wait for the lock file on the commit thread (the loop goes
        # on; operations queue meanwhile and join the batch), then run the batch here.
        self.committing = True
        self.lock_waits += 1
        self._jobs.put((r.lock, (), self._locked))

    def _locked(self, out: tuple[bool, Any]) -> None:
        self.committing = False
        if not out[0]:  # cannot lock the file: the writer thread reports it
            self._fallback(self._take())
            return
        self._run_locked()

    def _take(self) -> list[Any]:
        n = self._runner.max_batch
        batch, self._pending = self._pending[:n], self._pending[n:]
        return batch

    def _run_locked(self) -> None:
        """The lock file is ours (or not needed): one transaction for the queued operations."""
        r = self._runner
        conn = self._conn
        assert conn is not None
        batch = self._take()
        if not batch:  # drained to the writer thread by a shutdown while we waited for the lock
            r.unlock()
            return
        try:
            conn.execute("BEGIN IMMEDIATE")
        except BaseException as e:  # noqa: BLE001 - never leave the lock file held
            r.unlock()
            if isinstance(e, sqlite3.OperationalError) and ("locked" in str(e) or "busy" in str(e)):
                self._fallback(batch)  # a writer of this process outside IMAP (the MTA) holds SQLite's lock
            else:
                self._answer(batch, [(False, e)] * len(batch))
                self._next()
            return
        results, broken = run_ops(conn, batch, lambda: None)
        if broken is not None:
            rollback(conn)
            r.unlock()
            self._answer(batch, failed(batch, broken))
            self._next()
            return
        self.committing = True
        self._jobs.put((self._commit, (conn,), lambda out: self._committed(batch, results, out[1])))

    def _thread_main(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, args, then = job
            try:
                out: tuple[bool, Any] = (True, fn(*args))
            except BaseException as e:  # noqa: BLE001 - handed back to the loop
                out = (False, e)
            try:
                self.loop.call_soon_threadsafe(then, out)
            except RuntimeError:  # the loop is closed: nobody waits for these answers any more
                pass

    def _commit(self, conn: sqlite3.Connection) -> BaseException | None:
        """On the commit thread: COMMIT (the fsync), then let the other writers in."""
        try:
            conn.execute("COMMIT")
            return None
        except BaseException as e:  # noqa: BLE001 - nothing of the batch is durable
            rollback(conn)
            return e
        finally:
            self._runner.unlock()

    def _committed(self, batch: list[Any], results: list[tuple[bool, Any]], err: BaseException | None) -> None:
        self.committing = False
        if err is not None:
            results = failed(batch, err)
        else:
            self._runner.batches += 1
            self._runner.batched += len(batch)
        self._answer(batch, results)
        self._next()

    def _fallback(self, batch: list[Any]) -> None:
        self.fallbacks += 1
        for item in batch:
            self._runner.to_thread(item)
        self._next()

    @staticmethod
    def _answer(batch: list[Any], results: list[tuple[bool, Any]]) -> None:
        settle([(fut, ok, val) for (_fn, _args, fut, _loop), (ok, val) in zip(batch, results, strict=False)])

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join(30)
        if self._conn is not None:
            try:
                self._conn.close()
            except sqlite3.Error:
                log.exception("closing the inline writer connection failed")
            self._conn = None


__all__ = ["InlineWriter"]
