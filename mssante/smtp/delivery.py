"""Acceptance: the one transaction that makes a message ours (ARCHITECTURE.md: 250 only after commit).

In a single database transaction, shared with concurrent acceptances by the group committer:
- one message row per local recipient (mssante.store.mail.deliver; the blob stored once),
- one queue row per remote recipient (mssante.store.queue.enqueue),
- success DSNs asked for with NOTIFY=SUCCESS (RFC 3461 §4.1) for the local deliveries,
- the audit event (peer or user, from, to, message-id, size, decision), never content (SPECS.md §2).
ENVELOPE and BODYSTRUCTURE are computed here, once, with mssante.imap.mime.summarize when available.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.ext.asyncio import AsyncSession

from mssante.smtp.dsn import DsnRecipient, build_dsn
from mssante.smtp.envelope import RcptParams, domain_of, wants
from mssante.store.groupcommit import GroupCommitter, LocalDelivery
from mssante.store.mail import deliver
from mssante.store.models import Mailbox
from mssante.store.queue import NewRecipient, enqueue

log = logging.getLogger("mssante.smtp.delivery")

_summarize: Callable[[bytes], tuple[Any, Any]] | None
try:  # the IMAP slice's summariser (ENVELOPE/BODYSTRUCTURE JSON); optional
    from mssante.imap.mime import summarize as _summarize
except ImportError:  # pragma: no cover - depends on the IMAP package being present
    _summarize = None


COMMITTER_KEY = "smtp.committer"
WAKEUP_KEY = "relay.wakeup"


def committer_for(services: Any) -> GroupCommitter:
    """The gateway's shared group committer (one per Services)."""
    c = services.extras.get(COMMITTER_KEY)
    if c is None:
        pg = services.engine.dialect.name == "postgresql"
        c = GroupCommitter(services.sessions, max_batch=128, workers=2 if pg else 1, hold_connections=True)
        services.extras[COMMITTER_KEY] = c
    return c  # type: ignore[no-any-return]


def relay_wakeup(services: Any) -> asyncio.Event:
    ev = services.extras.get(WAKEUP_KEY)
    if ev is None:
        ev = asyncio.Event()
        services.extras[WAKEUP_KEY] = ev
    return ev  # type: ignore[no-any-return]


def summarize(raw: bytes) -> tuple[Any, Any]:
    if _summarize is None:
        return None, None
    try:
        return _summarize(raw)
    except Exception:  # a malformed MIME structure must not refuse the message; IMAP recomputes
        log.warning("could not summarise a message for IMAP; storing it without ENVELOPE/BODYSTRUCTURE")
        return None, None


@dataclass
class Acceptance:
    raw: bytes
    mail_from: str
    local: dict[str, int]  # address -> mailbox id
    recipients: Sequence[RcptParams]  # all recipients (local ones included), with DSN parameters
    remote: Sequence[str] = ()  # addresses to queue for other operators
    envid: str | None = None
    ret: str | None = None
    message_id: str | None = None
    actor: str = ""
    listener: str = "mta"
    peer: str = ""
    queue_id: str = ""
    extra_audit: dict[str, Any] = field(default_factory=dict)


async def deliver_notification(session: AsyncSession, services: Any, raw: bytes, to: str) -> bool:
    """Deliver a DSN/report to `to`: locally when hosted here, else queued with a null sender."""
    now = services.now()
    if domain_of(to) in services.config.all_local_domains:
        box = await session.scalar(select(Mailbox).where(Mailbox.address == to.lower()))
        if box is None or not box.enabled:
            log.info("notification for a missing local mailbox dropped")
            return False
        env, bs = summarize(raw)
        await deliver(session, raw, [box.id], internaldate=now, envelope=env, bodystructure=bs)
        return True
    await enqueue(session, raw, "", [NewRecipient(to, None, "NEVER")], now=now, actor="mailer-daemon")
    return True


def postmaster(services: Any) -> str:
    return f"postmaster@{services.config.operator.domain}"


async def accept(services: Any, acc: Acceptance) -> None:
    """Commit the message (group commit); returns once durable. Raises on a store failure."""
    now = services.now()
    env, bs = summarize(acc.raw) if acc.local else (None, None)
    by_addr = {r.address.lower(): r for r in acc.recipients}
    success = [a for a in acc.local if wants(by_addr[a].notify if a in by_addr else None, "SUCCESS")]
    dsn: bytes | None = None
    if success and acc.mail_from:
        dsn = build_dsn(
            reporting_mta=services.config.hostname, postmaster=postmaster(services), sender=acc.mail_from,
            recipients=[DsnRecipient(a, "delivered", "2.0.0", original_recipient=by_addr[a].orcpt) for a in success],
            original=acc.raw, now=now, envid=acc.envid, ret="HDRS", original_message_id=acc.message_id,
        )
    audit = services.audit
    local_ids = sorted(set(acc.local.values()))
    event = audit.event(
        f"smtp.{acc.listener}.accept", acc.actor, "accepted", mail_from=acc.mail_from,
        local=sorted(acc.local), remote=list(acc.remote), message_id=acc.message_id, size=len(acc.raw),
        peer=acc.peer, queue_id=acc.queue_id, **acc.extra_audit,
    )

    async def extra(session: AsyncSession) -> None:
        if acc.remote:
            await enqueue(
                session, acc.raw, acc.mail_from,
                [NewRecipient(a, by_addr[a.lower()].orcpt if a.lower() in by_addr else None,
                              by_addr[a.lower()].notify if a.lower() in by_addr else None) for a in acc.remote],
                now=now, envid=acc.envid, ret=acc.ret, message_id=acc.message_id, actor=acc.actor,
            )
        if dsn is not None:
            await deliver_notification(session, services, dsn, acc.mail_from)

    job: Any
    if local_ids:
        # The common case goes through the batched path (one set of statements per group commit).
        job = LocalDelivery(acc.raw, local_ids, now, acc.message_id, env, bs, event,
                            extra if (acc.remote or dsn is not None) else None)
    else:
        async def job(session: AsyncSession) -> None:
            await extra(session)
            session.add(event)

    folders = await committer_for(services).submit(job)
    if folders and services.notifier is not None:
        for folder_id in folders:  # IMAP IDLE sessions of this process (after COMMIT)
            services.notifier.publish(folder_id)
    if acc.remote:
        relay_wakeup(services).set()


class MailboxCache:
    """address -> (mailbox id or None) for RCPT checks, kept `ttl` seconds (one SELECT per address per ttl).

    A mailbox closed or created is seen by RCPT within `ttl` seconds (default 2 s); the delivery itself
    still writes through the current rows.
    """

    def __init__(self, ttl: float = 2.0, max_entries: int = 100_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._items: dict[str, tuple[float, int | None]] = {}

    def get(self, address: str, now: float) -> tuple[bool, int | None]:
        hit = self._items.get(address)
        if hit is None or hit[0] < now:
            return False, None
        return True, hit[1]

    def put(self, address: str, value: int | None, now: float) -> None:
        if len(self._items) >= self.max_entries:
            self._items.clear()
        self._items[address] = (now + self.ttl, value)


CACHE_KEY = "smtp.mailbox_cache"
READER_KEY = "smtp.sqlite_reader"
_MAILBOX_BY_ADDRESS = select(Mailbox.id, Mailbox.enabled).where(Mailbox.address == bindparam("address"))
_MAILBOX_SQL = str(_MAILBOX_BY_ADDRESS.compile(dialect=sqlite_dialect.dialect()))  # "... WHERE address = ?"


class SqliteReader:
    """A read-only sqlite3 connection for the RCPT lookup, used on the event loop.

    One indexed SELECT takes tens of microseconds in the calling thread; through aiosqlite it is five hops
    to the driver thread (cursor, execute, fetch, close, pool reset), each a wake-up of both threads, and
    under 20 concurrent connections the pool overflowed and opened (and closed) connections for it. In WAL
    mode a reader never waits for the writer; the busy timeout is 0 so it can never block the loop: any
    error (busy, no such file, schema) makes the caller fall back to the engine.
    """

    def __init__(self, path: str) -> None:
        uri = "file:" + urllib.parse.quote(path) + "?mode=ro"
        self._conn = sqlite3.connect(uri, uri=True, timeout=0, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA query_only=ON")

    def mailbox(self, address: str) -> tuple[bool, int | None]:
        row = self._conn.execute(_MAILBOX_SQL, (address,)).fetchone()
        return True, (None if row is None or not row[1] else int(row[0]))

    def close(self) -> None:
        self._conn.close()


def _sqlite_reader(services: Any) -> SqliteReader | None:
    reader = services.extras.get(READER_KEY, False)
    if reader is False:
        reader = None
        url = services.engine.url
        path = url.database or ""
        if url.get_backend_name() == "sqlite" and path and path != ":memory:" and not path.startswith("file:"):
            try:
                reader = SqliteReader(path)
            except sqlite3.Error as e:
                log.info("RCPT lookups through the engine (no read-only SQLite connection: %s)", type(e).__name__)
                reader = None
        services.extras[READER_KEY] = reader
    return reader  # type: ignore[no-any-return]


class MailboxLookups:
    """RCPT lookups that miss the cache, for servers (PostgreSQL): the addresses asked for while a query
    runs are looked up together by the next one, on one connection kept in autocommit (no pool checkout,
    pre-ping and reset per lookup). A failed query fails its waiters (RCPT answers 451) and the connection
    is opened again for the next one."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self._pending: dict[str, list[asyncio.Future[int | None]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._conn: Any = None
        self.queries = 0

    async def get(self, address: str) -> int | None:
        fut: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(address, []).append(fut)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="smtp-rcpt-lookups")
        return await fut

    async def _run(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, {}
            try:
                found = await self._query(sorted(batch))
            except Exception as e:  # noqa: BLE001 - given to every waiter of this batch
                for futs in batch.values():
                    for f in futs:
                        if not f.done():
                            f.set_exception(e)
                continue
            for addr, futs in batch.items():
                for f in futs:
                    if not f.done():
                        f.set_result(found.get(addr))

    async def _query(self, addresses: list[str]) -> dict[str, int | None]:
        if self._conn is None:
            conn = await self._engine.connect()
            try:
                await conn.execution_options(isolation_level="AUTOCOMMIT")
            except BaseException:
                await conn.close()
                raise
            self._conn = conn
        self.queries += 1
        try:
            rows = (await self._conn.execute(_MAILBOXES_BY_ADDRESS, {"addresses": addresses})).all()
        except BaseException:
            await self.close()
            raise
        return {str(a): (int(i) if enabled else None) for a, i, enabled in rows}

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close()
            except Exception as e:  # noqa: BLE001 - a broken connection is simply dropped
                log.debug("closing the RCPT lookup connection: %s", type(e).__name__)


LOOKUPS_KEY = "smtp.rcpt_lookups"
_MAILBOXES_BY_ADDRESS = select(Mailbox.address, Mailbox.id, Mailbox.enabled).where(
    Mailbox.address.in_(bindparam("addresses", expanding=True)))


async def local_mailbox(services: Any, address: str) -> int | None:
    """The id of an existing, open local mailbox, or None (RFC 5321 §3.3: 550 5.1.1 at RCPT)."""
    cache: MailboxCache | None = services.extras.get(CACHE_KEY)
    if cache is None:
        ttl = float(getattr(services.config.smtp, "rcpt_cache_seconds", 2.0))
        cache = services.extras[CACHE_KEY] = MailboxCache(ttl)
    addr = address.lower()
    now = time.monotonic()
    found, value = cache.get(addr, now)
    if found:
        return value
    reader = _sqlite_reader(services)
    found = False
    if reader is not None:
        try:
            found, value = reader.mailbox(addr)
        except sqlite3.Error as e:  # busy (a checkpoint), schema not there yet: ask the engine
            log.debug("read-only RCPT lookup failed (%s); using the engine", type(e).__name__)
    if not found and services.engine.dialect.name != "sqlite":
        lookups: MailboxLookups | None = services.extras.get(LOOKUPS_KEY)
        if lookups is None:
            lookups = services.extras[LOOKUPS_KEY] = MailboxLookups(services.engine)
        value = await lookups.get(addr)
    elif not found:
        # A Core connection, not an ORM session: this runs for every new recipient address.
        async with services.engine.connect() as conn:
            row = (await conn.execute(_MAILBOX_BY_ADDRESS, {"address": addr})).first()
        value = None if row is None or not row[1] else int(row[0])
    cache.put(addr, value, now)
    return value


async def close_committer(services: Any) -> None:
    """Finish pending acceptances and stop the shared group committer (call after stopping the listeners)."""
    c = services.extras.pop(COMMITTER_KEY, None)
    if c is not None:
        await c.close()
    reader = services.extras.pop(READER_KEY, None)
    if reader:
        reader.close()
    lookups = services.extras.pop(LOOKUPS_KEY, None)
    if lookups is not None:
        await lookups.close()
