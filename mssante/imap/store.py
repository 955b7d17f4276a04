"""The IMAP storage over the SQLAlchemy store (SqlStorage; the Storage protocol and the values it
exchanges are in mssante.imap.store_types).

No wire types here: flags are strings, UIDs ints, sets Python collections.
Every change bumps the folder's HIGHESTMODSEQ in the same transaction (RFC 7162 §3.1.1) and, on
PostgreSQL, NOTIFYs 'mssante_folder' with the folder id so other processes' sessions wake
(delivered at COMMIT). Callers also get the changed folder ids back to publish in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import weakref
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any, cast

from sqlalchemy import Table, delete, func, insert, literal_column, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from mssante.imap.mime import summarize
from mssante.imap.store_types import (
    DELIMITER,
    MAX_NAME,
    Changes,
    FlagChange,
    FolderInfo,
    FolderStatus,
    MessageDetail,
    MessageMeta,
    StoreError,
    StoreResult,
    _flags,
    _inbox_first,
    _metas,
    norm_flags,
    plan_flags,
    receipt_requests,
    row_detail,
    store_result,
)
from mssante.observability.audit import as_orm
from mssante.store.mail import NOTIFY_CHANNEL, allocate_uid, store_blob
from mssante.store.models import Blob, Expunged, Folder, Mailbox, Message

_F = cast(Table, Folder.__table__)
_M = cast(Table, Message.__table__)
_B = cast(Table, Blob.__table__)
_FOLDER_COLS = (Folder.id, Folder.name, Folder.special_use, Folder.uidvalidity, Folder.uidnext,
                Folder.highestmodseq, Folder.subscribed)


def _finfo(f: Any) -> FolderInfo:
    return FolderInfo(int(f.id), f.name, f.special_use, int(f.uidvalidity), int(f.uidnext), int(f.highestmodseq),
                      bool(f.subscribed))


_MAX_BATCH = 64  # operations per group commit
_READERS = 4  # concurrent read sessions on SQLite (+1 writer = the default pool size of 5)


class _Batch:
    def __init__(self, session: AsyncSession, done: asyncio.Future[None]) -> None:
        self.session = session
        self.done = done
        self.lock = asyncio.Lock()
        self.members = 0
        self.served = 0
        self.closing = False
        self.failed: BaseException | None = None


class _Views:
    """The message list of recently opened folders, reused by the next SELECT of the same folder
    while it did not change: every change bumps the folder's HIGHESTMODSEQ (and UIDNEXT on
    delivery), so (mailbox, id, name, UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ) equal means the same
    messages. Sessions selecting the same folder then share the MessageMeta objects (10,000 IDLE
    sessions on one folder) and SELECT skips reading them. Read from the snapshot that read the
    folder row (store_sqlite / store_pg open_folder_small)."""

    MAX_FOLDERS = 256
    MAX_MESSAGES = 20_000

    def __init__(self) -> None:
        self._map: dict[tuple[int, int], tuple[FolderInfo, list[MessageMeta]]] = {}

    def get(self, mailbox_id: int, f: FolderInfo) -> list[MessageMeta] | None:
        hit = self._map.get((mailbox_id, f.id))
        if hit is None:
            return None
        g = hit[0]
        if (g.name, g.uidvalidity, g.uidnext, g.highestmodseq) != (f.name, f.uidvalidity, f.uidnext,
                                                                    f.highestmodseq):
            return None
        return hit[1]

    def put(self, mailbox_id: int, f: FolderInfo, msgs: list[MessageMeta]) -> None:
        if len(msgs) > self.MAX_MESSAGES:
            return
        self._map.pop((mailbox_id, f.id), None)
        if len(self._map) >= self.MAX_FOLDERS:
            self._map.pop(next(iter(self._map)))
        self._map[(mailbox_id, f.id)] = (f, msgs)


class SqlStorage:
    """Storage over mssante.store (SQLite or PostgreSQL). `published` is called after each commit
    with the folder ids that changed, for in-process wake-ups (mssante.store.notify)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], published: Any = None,
                 new_uidvalidity: Any = None, shared: bool = False) -> None:
        """`shared`: other processes serve IMAP on the same SQLite file (mssante.imap.sqlite_fast)."""
        self._sessions = sessions
        self._published = published
        self._new_uidvalidity = new_uidvalidity
        bind = sessions.kw.get("bind")
        if not isinstance(bind, AsyncEngine):
            raise ValueError("SqlStorage needs a sessionmaker bound to an AsyncEngine (mssante.store.db)")
        self._engine = bind
        # SQLite has one writer at a time, its busy handler sleeps (1, 2, 5, 10... ms) while it waits
        # and every commit is an fsync: writers of this process share group-committed transactions.
        self._group = bind.dialect.name == "sqlite"
        self._wlock = asyncio.Lock()  # held by the open batch from BEGIN to COMMIT
        self._batch: _Batch | None = None
        self._opening: asyncio.Future[None] | None = None
        self._readers = asyncio.Semaphore(_READERS) if self._group else None
        self._inflight: dict[tuple[int, int], asyncio.Future[Changes | None]] = {}
        self._batches = 0  # statistics: transactions committed by group commit
        self._batched = 0  # operations they carried
        # SQLite in a file: the hot operations run as plain SQL on our own threads (sqlite_fast).
        self._fast: Any = None
        self._ops: Any = None
        self._views = _Views()
        url = bind.url
        if (self._group and url.database and url.database != ":memory:" and not url.query
                and not url.database.startswith("file:")):
            from mssante.imap.sqlite_fast import SqliteRunner
            from mssante.imap.store_sqlite import SqliteOps
            from mssante.store.db import _sqlite_pragmas

            self._fast = SqliteRunner(url.database, _sqlite_pragmas, readers=_READERS, max_batch=_MAX_BATCH,
                                      shared=shared)
            self._ops = SqliteOps(bind.dialect)
            weakref.finalize(self, self._fast.shutdown)
        elif bind.dialect.name == "postgresql" and bind.dialect.driver == "asyncpg":
            # PostgreSQL: the hot operations as plain SQL on a small asyncpg pool (store_pg).
            from mssante.imap.store_pg import PgOps, PgRunner

            self._fast = PgRunner(url)
            self._ops = PgOps()
            weakref.finalize(self, self._fast.shutdown)

    @property
    def batches(self) -> int:
        return self._batches + (self._fast.batches if self._fast is not None else 0)

    @property
    def batched(self) -> int:
        return self._batched + (self._fast.batched if self._fast is not None else 0)

    async def aclose(self) -> None:
        """Stop the fast path: SQLite threads (queued writes committed first), PostgreSQL pool."""
        if self._fast is not None:
            await self._fast.aclose()

    @contextlib.asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        """A Core connection for reads (no ORM session: cheaper per query). On SQLite at most
        `_READERS` at once: beyond the pool's 5 kept connections each checkout would open (and
        close) a new aiosqlite connection and thread."""
        if self._readers is None:
            async with self._engine.connect() as c:
                yield c
            return
        async with self._readers, self._engine.connect() as c:
            yield c

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncSession]:
        """One write operation in a transaction. On SQLite, operations that arrive while a batch is
        open join it: they run one after another on its connection and ALL wait for its single
        COMMIT before returning, so nothing is acknowledged before it is durable (group commit).
        Invariant: an operation raises StoreError only before its first real write; any other
        exception fails (rolls back) the whole batch, and every member reports an error."""
        if not self._group:
            async with self._sessions() as s, s.begin():
                yield s
            return
        loop = asyncio.get_running_loop()
        while True:
            b = self._batch
            if b is not None and not b.closing and b.served < _MAX_BATCH:
                break
            if self._opening is None:
                self._opening = opening = loop.create_future()
                try:
                    await self._wlock.acquire()
                    b = _Batch(self._sessions(), loop.create_future())
                    await b.session.begin()
                    self._batch = b
                finally:
                    self._opening = None
                    opening.set_result(None)
                break
            await asyncio.shield(self._opening)
        b.members += 1
        failed: BaseException | None = None
        try:
            async with b.lock:
                b.served += 1
                if b.failed is not None:
                    raise StoreError("transaction failed", "SERVERBUG")
                try:
                    yield b.session
                except StoreError:
                    raise
                except BaseException as e:
                    b.failed = e
                    raise
        except BaseException as e:
            failed = e
        finally:
            b.members -= 1
            if b.members == 0 and not b.closing:
                await self._finish(b)
        if failed is not None:
            raise failed
        await asyncio.shield(b.done)

    async def _finish(self, b: _Batch) -> None:
        b.closing = True
        if self._batch is b:
            self._batch = None
        try:
            if b.failed is None:
                await b.session.commit()
                self._batches += 1
                self._batched += b.served
                b.done.set_result(None)
            else:
                await b.session.rollback()
                b.done.set_exception(StoreError("transaction failed", "SERVERBUG"))
        except Exception as e:
            if not b.done.done():
                b.done.set_exception(e)
        finally:
            await b.session.close()
            self._wlock.release()
            if b.done.done() and not b.done.cancelled():
                b.done.exception()  # retrieved: members that already failed do not await it

    async def add_events(self, events: Sequence[Any]) -> None:
        """Audit events (Audit.row or Audit.event) written in one transaction."""
        if events and self._fast is not None:
            await self._fast.write(self._ops.add_events, list(events))
        elif events:
            async with self._write() as s:
                s.add_all([as_orm(ev) for ev in events])

    async def _notify(self, s: AsyncSession, folder_ids: Iterable[int], modseq: int | None = None) -> None:
        """NOTIFY 'mssante_folder' with "folder_id" or "folder_id:modseq" (the MODSEQ this change
        produced, so that a session that already knows it can ignore the notification)."""
        if s.bind is not None and s.bind.dialect.name == "postgresql":
            for fid in sorted(set(folder_ids)):
                payload = str(fid) if modseq is None else f"{fid}:{modseq}"
                await s.execute(text("SELECT pg_notify(:ch, :p)"), {"ch": NOTIFY_CHANNEL, "p": payload})

    def _published_after_commit(self, folder_ids: Iterable[int], modseq: int | None = None) -> None:
        if self._published is not None:
            for fid in set(folder_ids):
                self._published(fid, modseq)

    async def folders(self, mailbox_id: int) -> list[FolderInfo]:
        if self._fast is not None:
            return cast(list[FolderInfo], await self._fast.read(self._ops.folders, mailbox_id, inline=True,
                                                            snapshot=False))
        async with self._read() as s:
            rows = (await s.execute(select(*_FOLDER_COLS).where(Folder.mailbox_id == mailbox_id))).all()
        return _inbox_first(_finfo(f) for f in rows)

    async def folder(self, mailbox_id: int, name: str) -> FolderInfo | None:
        if self._fast is not None:
            return cast("FolderInfo | None", await self._fast.read(self._ops.folder, mailbox_id, name, inline=True,
                                                            snapshot=False))
        async with self._read() as s:
            f = (await s.execute(select(*_FOLDER_COLS).where(Folder.mailbox_id == mailbox_id,
                                                             Folder.name == name))).first()
        return None if f is None else _finfo(f)

    async def highestmodseq(self, folder_id: int) -> int | None:
        if self._fast is not None:
            return cast("int | None", await self._fast.read(self._ops.highestmodseq, folder_id, inline=True,
                                                            snapshot=False))
        async with self._read() as s:
            v = await s.scalar(select(Folder.highestmodseq).where(Folder.id == folder_id))
        return None if v is None else int(v)

    async def messages(self, folder_id: int) -> list[MessageMeta]:
        if self._fast is not None:
            return cast(list[MessageMeta], await self._fast.read(self._ops.messages, folder_id))
        async with self._read() as s:
            rows = (await s.execute(select(Message.uid, Message.flags, Message.modseq)
                                    .where(Message.folder_id == folder_id).order_by(Message.uid))).all()
        return _metas(rows)

    async def open_folder(self, mailbox_id: int, name: str) -> tuple[FolderInfo, list[MessageMeta]] | None:
        """SELECT: the folder row first, then its messages, on one connection. A change committed
        between the two reads has a MODSEQ above the folder's and is reported by the next sync."""
        if self._fast is not None:
            opened = await self._fast.read(self._ops.open_folder_small, mailbox_id, name, self._views, inline=True)
            if opened is None:
                return None
            f, msgs = opened
            if msgs is None:  # a big folder: read on a reader thread, not on the loop
                msgs = await self._fast.read(self._ops.messages, f.id)
            else:
                self._views.put(mailbox_id, f, msgs)
            return f, list(msgs)
        async with self._read() as s:
            f = (await s.execute(select(*_FOLDER_COLS).where(Folder.mailbox_id == mailbox_id,
                                                             Folder.name == name))).first()
            if f is None:
                return None
            rows = (await s.execute(select(Message.uid, Message.flags, Message.modseq)
                                    .where(Message.folder_id == f.id).order_by(Message.uid))).all()
        return _finfo(f), _metas(rows)

    async def changes_since(self, folder_id: int, modseq: int) -> Changes | None:
        """What changed after `modseq` (None: the folder is gone). Concurrent identical requests —
        every session on a folder woken by the same notification — share one query."""
        key = (folder_id, modseq)
        fut = self._inflight.get(key)
        if fut is not None:
            return await asyncio.shield(fut)
        fut = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            result = await self._changes_since(folder_id, modseq)
        except BaseException as e:
            fut.set_exception(e)
            fut.exception()  # retrieved here; waiters re-raise it
            raise
        finally:
            del self._inflight[key]
        fut.set_result(result)
        return result

    async def _changes_since(self, folder_id: int, modseq: int) -> Changes | None:
        if self._fast is not None:
            return cast("Changes | None", await self._fast.read(self._ops.changes_since, folder_id, modseq,
                                                                inline=True))
        async with self._read() as s:
            f = (await s.execute(select(*_FOLDER_COLS).where(Folder.id == folder_id))).first()
            if f is None:
                return None
            out = Changes(_finfo(f))
            if int(f.highestmodseq) <= modseq:
                return out
            rows = (await s.execute(select(Message.uid, Message.flags, Message.modseq)
                                    .where(Message.folder_id == folder_id, Message.modseq > modseq)
                                    .order_by(Message.uid))).all()
            out.changed = _metas(rows)
            out.expunged = [int(u) for u in (await s.scalars(
                select(Expunged.uid).where(Expunged.folder_id == folder_id, Expunged.modseq > modseq)
                .order_by(Expunged.uid))).all()]
        return out

    async def details(self, folder_id: int, uids: Sequence[int], *, raw: bool, summary: bool = True
                      ) -> list[MessageDetail]:
        """Messages' metadata; `summary` loads ENVELOPE/BODYSTRUCTURE (JSON), `raw` the blob."""
        summary = summary or raw  # sections are found through the BODYSTRUCTURE offsets
        if self._fast is not None:
            ids = list(uids)
            got = await self._fast.read(self._ops.details_small, folder_id, ids, raw, summary, inline=True)
            if got is None:  # too big to read on the loop
                got = await self._fast.read(self._ops.details, folder_id, ids, raw, summary)
            return cast(list[MessageDetail], got)
        cols: list[Any] = [Message.uid, Message.flags, Message.modseq, Message.internaldate, Message.size]
        cols += [Message.envelope, Message.bodystructure] if summary else [literal_column("NULL"),
                                                                          literal_column("NULL")]
        if raw:
            cols.append(Blob.data)
        out: list[MessageDetail] = []
        async with self._read() as s:
            for chunk in _chunks(sorted(uids), 500):
                q = select(*cols).where(Message.folder_id == folder_id, Message.uid.in_(chunk))
                if raw:
                    q = q.join(Blob, Blob.id == Message.blob_id)
                for r in (await s.execute(q.order_by(Message.uid))).all():
                    row = (*r[:7], r[7] if raw else None)
                    idate = r[3] if r[3].tzinfo else r[3].replace(tzinfo=dt.timezone.utc)
                    d = row_detail(row, idate, summary=summary, raw=raw, decode=None)
                    if d is None:  # delivered without a summary: computed now from the blob
                        blob = await s.scalar(select(Blob.data).join(Message, Message.blob_id == Blob.id)
                                              .where(Message.folder_id == folder_id, Message.uid == r[0]))
                        d = row_detail(row, idate, summary=summary, raw=raw, decode=None, blob=bytes(blob or b""))
                    out.append(cast(MessageDetail, d))
        return out

    async def _bump(self, s: AsyncSession, folder_id: int) -> int:
        c = await s.connection()  # Core statements: no ORM bulk-update bookkeeping on the hot path
        row = (await c.execute(update(_F).where(_F.c.id == folder_id)
                               .values(highestmodseq=_F.c.highestmodseq + 1)
                               .returning(_F.c.highestmodseq))).one_or_none()
        if row is None:
            raise StoreError("mailbox no longer exists", "NONEXISTENT")
        return int(row[0])

    async def _lock(self, s: AsyncSession, folder_id: int) -> None:
        """Take the folder's write lock first (PostgreSQL row lock; SQLite RESERVED lock), so that a
        read-modify-write of flags serialises with every other writer (other listeners, the MTA,
        other processes) and a SQLite transaction never reads and then fails to upgrade."""
        c = await s.connection()
        r = await c.execute(update(_F).where(_F.c.id == folder_id).values(uidnext=_F.c.uidnext))
        if not r.rowcount:
            raise StoreError("mailbox no longer exists", "NONEXISTENT")

    async def store_flags(self, folder_id: int, uids: Sequence[int], mode: str, flags: Sequence[str],
                          unchangedsince: int | None, *, check_first: bool = True) -> StoreResult:
        """`check_first`: first read whether the STORE changes anything (the caller's view says it
        may not); a STORE that changes nothing is then answered without a write transaction."""
        want = set(norm_flags(flags))
        if self._fast is not None:
            fw = frozenset(want)
            if check_first:
                same = await self._fast.read(self._ops.store_unchanged, folder_id, list(uids), mode, fw,
                                             unchangedsince, inline=True, snapshot=False)
                if same is not None:  # nothing to change: answered from a read, no write transaction
                    return cast(StoreResult, same)
            res = cast(StoreResult, await self._fast.write(self._ops.store_flags, folder_id, list(uids), mode,
                                                           fw, unchangedsince))
            if res.changed:
                self._published_after_commit([folder_id], res.changed[0].modseq)
            return res
        modified: list[int] = []
        todo: list[FlagChange] = []
        modseq = 0
        first_seen: list[tuple[int, str | None, str]] = []
        async with self._write() as s:
            await self._lock(s, folder_id)
            c = await s.connection()
            for chunk in _chunks(sorted(uids), 500):
                rows = (await c.execute(select(_M.c.id, _M.c.uid, _M.c.flags, _M.c.modseq)
                                        .where(_M.c.folder_id == folder_id, _M.c.uid.in_(chunk)))).all()
                m, t = plan_flags(rows, mode, want, unchangedsince)
                modified += m
                todo += t
            if todo:
                modseq = await self._bump(s, folder_id)  # one new MODSEQ for this command
                for mid, _uid, nf, _seen in todo:
                    await c.execute(update(_M).where(_M.c.id == mid).values(flags=" ".join(nf), modseq=modseq))
                first_seen = await self._receipts(s, folder_id, [uid for _m, uid, _nf, seen in todo if seen])
                await self._notify(s, [folder_id], modseq)
        res = store_result(modified, todo, modseq)
        res.first_seen = first_seen
        if res.changed:
            self._published_after_commit([folder_id], modseq)
        return res

    async def _receipts(self, s: AsyncSession, folder_id: int, uids: list[int]) -> list[tuple[int, str | None, str]]:
        """Messages among `uids` asking for a read receipt (RFC 8098 Disposition-Notification-To)."""
        out: list[tuple[int, str | None, str]] = []
        for chunk in _chunks(uids, 200):
            rows = (await s.execute(select(Message.uid, Message.message_id, func.substr(Blob.data, 1, 16384))
                                    .join(Blob, Blob.id == Message.blob_id)
                                    .where(Message.folder_id == folder_id, Message.uid.in_(chunk)))).all()
            out.extend(receipt_requests(rows))
        return out

    async def copy(self, folder_id: int, uids: Sequence[int], dest_id: int, *, move: bool) -> list[tuple[int, int]]:
        pairs: list[tuple[int, int]] = []
        async with self._write() as s:
            await self._lock(s, dest_id)
            if move:
                await self._lock(s, folder_id)
            rows: list[Message] = []
            for chunk in _chunks(sorted(uids), 500):
                rows.extend((await s.execute(select(Message).where(Message.folder_id == folder_id,
                                                                   Message.uid.in_(chunk)))).scalars().all())
            rows.sort(key=lambda m: m.uid)
            for m in rows:
                uid, modseq = await allocate_uid(s, dest_id)
                s.add(Message(folder_id=dest_id, uid=uid, blob_id=m.blob_id, flags=m.flags, modseq=modseq,
                              internaldate=m.internaldate, size=m.size, message_id=m.message_id,
                              envelope=m.envelope, bodystructure=m.bodystructure))
                pairs.append((int(m.uid), uid))
            if move and rows:
                # RFC 6851 §3.3: the source messages are expunged (recorded for QRESYNC).
                modseq = await self._bump(s, folder_id)
                src = [int(m.id) for m in rows]
                for chunk in _chunks(src, 500):
                    await s.execute(delete(Message).where(Message.id.in_(chunk)))
                await s.execute(insert(Expunged), [{"folder_id": folder_id, "uid": a, "modseq": modseq}
                                                   for a, _b in pairs])
            await s.flush()
            await self._notify(s, [dest_id, folder_id] if move else [dest_id])
        self._published_after_commit([dest_id, folder_id] if move else [dest_id])
        return pairs

    async def append(self, folder_id: int, raw: bytes, flags: Sequence[str], internaldate: dt.datetime
                     ) -> tuple[int, int]:
        """Store a message; returns (uid, modseq)."""
        env, bs = summarize(raw)
        mid = env[9]
        # Stored in UTC: SQLite keeps no offset, so the instant is what must survive.
        internaldate = internaldate.astimezone(dt.timezone.utc)
        digest = hashlib.sha256(raw).hexdigest()
        if self._fast is not None:
            uid, modseq = await self._fast.write(self._ops.append, folder_id, raw, digest, " ".join(norm_flags(flags)),
                                                 internaldate, mid[:998] if mid else None, env, bs)
            self._published_after_commit([folder_id], modseq)
            return int(uid), int(modseq)
        async with self._write() as s:
            await self._lock(s, folder_id)
            blob_id = await self._store_blob(s, raw, digest)
            uid, modseq = await allocate_uid(s, folder_id)
            c = await s.connection()
            await c.execute(insert(_M).values(
                folder_id=folder_id, uid=uid, blob_id=blob_id, flags=" ".join(norm_flags(flags)), modseq=modseq,
                internaldate=internaldate, size=len(raw), message_id=mid[:998] if mid else None, envelope=env,
                bodystructure=bs))
            await self._notify(s, [folder_id], modseq)
        self._published_after_commit([folder_id], modseq)
        return uid, modseq

    async def _store_blob(self, s: AsyncSession, raw: bytes, digest: str) -> int:
        """mssante.store.mail.store_blob in one statement when the blob is new (INSERT ... ON CONFLICT
        DO NOTHING RETURNING id), two when it already exists (content-addressed, stored once)."""
        c = await s.connection()
        values = {"sha256": digest, "size": len(raw), "data": raw}
        ins: Any = (postgresql.insert(_B) if c.dialect.name == "postgresql" else sqlite.insert(_B))
        row = (await c.execute(ins.values(**values).on_conflict_do_nothing(index_elements=["sha256"])
                               .returning(_B.c.id))).first()
        if row is not None:
            return int(row[0])
        found = await c.scalar(select(_B.c.id).where(_B.c.sha256 == digest))
        if found is None:  # cannot happen: the conflicting row is visible to us
            return await store_blob(s, raw)
        return int(found)

    async def expunge(self, folder_id: int, uids: Sequence[int] | None, events: Any = None
                      ) -> tuple[list[int], int]:
        """Remove \\Deleted messages; `events(uids)` returns audit events committed with the removal.
        Returns (expunged uids, the expunge's MODSEQ or 0)."""
        if self._fast is not None:
            gone, modseq = await self._fast.write(self._ops.expunge, folder_id, None if uids is None else list(uids),
                                                  events)
            if gone:
                self._published_after_commit([folder_id], modseq)
            return gone, modseq
        async with self._write() as s:
            await self._lock(s, folder_id)
            c = await s.connection()
            q = select(_M.c.id, _M.c.uid, _M.c.flags).where(_M.c.folder_id == folder_id,
                                                          _M.c.flags.like("%Deleted%"))
            rows = (await c.execute(q)).all()
            allowed = None if uids is None else set(uids)
            gone = [(int(i), int(u)) for i, u, f in rows
                    if "\\Deleted" in _flags(f) and (allowed is None or int(u) in allowed)]
            if not gone:
                return [], 0
            modseq = await self._bump(s, folder_id)
            for chunk in _chunks([i for i, _u in gone], 500):
                await c.execute(delete(_M).where(_M.c.id.in_(chunk)))
            await c.execute(insert(cast(Table, Expunged.__table__)),
                            [{"folder_id": folder_id, "uid": u, "modseq": modseq} for _i, u in gone])
            if events is not None:
                s.add_all([as_orm(ev) for ev in events(sorted(u for _i, u in gone))])
            await self._notify(s, [folder_id], modseq)
        self._published_after_commit([folder_id], modseq)
        return sorted(u for _i, u in gone), modseq

    async def create(self, mailbox_id: int, name: str, special_use: str | None = None) -> FolderInfo:
        check_name(name)
        async with self._write() as s:
            await s.execute(update(Folder).where(Folder.mailbox_id == mailbox_id, Folder.name == "INBOX")
                            .values(uidnext=Folder.uidnext))
            existing = set((await s.scalars(select(Folder.name).where(Folder.mailbox_id == mailbox_id))).all())
            if name in existing or name.upper() == "INBOX":
                raise StoreError("mailbox already exists", "ALREADYEXISTS")
            # RFC 3501 §6.3.3: create the superior hierarchy names as needed.
            parts = name.split(DELIMITER)
            created: Folder | None = None
            for i in range(1, len(parts) + 1):
                n = DELIMITER.join(parts[:i])
                if n in existing:
                    continue
                validity = (self._new_uidvalidity or _new_uidvalidity)()
                # A fresh UIDVALIDITY that no earlier folder of that name ever had (RFC 3501 §2.3.1.1).
                top = await s.scalar(select(func.max(Folder.uidvalidity)).where(Folder.mailbox_id == mailbox_id))
                validity = max(validity, int(top or 0) + 1) & 0xFFFFFFFF or 1
                created = Folder(mailbox_id=mailbox_id, name=n, special_use=special_use if n == name else None,
                                 uidvalidity=validity, uidnext=1, highestmodseq=1, subscribed=False)
                s.add(created)
                await s.flush()
        assert created is not None
        return _finfo(created)

    async def delete(self, mailbox_id: int, name: str) -> None:
        if name == "INBOX":
            raise StoreError("INBOX cannot be deleted", "CANNOT")  # RFC 3501 §6.3.4
        async with self._write() as s:
            await s.execute(update(Folder).where(Folder.mailbox_id == mailbox_id, Folder.name == "INBOX")
                            .values(uidnext=Folder.uidnext))
            f = await s.scalar(select(Folder).where(Folder.mailbox_id == mailbox_id, Folder.name == name))
            if f is None:
                raise StoreError("no such mailbox", "NONEXISTENT")
            child = await s.scalar(select(Folder.id).where(Folder.mailbox_id == mailbox_id,
                                                           Folder.name.startswith(name + DELIMITER, autoescape=True)))
            if child is not None:
                # RFC 3501 §6.3.4: a name with inferiors is not removed (no \Noselect folders here).
                raise StoreError("mailbox has children", "INUSE")
            await s.execute(delete(Message).where(Message.folder_id == f.id))
            await s.execute(delete(Expunged).where(Expunged.folder_id == f.id))
            await s.delete(f)
            await self._notify(s, [int(f.id)])
        self._published_after_commit([int(f.id)])

    async def rename(self, mailbox_id: int, old: str, new: str) -> None:
        check_name(new)
        if old == "INBOX":
            # RFC 3501 §6.3.5: renaming INBOX moves its messages to the new name; INBOX stays.
            src = await self.folder(mailbox_id, "INBOX")
            assert src is not None
            dest = await self.create(mailbox_id, new)
            await self.copy(src.id, [m.uid for m in await self.messages(src.id)], dest.id, move=True)
            return
        async with self._write() as s:
            await s.execute(update(Folder).where(Folder.mailbox_id == mailbox_id, Folder.name == "INBOX")
                            .values(uidnext=Folder.uidnext))
            names = {n: i for i, n in (await s.execute(select(Folder.id, Folder.name)
                                                       .where(Folder.mailbox_id == mailbox_id))).all()}
            if old not in names:
                raise StoreError("no such mailbox", "NONEXISTENT")
            if new in names or new.upper() == "INBOX":
                raise StoreError("target mailbox exists", "ALREADYEXISTS")
            if new.startswith(old + DELIMITER):
                raise StoreError("cannot move a mailbox into itself", "CANNOT")
            moves = [(fid, new + n[len(old):]) for n, fid in names.items() if n == old or n.startswith(old + DELIMITER)]
            for _fid, nn in moves:
                check_name(nn)  # before the first write (the group-commit invariant above)
            for fid, nn in moves:
                await s.execute(update(Folder).where(Folder.id == fid).values(name=nn))
            parts = new.split(DELIMITER)
            for i in range(1, len(parts)):
                n = DELIMITER.join(parts[:i])
                if n not in names:
                    s.add(Folder(mailbox_id=mailbox_id, name=n, uidvalidity=_new_uidvalidity(), uidnext=1,
                                 highestmodseq=1, subscribed=False))
                    names[n] = -1

    async def subscribe(self, mailbox_id: int, name: str, subscribed: bool) -> None:
        async with self._write() as s:
            r = await s.execute(update(Folder).where(Folder.mailbox_id == mailbox_id, Folder.name == name)
                                .values(subscribed=subscribed))
            if not r.rowcount:  # type: ignore[attr-defined]
                raise StoreError("no such mailbox", "NONEXISTENT")

    async def login_row(self, address: str) -> tuple[str | None, bool] | None:
        """(password_hash, enabled) of the mailbox with this (lower-case) address, for LoginCache."""
        if self._fast is not None:
            return cast("tuple[str | None, bool] | None", await self._fast.read(self._ops.login_row, address,
                                                                                inline=True, snapshot=False))
        async with self._read() as s:
            r = (await s.execute(select(Mailbox.password_hash, Mailbox.enabled)
                                 .where(Mailbox.address == address))).first()
        return None if r is None else (r[0], bool(r[1]))

    async def status(self, folder_id: int) -> FolderStatus:
        if self._fast is not None:
            return cast(FolderStatus, await self._fast.read(self._ops.status, folder_id, inline=True,
                                                            snapshot=False))
        async with self._read() as s:
            rows = (await s.execute(select(Message.flags, Message.size).where(Message.folder_id == folder_id))).all()
        unseen = deleted = size = 0
        for fl, sz in rows:
            f = _flags(fl)
            unseen += "\\Seen" not in f
            deleted += "\\Deleted" in f
            size += int(sz)
        return FolderStatus(len(rows), unseen, deleted, size)


def check_name(name: str) -> None:
    """Mailbox names we refuse (RFC 3501 §5.1): empty levels, control characters, too long."""
    if not name or len(name) > MAX_NAME or any(ord(c) < 0x20 or c == "\x7f" for c in name):
        raise StoreError("invalid mailbox name", "CANNOT")
    if any(not p for p in name.split(DELIMITER)) or "*" in name or "%" in name:
        raise StoreError("invalid mailbox name", "CANNOT")


def _new_uidvalidity() -> int:
    import time

    return int(time.time()) & 0xFFFFFFFF or 1


def _chunks(xs: Sequence[int], n: int) -> Iterable[list[int]]:
    for i in range(0, len(xs), n):
        yield list(xs[i : i + n])


__all__ = ["SqlStorage", "check_name"]
