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

A job may also be an object with `run_many(session, jobs) -> results` (one result per job, in order):
all the jobs of a batch sharing the same `run_many` are written by one call (e.g. the relay's "sent"
outcomes). If that call fails, the batch is retried job by job, as for any failure.

`LocalDelivery` jobs (a message for local mailboxes, the bulk of an MTA's writes) are not run one by one:
`deliver_many` stores the whole batch with a fixed number of statements (blobs, folders, one UID/MODSEQ
range per folder, messages, audit events), whatever the batch size. It keeps the rules of
mssante.store.mail.deliver: a blob stored once per content, UIDs strictly ascending and never reused
(RFC 3501 §2.3.1.1), one MODSEQ per change (RFC 7162 §3.1), folder row locks held until commit, and
on PostgreSQL a pg_notify per folder delivered at commit.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import sqlite3
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from sqlalchemy import Table, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mssante.store.mail import NOTIFY_CHANNEL, MailboxError
from mssante.store.models import AuditEvent, Blob, Folder, Message

log = logging.getLogger("mssante.store.groupcommit")

_BLOB = cast(Table, Blob.__table__)
_FOLDER = cast(Table, Folder.__table__)
_MESSAGE = cast(Table, Message.__table__)
_AUDIT = cast(Table, AuditEvent.__table__)
_MESSAGE_COLS = ("folder_id", "uid", "blob_id", "flags", "modseq", "internaldate", "size", "message_id")
_PG_STORE_MANY = text(
    "WITH m AS (INSERT INTO message (folder_id, uid, blob_id, flags, modseq, internaldate, size, message_id, "
    "envelope, bodystructure) SELECT * FROM unnest(CAST(:folder_id AS bigint[]), CAST(:uid AS bigint[]), "
    "CAST(:blob_id AS bigint[]), CAST(:flags AS text[]), CAST(:modseq AS bigint[]), "
    "CAST(:internaldate AS timestamptz[]), CAST(:size AS bigint[]), CAST(:message_id AS varchar[]), "
    "CAST(:envelope AS json[]), CAST(:bodystructure AS json[]))), "
    "a AS (INSERT INTO audit_event (at, action, actor, outcome, details) SELECT * FROM unnest("
    "CAST(:at AS timestamptz[]), CAST(:action AS varchar[]), CAST(:actor AS varchar[]), "
    "CAST(:outcome AS varchar[]), CAST(:details AS json[]))) "
    "SELECT pg_notify(:ch, p) FROM unnest(CAST(:payloads AS text[])) AS p")


def _bind_processor(col: Any, dialect: Any) -> Callable[[Any], Any]:
    """The column type's own bind processor on `dialect` (e.g. JSON: None -> JSON null), so rows written
    by the hand-built statements here read back exactly as the ORM's."""
    f = col.type.dialect_impl(dialect).bind_processor(dialect)
    return f if f is not None else (lambda v: v)

T = TypeVar("T")


@dataclass
class LocalDelivery:
    """One message for local mailboxes (INBOX), with its audit event and optional extra work."""

    raw: bytes
    mailbox_ids: Sequence[int]
    internaldate: dt.datetime
    message_id: str | None = None
    envelope: Any | None = None
    bodystructure: Any | None = None
    audit: AuditEvent | None = None  # added in the same transaction
    then: Callable[[AsyncSession], Awaitable[Any]] | None = None  # e.g. queue remote recipients, DSNs


Job = Callable[[AsyncSession], Awaitable[Any]] | LocalDelivery


async def deliver_many(session: AsyncSession, items: Sequence[LocalDelivery],
                       folder: str = "INBOX") -> list[list[int]]:
    """Store a batch of local deliveries with a constant number of statements. The caller commits.

    Returns, for each item, the folder ids it was delivered to (to publish to IMAP sessions after commit).
    """
    if not items:
        return []
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    if dialect == "sqlite":  # aiosqlite: the whole batch in one hand-off to the driver thread
        done = await deliver_many_sqlite(session, items, folder)
        if done is not None:
            return done
    # Core statements on the session's connection: the ORM bulk paths add per-row bookkeeping we do not need.
    conn = await session.connection()
    digest_of = [hashlib.sha256(it.raw).hexdigest() for it in items]
    digests: dict[str, bytes] = {}
    for d, it in zip(digest_of, items, strict=True):
        digests.setdefault(d, it.raw)
    ins: Any = (postgresql.insert(_BLOB) if dialect == "postgresql" else sqlite.insert(_BLOB)).on_conflict_do_nothing(
        index_elements=["sha256"])
    # One statement inserts the new blobs and returns their ids; only contents already stored (a message
    # delivered again, a DSN quoting its original) need the SELECT.
    blob_ids = {str(h): int(i) for i, h in (await conn.execute(
        ins.returning(_BLOB.c.id, _BLOB.c.sha256),
        [{"sha256": d, "size": len(r), "data": r} for d, r in digests.items()])).all()}
    known = [d for d in digests if d not in blob_ids]
    if known:
        blob_ids.update({str(h): int(i) for i, h in (await conn.execute(
            select(_BLOB.c.id, _BLOB.c.sha256).where(_BLOB.c.sha256.in_(known)))).all()})
    box_counts = Counter(b for it in items for b in it.mailbox_ids)
    # One UPDATE per distinct count: each folder's UID and MODSEQ ranges in one statement.
    by_count: dict[int, list[int]] = {}
    next_uid: dict[int, int] = {}
    next_modseq: dict[int, int] = {}
    folder_of: dict[int, int] = {}
    if dialect == "postgresql":
        # Found and locked in one statement, in id order: concurrent batches never deadlock on folder rows.
        folder_of = {int(m): int(f) for m, f in (await conn.execute(
            select(_FOLDER.c.mailbox_id, _FOLDER.c.id).where(
                _FOLDER.c.mailbox_id.in_(sorted(box_counts)), _FOLDER.c.name == folder)
            .order_by(_FOLDER.c.id).with_for_update())).all()}
        missing = [b for b in sorted(box_counts) if b not in folder_of]
        if missing:
            raise MailboxError(f"mailbox {missing[0]} has no folder {folder!r}")
        counts = Counter({folder_of[b]: c for b, c in box_counts.items()})
        for f, c in counts.items():
            by_count.setdefault(c, []).append(f)
        for c, fids in by_count.items():
            rows = (await conn.execute(
                update(_FOLDER).where(_FOLDER.c.id.in_(fids))
                .values(uidnext=_FOLDER.c.uidnext + c, highestmodseq=_FOLDER.c.highestmodseq + c)
                .returning(_FOLDER.c.id, _FOLDER.c.uidnext, _FOLDER.c.highestmodseq)
            )).all()
            for fid, uidnext, modseq in rows:
                next_uid[int(fid)] = int(uidnext) - c  # first allocated UID
                next_modseq[int(fid)] = int(modseq) - c + 1
    else:
        # SQLite: the database write lock serialises writers, so no row locks to order; a mailbox has one
        # folder of a given name (unique (mailbox_id, name)), so the UPDATE finds the folders by mailbox and
        # returns their ids: no SELECT first.
        for b, c in box_counts.items():
            by_count.setdefault(c, []).append(b)
        for c, boxes in by_count.items():
            rows = (await conn.execute(
                update(_FOLDER).where(_FOLDER.c.mailbox_id.in_(boxes), _FOLDER.c.name == folder)
                .values(uidnext=_FOLDER.c.uidnext + c, highestmodseq=_FOLDER.c.highestmodseq + c)
                .returning(_FOLDER.c.id, _FOLDER.c.mailbox_id, _FOLDER.c.uidnext, _FOLDER.c.highestmodseq)
            )).all()
            for fid, box, uidnext, modseq in rows:
                folder_of[int(box)] = int(fid)
                next_uid[int(fid)] = int(uidnext) - c
                next_modseq[int(fid)] = int(modseq) - c + 1
        missing = [b for b in sorted(box_counts) if b not in folder_of]
        if missing:  # the caller's transaction is rolled back: the UPDATEs above are not kept
            raise MailboxError(f"mailbox {missing[0]} has no folder {folder!r}")
    messages = []
    for d, it in zip(digest_of, items, strict=True):
        blob_id = blob_ids[d]
        for b in it.mailbox_ids:
            f = folder_of[b]
            uid, modseq = next_uid[f], next_modseq[f]
            next_uid[f], next_modseq[f] = uid + 1, modseq + 1
            messages.append({"folder_id": f, "uid": uid, "blob_id": blob_id, "flags": "", "modseq": modseq,
                             "internaldate": it.internaldate, "size": len(it.raw), "message_id": it.message_id,
                             "envelope": it.envelope, "bodystructure": it.bodystructure})
    events = [it.audit for it in items if it.audit is not None]
    if dialect == "postgresql":
        # Messages, audit events and one notification per folder in one statement (one round trip).
        dialect_obj = conn.dialect
        pj_env = _bind_processor(_MESSAGE.c.envelope, dialect_obj)
        pj_det = _bind_processor(_AUDIT.c.details, dialect_obj)
        await conn.execute(_PG_STORE_MANY, {
            **{k: [m[k] for m in messages] for k in _MESSAGE_COLS},
            "envelope": [pj_env(m["envelope"]) for m in messages],
            "bodystructure": [pj_env(m["bodystructure"]) for m in messages],
            "at": [e.at for e in events], "action": [e.action for e in events], "actor": [e.actor for e in events],
            "outcome": [e.outcome for e in events], "details": [pj_det(e.details) for e in events],
            "ch": NOTIFY_CHANNEL, "payloads": [str(f) for f in sorted(set(folder_of.values()))],
        })
    else:
        await conn.execute(_MESSAGE.insert(), messages)
        if events:
            await conn.execute(_AUDIT.insert(), [
                {"at": e.at, "action": e.action, "actor": e.actor, "outcome": e.outcome, "details": e.details}
                for e in events])
    return [sorted({folder_of[b] for b in it.mailbox_ids}) for it in items]


_SQLITE_SQL = {
    "blob": "INSERT INTO blob (sha256, size, data) VALUES (?, ?, ?) ON CONFLICT (sha256) DO NOTHING RETURNING id",
    "blob_id": "SELECT id FROM blob WHERE sha256 = ?",
    "folder": "UPDATE folder SET uidnext = uidnext + ?, highestmodseq = highestmodseq + ? "
              "WHERE mailbox_id = ? AND name = ? RETURNING id, uidnext, highestmodseq",
    "message": "INSERT INTO message (folder_id, uid, blob_id, flags, modseq, internaldate, size, message_id, "
               "envelope, bodystructure) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "audit": "INSERT INTO audit_event (at, action, actor, outcome, details) VALUES (?, ?, ?, ?, ?)",
}
_processors: dict[int, dict[str, Callable[[Any], Any]]] = {}


def _sqlite_processors(dialect: Any) -> dict[str, Callable[[Any], Any]]:
    """The column types' own bind processors (_bind_processor), per dialect object."""
    procs = _processors.get(id(dialect))
    if procs is None:
        cols = {"internaldate": _MESSAGE.c.internaldate, "envelope": _MESSAGE.c.envelope,
                "bodystructure": _MESSAGE.c.bodystructure, "at": _AUDIT.c.at, "details": _AUDIT.c.details,
                "data": _BLOB.c.data}
        procs = {k: _bind_processor(c, dialect) for k, c in cols.items()}
        _processors[id(dialect)] = procs
    return procs


async def _sqlite_driver(session: AsyncSession) -> tuple[Any, Any] | None:
    """(aiosqlite connection, its sqlite3 connection) behind the session's transaction, or None."""
    conn = await session.connection()
    raw = await conn.get_raw_connection()
    aio = getattr(raw, "driver_connection", None)
    sync = getattr(aio, "_connection", None)
    if not isinstance(sync, sqlite3.Connection) or not hasattr(aio, "_execute"):
        return None
    return aio, sync


async def deliver_many_sqlite(session: AsyncSession, items: Sequence[LocalDelivery],
                              folder: str = "INBOX") -> list[list[int]] | None:
    """deliver_many on SQLite in ONE hand-off to the aiosqlite thread (instead of one per statement call:
    cursor, execute, fetch, close), on the session's own connection and transaction. Same statements and
    rules as deliver_many, which uses it on SQLite; values go through the column types' bind processors.
    None when the driver is not aiosqlite as expected (deliver_many then runs its own statements)."""
    if not items:
        return []
    bind = session.bind
    if bind is None or bind.dialect.name != "sqlite":
        return None
    drv = await _sqlite_driver(session)
    if drv is None:
        return None
    aio, sync = drv
    procs = _sqlite_processors(bind.dialect)
    digest_of = [hashlib.sha256(it.raw).hexdigest() for it in items]
    blobs: dict[str, bytes] = {}
    for d, it in zip(digest_of, items, strict=True):
        blobs.setdefault(d, it.raw)
    box_counts = Counter(b for it in items for b in it.mailbox_ids)
    pdate, penv, pbs = procs["internaldate"], procs["envelope"], procs["bodystructure"]
    pat, pdetails, pdata = procs["at"], procs["details"], procs["data"]
    # Everything but the ids known only in the thread is prepared here (JSON, dates), on the loop.
    prepared = [(it.mailbox_ids, pdate(it.internaldate), len(it.raw), it.message_id, penv(it.envelope),
                 pbs(it.bodystructure)) for it in items]
    events = [(pat(e.at), e.action, e.actor, e.outcome, pdetails(e.details))
              for e in (it.audit for it in items) if e is not None]

    def run() -> list[list[int]]:
        if not sync.in_transaction:  # pysqlite begins lazily; make sure all of this is one transaction
            sync.execute("BEGIN")
        blob_ids: dict[str, int] = {}
        for d, raw in blobs.items():
            rows = sync.execute(_SQLITE_SQL["blob"], (d, len(raw), pdata(raw))).fetchall()
            if not rows:
                rows = sync.execute(_SQLITE_SQL["blob_id"], (d,)).fetchall()
            blob_ids[d] = int(rows[0][0])
        folder_of: dict[int, int] = {}
        next_uid: dict[int, int] = {}
        next_modseq: dict[int, int] = {}
        for b in sorted(box_counts):
            c = box_counts[b]
            rows = sync.execute(_SQLITE_SQL["folder"], (c, c, b, folder)).fetchall()
            if not rows:
                raise MailboxError(f"mailbox {b} has no folder {folder!r}")
            fid, uidnext, modseq = (int(x) for x in rows[0])
            folder_of[b] = fid
            next_uid[fid] = uidnext - c  # first allocated UID
            next_modseq[fid] = modseq - c + 1
        messages = []
        for d, (boxes, date, size, mid, env, bs) in zip(digest_of, prepared, strict=True):
            blob_id = blob_ids[d]
            for b in boxes:
                f = folder_of[b]
                uid, modseq = next_uid[f], next_modseq[f]
                next_uid[f], next_modseq[f] = uid + 1, modseq + 1
                messages.append((f, uid, blob_id, "", modseq, date, size, mid, env, bs))
        sync.executemany(_SQLITE_SQL["message"], messages)
        if events:
            sync.executemany(_SQLITE_SQL["audit"], events)
        return [sorted({folder_of[b] for b in it.mailbox_ids}) for it in items]

    return await aio._execute(run)  # type: ignore[no-any-return]  # noqa: SLF001


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
        hold_connections: bool = False,
    ) -> None:
        """`workers` concurrent batches (1 for SQLite's single writer; a few on PostgreSQL).

        `hold_connections`: each worker keeps one connection of the sessions' engine for its batches instead
        of taking one from the pool per batch (no pre-ping and reset round trips); it is dropped after any
        failure and closed by close().
        """
        self._sessions = sessions
        self._hold = hold_connections
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

    async def submit(self, job: Callable[[AsyncSession], Awaitable[T]] | LocalDelivery) -> Any:
        """Run `job` in a shared transaction; return its result once that transaction has committed."""
        if self._closed:
            raise CommitterClosed("the store is shutting down")
        self.start()
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
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
        held: list[Any] = [None]  # this worker's connection (hold_connections)
        try:
            await self._serve(held)
        finally:
            await _drop(held)

    async def _session(self, held: list[Any]) -> AsyncSession:
        if not self._hold:
            return self._sessions()
        if held[0] is None:
            engine = self._sessions.kw.get("bind")
            if engine is None:  # sessions not bound to one engine: no connection to hold
                return self._sessions()
            held[0] = await engine.connect()
        return self._sessions(bind=held[0])

    async def _serve(self, held: list[Any]) -> None:
        while True:
            batch = await self._collect()
            live = [(j, f) for j, f in batch if not f.cancelled()]
            while live:
                try:
                    results = await self._run_batch(live, held)
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
                    await self._one_by_one(live, held)
                    break
                self.batches += 1  # _run_batch answered the waiters as soon as the commit returned
                self.jobs += len(results)
                break

    async def _one_by_one(self, live: list[tuple[Job, asyncio.Future[Any]]], held: list[Any]) -> None:
        for job, f in live:
            try:
                await self._run_batch([(job, f)], held)  # answers `f` once committed
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

    async def _run_batch(self, batch: list[tuple[Job, asyncio.Future[Any]]],
                         held: list[Any] | None = None) -> list[Any]:
        held = held if held is not None else [None]
        session = await self._session(held)
        try:
            async with session.begin():
                deliveries = [job for job, _ in batch if isinstance(job, LocalDelivery)]
                folders: list[list[int]] = []
                if deliveries:
                    try:
                        folders = await deliver_many(session, deliveries)
                    except asyncio.CancelledError:
                        raise
                    except Exception as e:
                        if len(batch) == 1:
                            raise _JobFailed(0, e) from e
                        raise  # not attributable to one job: the caller retries each alone
                # Batchable jobs (a `run_many` attribute): one call per kind for all of them in the batch.
                many: dict[Any, list[int]] = {}
                for i, (job, _) in enumerate(batch):
                    run_many = getattr(job, "run_many", None)
                    if run_many is not None and not isinstance(job, LocalDelivery):
                        many.setdefault(run_many, []).append(i)
                batched: dict[int, Any] = {}
                for run_many, idxs in many.items():
                    try:
                        out = await run_many(session, [batch[i][0] for i in idxs])
                    except asyncio.CancelledError:
                        raise
                    except Exception as e:
                        if len(idxs) == 1:
                            raise _JobFailed(idxs[0], e) from e
                        raise  # not attributable to one job: the caller retries each alone
                    batched.update(zip(idxs, out, strict=True))
                results: list[Any] = []
                delivered = iter(folders)
                for i, (job, _) in enumerate(batch):
                    try:
                        if isinstance(job, LocalDelivery):
                            # A LocalDelivery's result is the list of folder ids it was delivered to.
                            if job.then is not None:
                                await job.then(session)
                            results.append(next(delivered))
                        elif i in batched:
                            results.append(batched[i])
                        else:
                            results.append(await job(session))
                    except asyncio.CancelledError:
                        raise
                    except Exception as e:
                        raise _JobFailed(i, e) from e
        except BaseException:
            await _close_quietly(session)
            await _drop(held)  # its state is unknown after a failure: the next batch takes a fresh one
            raise
        # Committed: answer the waiters now (the 250s), then give the connection back to the pool (its
        # reset is one more round trip / driver hand-off). A failure from here on must not make the caller
        # run these jobs again: they are durable.
        for (_, f), r in zip(batch, results, strict=True):
            if not f.done():
                f.set_result(r)
        await _close_quietly(session)
        return results


async def _drop(held: list[Any]) -> None:
    conn, held[0] = held[0], None
    if conn is not None:
        try:
            await conn.close()
        except Exception:  # noqa: BLE001 - a broken connection is discarded by the pool
            log.debug("closing a held group-commit connection failed", exc_info=True)


async def _close_quietly(session: AsyncSession) -> None:
    try:
        await session.close()
    except Exception:  # noqa: BLE001 - the connection is discarded by the pool; the outcome is known
        log.warning("closing a group-commit session failed", exc_info=True)


class _JobFailed(Exception):
    def __init__(self, index: int, error: Exception) -> None:
        super().__init__(str(error))
        self.index = index
        self.error = error
