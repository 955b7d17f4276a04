"""PostgreSQL fast path for the IMAP storage hot operations (mssante.imap.store.SqlStorage).

Through SQLAlchemy's async engine each checkout pings (three round trips with pool_pre_ping) and
each statement goes through the ORM/Core layers and greenlet adaptation: about 3 ms of CPU per
IMAP command. Here the hot operations are plain SQL on asyncpg (prepared statements cached per
connection) from a small pool of our own, each write in one transaction that also NOTIFYs
'mssante_folder' (delivered at COMMIT), exactly like the SQLAlchemy code in store.py: same rows,
same MODSEQ/UID bookkeeping, same row lock on the folder first.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any, cast

from sqlalchemy.engine import URL

from mssante.imap.store_types import (
    Changes,
    FolderInfo,
    FolderStatus,
    MessageDetail,
    MessageMeta,
    StoreError,
    StoreResult,
    _FOLDER_SQL,
    _UTC,
    _finfo_row,
    _flags,
    _inbox_first,
    _metas,
    CHECK_FIRST_MAX,
    plan_flags,
    receipt_requests,
    row_detail,
    store_result,
    unchanged_result,
)
from mssante.store.mail import NOTIFY_CHANNEL
from mssante.store.models import utcnow

log = logging.getLogger("mssante.imap.pg")

_STORE_ROWS_SQL = "SELECT id, uid, flags, modseq FROM message WHERE folder_id = $1 AND uid = ANY($2::bigint[])"


class PgRunner:
    """A small asyncpg pool (created on first use, closed by aclose())."""

    def __init__(self, url: URL, *, max_size: int = 8) -> None:
        self._dsn: dict[str, Any] = {k: v for k, v in {
            "host": url.host, "port": url.port, "user": url.username, "password": url.password,
            "database": url.database}.items() if v is not None}
        self._max = max_size
        self._pool: Any = None
        self._creating: asyncio.Future[Any] | None = None
        self._closed = False

    async def _get(self) -> Any:
        if self._pool is not None:
            return self._pool
        if self._closed:
            raise RuntimeError("storage closed")
        if self._creating is None:
            import asyncpg

            # reset=_keep: released connections skip asyncpg's reset query (a round trip per
            # operation); ours never LISTEN, set session variables, hold cursors or advisory locks,
            # and an open transaction is still rolled back by the pool.
            self._creating = asyncio.ensure_future(asyncpg.create_pool(
                min_size=0, max_size=self._max, max_inactive_connection_lifetime=30.0, reset=_keep, **self._dsn))
        try:
            pool = await asyncio.shield(self._creating)
        except BaseException:
            self._creating = None
            raise
        if self._closed:
            pool.terminate()
            raise RuntimeError("storage closed")
        self._pool = pool
        return pool

    async def read(self, fn: Callable[..., Any], *args: Any, inline: bool = False, snapshot: bool = True) -> Any:
        pool = await self._get()
        async with pool.acquire() as c:
            return await fn(c, *args)

    async def write(self, fn: Callable[..., Any], *args: Any) -> Any:
        pool = await self._get()
        async with pool.acquire() as c, c.transaction():
            return await fn(c, *args)

    def shutdown(self) -> None:
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                pool.terminate()
            except Exception:  # noqa: BLE001 - the loop may be gone; the sockets close with the objects
                log.debug("terminating the asyncpg pool failed", exc_info=True)

    async def aclose(self) -> None:
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), 10)
            except (asyncio.TimeoutError, OSError):
                pool.terminate()

    @property
    def batches(self) -> int:
        return 0

    batched = batches


async def _keep(_conn: Any) -> None:
    return None


def _json_out(v: Any) -> Any:
    return json.loads(v) if isinstance(v, str) else v


class PgOps:
    """Coroutine functions f(conn, ...) for PgRunner.read / .write (same names as store_sqlite.SqliteOps)."""

    # --- reads ------------------------------------------------------------------------------------
    @staticmethod
    async def folders(c: Any, mailbox_id: int) -> list[FolderInfo]:
        rows = await c.fetch(_FOLDER_SQL + " WHERE mailbox_id = $1", mailbox_id)
        return _inbox_first(_finfo_row(r) for r in rows)

    @staticmethod
    async def folder(c: Any, mailbox_id: int, name: str) -> FolderInfo | None:
        r = await c.fetchrow(_FOLDER_SQL + " WHERE mailbox_id = $1 AND name = $2", mailbox_id, name)
        return None if r is None else _finfo_row(r)

    @staticmethod
    async def highestmodseq(c: Any, folder_id: int) -> int | None:
        v = await c.fetchval("SELECT highestmodseq FROM folder WHERE id = $1", folder_id)
        return None if v is None else int(v)

    @staticmethod
    async def messages(c: Any, folder_id: int) -> list[MessageMeta]:
        rows = await c.fetch("SELECT uid, flags, modseq FROM message WHERE folder_id = $1 ORDER BY uid", folder_id)
        return _metas(rows)

    @staticmethod
    async def open_folder_small(c: Any, mailbox_id: int, name: str, views: Any = None
                                ) -> tuple[FolderInfo, list[MessageMeta] | None] | None:
        async with c.transaction(isolation="repeatable_read", readonly=True):  # one snapshot for both
            f = await PgOps.folder(c, mailbox_id, name)
            if f is None:
                return None
            if views is not None:
                hit = views.get(mailbox_id, f)
                if hit is not None:
                    return f, hit
            return f, await PgOps.messages(c, f.id)

    @staticmethod
    async def changes_since(c: Any, folder_id: int, modseq: int) -> Changes | None:
        r = await c.fetchrow(_FOLDER_SQL + " WHERE id = $1", folder_id)
        if r is None:
            return None
        out = Changes(_finfo_row(r))
        if out.folder.highestmodseq <= modseq:
            return out
        rows = await c.fetch("SELECT uid, flags, modseq FROM message WHERE folder_id = $1 AND modseq > $2 "
                             "ORDER BY uid", folder_id, modseq)
        out.changed = _metas(rows)
        out.expunged = [int(r[0]) for r in await c.fetch(
            "SELECT uid FROM expunged WHERE folder_id = $1 AND modseq > $2 ORDER BY uid", folder_id, modseq)]
        return out

    @staticmethod
    async def details(c: Any, folder_id: int, uids: Sequence[int], raw: bool, summary: bool) -> list[MessageDetail]:
        summary = summary or raw
        if raw:
            sql = ("SELECT m.uid, m.flags, m.modseq, m.internaldate, m.size, m.envelope, m.bodystructure, b.data "
                   "FROM message m JOIN blob b ON b.id = m.blob_id WHERE m.folder_id = $1 AND m.uid = ANY($2::bigint[]) "
                   "ORDER BY m.uid")
        elif summary:
            sql = ("SELECT m.uid, m.flags, m.modseq, m.internaldate, m.size, m.envelope, m.bodystructure, NULL "
                   "FROM message m WHERE m.folder_id = $1 AND m.uid = ANY($2::bigint[]) ORDER BY m.uid")
        else:
            sql = ("SELECT m.uid, m.flags, m.modseq, m.internaldate, m.size, NULL, NULL, NULL "
                   "FROM message m WHERE m.folder_id = $1 AND m.uid = ANY($2::bigint[]) ORDER BY m.uid")
        out: list[MessageDetail] = []
        for row in await c.fetch(sql, folder_id, sorted(uids)):
            idate = row[3]
            d = idate if idate.tzinfo else idate.replace(tzinfo=_UTC)
            detail = row_detail(tuple(row), d, summary=summary, raw=raw, decode=_json_out)
            if detail is None:  # delivered without a summary: computed now from the blob
                got = await c.fetchval("SELECT b.data FROM blob b JOIN message m ON m.blob_id = b.id "
                                       "WHERE m.folder_id = $1 AND m.uid = $2", folder_id, row[0])
                detail = row_detail(tuple(row), d, summary=summary, raw=raw, decode=_json_out, blob=bytes(got or b""))
            out.append(cast(MessageDetail, detail))
        return out

    details_small = details

    @staticmethod
    async def login_row(c: Any, address: str) -> tuple[str | None, bool] | None:
        r = await c.fetchrow("SELECT password_hash, enabled FROM mailbox WHERE address = $1", address)
        return None if r is None else (r[0], bool(r[1]))

    @staticmethod
    async def status(c: Any, folder_id: int) -> FolderStatus:
        # Flags are canonical, space-separated; keywords cannot contain a backslash (RFC 3501 atom).
        r = await c.fetchrow("SELECT count(*), "
                             "coalesce(sum(CASE WHEN strpos(' ' || flags || ' ', ' \\Seen ') = 0 THEN 1 ELSE 0 END), 0), "
                             "coalesce(sum(CASE WHEN strpos(' ' || flags || ' ', ' \\Deleted ') > 0 THEN 1 ELSE 0 END), 0), "
                             "coalesce(sum(size), 0) FROM message WHERE folder_id = $1", folder_id)
        return FolderStatus(int(r[0]), int(r[1]), int(r[2]), int(r[3]))

    # --- writes (in the runner's transaction) -----------------------------------------------------
    @staticmethod
    async def _lock(c: Any, folder_id: int) -> None:
        """The folder's row lock first: every read-modify-write serialises with the other writers."""
        if await c.fetchval("UPDATE folder SET uidnext = uidnext WHERE id = $1 RETURNING id", folder_id) is None:
            raise StoreError("mailbox no longer exists", "NONEXISTENT")

    @staticmethod
    async def _bump(c: Any, folder_id: int) -> int:
        v = await c.fetchval("UPDATE folder SET highestmodseq = highestmodseq + 1 WHERE id = $1 "
                             "RETURNING highestmodseq", folder_id)
        if v is None:
            raise StoreError("mailbox no longer exists", "NONEXISTENT")
        return int(v)

    @staticmethod
    async def _notify(c: Any, folder_id: int, modseq: int | None) -> None:
        await c.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL,
                        str(folder_id) if modseq is None else f"{folder_id}:{modseq}")

    @staticmethod
    async def store_unchanged(c: Any, folder_id: int, uids: Sequence[int], mode: str, want: frozenset[str],
                              unchangedsince: int | None) -> StoreResult | None:
        """One read: the STORE's result when it changes no flag (no write transaction), else None."""
        if len(uids) > CHECK_FIRST_MAX:
            return None
        return unchanged_result(await c.fetch(_STORE_ROWS_SQL, folder_id, sorted(uids)), mode, want, unchangedsince)

    @staticmethod
    async def store_flags(c: Any, folder_id: int, uids: Sequence[int], mode: str, want: frozenset[str],
                          unchangedsince: int | None) -> StoreResult:
        await PgOps._lock(c, folder_id)
        rows = await c.fetch(_STORE_ROWS_SQL, folder_id, sorted(uids))
        modified, todo = plan_flags(rows, mode, want, unchangedsince)
        modseq = await PgOps._bump(c, folder_id) if todo else 0  # one new MODSEQ for this command
        res = store_result(modified, todo, modseq)
        if todo:
            await c.executemany("UPDATE message SET flags = $1, modseq = $2 WHERE id = $3",
                                [(" ".join(nf), modseq, mid) for mid, _uid, nf, _seen in todo])
            newly_seen = [uid for _mid, uid, _nf, seen in todo if seen]
            if newly_seen:
                res.first_seen = await PgOps._receipts(c, folder_id, newly_seen)
            await PgOps._notify(c, folder_id, modseq)
        return res

    @staticmethod
    async def _receipts(c: Any, folder_id: int, uids: list[int]) -> list[tuple[int, str | None, str]]:
        rows = await c.fetch("SELECT m.uid, m.message_id, substr(b.data, 1, 16384) FROM message m "
                             "JOIN blob b ON b.id = m.blob_id WHERE m.folder_id = $1 AND m.uid = ANY($2::bigint[])",
                             folder_id, uids)
        return receipt_requests(rows)

    @staticmethod
    async def append(c: Any, folder_id: int, raw: bytes, digest: str, flags: str, internaldate: dt.datetime,
                     message_id: str | None, env: Any, bs: Any) -> tuple[int, int]:
        await PgOps._lock(c, folder_id)
        blob_id = await c.fetchval("INSERT INTO blob (sha256, size, data) VALUES ($1, $2, $3) "
                                   "ON CONFLICT (sha256) DO NOTHING RETURNING id", digest, len(raw), raw)
        if blob_id is None:  # content-addressed: the same message is stored once
            blob_id = await c.fetchval("SELECT id FROM blob WHERE sha256 = $1", digest)
        r = await c.fetchrow("UPDATE folder SET uidnext = uidnext + 1, highestmodseq = highestmodseq + 1 "
                             "WHERE id = $1 RETURNING uidnext, highestmodseq", folder_id)
        uid, modseq = int(r[0]) - 1, int(r[1])
        await c.execute("INSERT INTO message (folder_id, uid, blob_id, flags, modseq, internaldate, size, message_id, "
                        "envelope, bodystructure) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                        folder_id, uid, blob_id, flags, modseq, internaldate, len(raw), message_id,
                        json.dumps(env), json.dumps(bs))
        await PgOps._notify(c, folder_id, modseq)
        return uid, modseq

    @staticmethod
    async def expunge(c: Any, folder_id: int, uids: Sequence[int] | None, events: Any) -> tuple[list[int], int]:
        await PgOps._lock(c, folder_id)
        rows = await c.fetch("SELECT id, uid, flags FROM message WHERE folder_id = $1 AND flags LIKE '%Deleted%'",
                             folder_id)
        allowed = None if uids is None else set(uids)
        gone = [(int(i), int(u)) for i, u, f in rows if "\\Deleted" in _flags(f) and (allowed is None or u in allowed)]
        if not gone:
            return [], 0
        modseq = await PgOps._bump(c, folder_id)
        await c.execute("DELETE FROM message WHERE id = ANY($1::bigint[])", [i for i, _u in gone])
        await c.executemany("INSERT INTO expunged (folder_id, uid, modseq) VALUES ($1, $2, $3)",
                            [(folder_id, u, modseq) for _i, u in gone])
        done = sorted(u for _i, u in gone)
        if events is not None:
            await PgOps.add_events(c, list(events(done)))
        await PgOps._notify(c, folder_id, modseq)
        return done, modseq

    @staticmethod
    async def add_events(c: Any, events: Sequence[Any]) -> None:
        """Audit events (AuditRow or AuditEvent: the same attributes), inserted as plain rows."""
        await c.executemany("INSERT INTO audit_event (at, action, actor, outcome, details) VALUES ($1, $2, $3, $4, $5)",
                            [(ev.at or utcnow(), ev.action, ev.actor if ev.actor is not None else "",
                              ev.outcome if ev.outcome is not None else "ok", json.dumps(ev.details))
                             for ev in events])


__all__ = ["PgRunner", "PgOps"]
