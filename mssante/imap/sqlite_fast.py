"""SQLite fast path for the IMAP storage hot operations (mssante.imap.store.SqlStorage).

Through SQLAlchemy's async engine on aiosqlite, each statement costs several thread hand-offs
(cursor, execute, fetch, close, pool reset) plus statement construction and compilation: about
2.5 ms of CPU per IMAP command. Here one storage operation is ONE plain function running on raw
sqlite3 connections owned by dedicated threads: one hand-off per operation, SQL text prepared
once (sqlite3's statement cache).

- Reads run on a small pool of reader threads, each with its own connection, each operation in
  one read transaction (a consistent WAL snapshot across its statements). Reads known to be
  small (a folder row, a few messages' metadata: tens of microseconds) run on the event loop's
  own connection instead (`inline`): no hand-off at all. That connection never waits for a lock
  (busy_timeout 0; WAL readers do not take one, except in rare recovery cases): if SQLite says
  busy, the read is done on a reader thread instead.
- Writes run on one writer thread with one connection, as a group commit: the thread takes the
  first queued operation, BEGIN IMMEDIATE, runs it and then every operation already queued (up to
  `max_batch`), each in its own SAVEPOINT (an operation that fails is rolled back alone), then
  COMMIT, and only then are the callers answered: nothing is acknowledged before it is durable
  (synchronous=FULL). Operations that arrive during a COMMIT's fsync form the next batch.
- Same database file, same pragmas (mssante.store.db) and same value formats as SQLAlchemy (the
  column types' own bind/result processors): rows written here and through the ORM are the same.
Other writers (the MTA's deliveries, SQLAlchemy sessions of this process) serialise with the
writer thread through SQLite's own lock (busy_timeout), as any two connections do.
- Several IMAP processes on one file (`shared=True`, imap.processes > 1): their writer threads
  also take an exclusive `flock` on `<database>.imap-write-lock` around each transaction. SQLite's
  busy handler polls with growing sleeps (up to 100 ms) while another process holds the lock;
  a writer blocked in flock is woken by the kernel the moment the other commits, and meanwhile
  its queue fills, so the next batch carries more.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import queue
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

log = logging.getLogger("mssante.imap.sqlite")

_STOP = object()


class SqliteRunner:
    def __init__(self, path: str, pragmas: Callable[[Any, Any], None], *, readers: int = 4,
                 max_batch: int = 64, shared: bool = False, inline_writes: bool = True) -> None:
        self._path = path
        self._shared = shared
        self._inline_writes = inline_writes
        self._iw: Any = None  # sqlite_inline.InlineWriter, created at the first write
        self._lock_fd = -1  # the inline writer's own open of the lock file (its own flock)
        self._pragmas = pragmas
        self._readers = readers
        self.max_batch = max_batch
        self._wq: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._rpool: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._inline: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._closed = False
        self.batches = 0  # statistics: transactions committed
        self.batched = 0  # operations they carried

    def connect(self) -> sqlite3.Connection:
        # isolation_level=None: transactions are ours (BEGIN/COMMIT below), not sqlite3's implicit ones.
        c = sqlite3.connect(self._path, timeout=30, isolation_level=None, check_same_thread=False)
        self._pragmas(c, None)
        return c

    # --- reads ------------------------------------------------------------------------------------
    def _read_call(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        c = getattr(self._local, "conn", None)
        if c is None:
            c = self._local.conn = self.connect()
        return _in_read_transaction(c, fn, args)

    def _inline_call(self, fn: Callable[..., Any], args: tuple[Any, ...], snapshot: bool = True) -> Any:
        c = self._inline
        if c is None:
            c = self.connect()
            c.execute("PRAGMA busy_timeout=0")
            self._inline = c
        if not snapshot:  # one statement: atomic by itself
            return fn(c, *args)
        return _in_read_transaction(c, fn, args)

    async def read(self, fn: Callable[..., Any], *args: Any, inline: bool = False, snapshot: bool = True) -> Any:
        """fn(connection, *args) in one read transaction: on a reader thread, or with `inline` (for
        reads bounded to a few rows) right here on the loop's own connection, where `snapshot=False`
        (fn runs a single statement) spares the BEGIN/COMMIT."""
        if self._closed:
            raise RuntimeError("storage closed")
        if inline:
            try:
                return self._inline_call(fn, args, snapshot)
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) and "busy" not in str(e):
                    raise
                log.debug("inline read busy; using a reader thread")
        if self._rpool is None:
            self._rpool = ThreadPoolExecutor(self._readers, thread_name_prefix="imap-sqlite-read")
        return await asyncio.get_running_loop().run_in_executor(self._rpool, self._read_call, fn, args)

    # --- writes -----------------------------------------------------------------------------------
    async def write(self, fn: Callable[..., Any], *args: Any) -> Any:
        """fn(connection, *args) inside a group-committed transaction; returns (or raises) once the
        transaction is committed (or rolled back). Run on the event loop with the COMMIT on a
        thread (sqlite_inline) when the lock is free at once, else on the writer thread."""
        if self._closed:
            raise RuntimeError("storage closed")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        item = (fn, args, fut, loop)
        if self._inline_writes:
            if self._iw is None:
                from mssante.imap.sqlite_inline import InlineWriter

                self._iw = InlineWriter(self, loop)
            if self._iw.loop is loop:
                self._iw.submit(item)
                return await fut
        self.to_thread(item)
        return await fut

    def to_thread(self, item: Any) -> None:
        """Queue one operation for the writer thread (started on first use)."""
        if self._writer is None:
            with self._lock:
                if self._writer is None:
                    self._writer = threading.Thread(target=self._writer_main, name="imap-sqlite-write",
                                                    daemon=True)
                    self._writer.start()
        self._wq.put(item)

    def try_lock(self) -> bool:
        """The inline writer's cross-process write lock, without waiting (True when not shared)."""
        if not self._shared:
            return True
        if self._lock_fd < 0:
            self._lock_fd = os.open(self._path + ".imap-write-lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def lock(self) -> None:
        """Wait for the inline writer's lock file (on a thread; try_lock() opened it)."""
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)

    def unlock(self) -> None:
        if self._lock_fd >= 0:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _writer_main(self) -> None:
        try:
            conn = self.connect()
        except BaseException as e:  # noqa: BLE001 - every queued caller gets the error
            log.exception("cannot open the SQLite writer connection")
            while True:
                item = self._wq.get()
                if item is _STOP:
                    return
                _answer(item[3], [(item[2], False, e)])
        lock_fd = -1
        try:
            if self._shared:
                lock_fd = os.open(self._path + ".imap-write-lock", os.O_RDWR | os.O_CREAT, 0o600)
            while True:
                item = self._wq.get()
                if item is _STOP:
                    return
                if lock_fd < 0:
                    stop = self._run_batch(conn, item)
                else:
                    fcntl.flock(lock_fd, fcntl.LOCK_EX)
                    try:
                        stop = self._run_batch(conn, item)
                    finally:
                        fcntl.flock(lock_fd, fcntl.LOCK_UN)
                if stop:
                    return
        finally:
            conn.close()
            if lock_fd >= 0:
                os.close(lock_fd)

    def _run_batch(self, conn: sqlite3.Connection, first: Any) -> bool:
        try:
            conn.execute("BEGIN IMMEDIATE")
        except BaseException as e:  # noqa: BLE001 - the caller gets the error
            _answer(first[3], [(first[2], False, e)])
            return False
        batch = [first]
        stop = False

        def more() -> Any:
            nonlocal stop
            if len(batch) >= self.max_batch:
                return None
            try:
                nxt = self._wq.get_nowait()
            except queue.Empty:
                return None
            if nxt is _STOP:
                stop = True
                return None
            batch.append(nxt)
            return nxt

        results, broken = run_ops(conn, batch, more)
        if broken is None:
            try:
                conn.execute("COMMIT")
                self.batches += 1
                self.batched += len(batch)
            except BaseException as e:  # noqa: BLE001 - nothing of the batch is durable
                broken = e
        if broken is not None:
            rollback(conn)
            results = failed(batch, broken)
        by_loop: dict[Any, list[tuple[Any, bool, Any]]] = {}
        for (_fn, _args, fut, loop), (ok, val) in zip(batch, results, strict=False):
            by_loop.setdefault(loop, []).append((fut, ok, val))
        for loop, answers in by_loop.items():
            _answer(loop, answers)
        return stop

    # --- lifecycle ----------------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Stop accepting work; the writer finishes what is queued. Does not wait."""
        if self._closed:
            return
        self._closed = True
        if self._iw is not None:
            self._iw.drain_to_thread()
            if self._writer is None and not self._iw.committing:
                self._iw.close()
                self._iw = None
        self._wq.put(_STOP)
        if self._inline is not None:
            try:
                self._inline.close()
            except sqlite3.Error:
                pass
            self._inline = None
        if self._rpool is not None:
            self._rpool.shutdown(wait=False)

    async def aclose(self) -> None:
        """shutdown() and wait for the writer thread (queued writes committed)."""
        self.shutdown()
        iw = self._iw
        if iw is not None:
            for _ in range(3000):  # a COMMIT in flight finishes (30 s at most)
                if not iw.committing:
                    break
                await asyncio.sleep(0.01)
        w = self._writer
        if w is not None and w.is_alive():
            await asyncio.get_running_loop().run_in_executor(None, w.join, 30.0)
        if iw is not None:
            iw.close()
            self._iw = None
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1


def run_ops(conn: sqlite3.Connection, batch: list[Any], more: Callable[[], Any]
            ) -> tuple[list[tuple[bool, Any]], BaseException | None]:
    """Run each queued operation (fn, args, future, loop) of `batch`, then those `more()` adds, in
    its own SAVEPOINT inside the open transaction: ([(ok, result or error)], None), or (partial,
    error) when the transaction itself broke (then nothing of it may be acknowledged)."""
    results: list[tuple[bool, Any]] = []
    i = 0
    while i < len(batch) or more() is not None:
        fn, args, _fut, _loop = batch[i]
        i += 1
        try:
            conn.execute("SAVEPOINT op")
        except BaseException as e:  # noqa: BLE001 - the transaction is unusable: all fail
            return results, e
        try:
            r = fn(conn, *args)
        except BaseException as e:  # noqa: BLE001 - answered to its caller
            results.append((False, e))
            try:  # undo this operation only; if that fails (SQLite may have rolled back the
                # whole transaction itself: I/O error, disk full), the whole batch fails
                conn.execute("ROLLBACK TO op")
                conn.execute("RELEASE op")
            except BaseException as e2:  # noqa: BLE001
                return results, e2
        else:
            try:
                conn.execute("RELEASE op")
            except BaseException as e:  # noqa: BLE001
                return results, e
            results.append((True, r))
    return results, None


def rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            log.exception("ROLLBACK failed")


def failed(batch: list[Any], broken: BaseException) -> list[tuple[bool, Any]]:
    """Every member of a batch whose transaction failed answers NO [SERVERBUG]."""
    from mssante.imap.store_types import StoreError

    out: list[tuple[bool, Any]] = []
    for _ in batch:
        err = StoreError("transaction failed", "SERVERBUG")
        err.__cause__ = broken
        out.append((False, err))
    return out


def settle(answers: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    """On the futures' loop: each caller gets its result or its error."""
    for fut, ok, val in answers:
        if fut.done():  # the caller was cancelled: the operation happened, nobody waits
            continue
        if ok:
            fut.set_result(val)
        else:
            fut.set_exception(val)


def _answer(loop: asyncio.AbstractEventLoop, answers: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    try:
        loop.call_soon_threadsafe(settle, answers)
    except RuntimeError:  # the loop is closed: nobody is waiting any more
        pass


__all__ = ["SqliteRunner"]


def _in_read_transaction(c: sqlite3.Connection, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    """fn(c, *args) inside one read transaction (one snapshot of the database)."""
    c.execute("BEGIN")
    try:
        return fn(c, *args)
    finally:
        if c.in_transaction:
            c.execute("COMMIT")
