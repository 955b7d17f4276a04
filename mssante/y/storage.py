"""Step 4 of the intake (docs/y-runtime.md): the decided plans of one group commit written in ONE
transaction, before any AA.

`store_plans` writes a batch with a fixed number of statements whatever its size: duplicates (one
SELECT), the leg messages and CDAs in the content-addressed `blob` table, the `y_delivery` rows, every
`y_leg`, every audit event `y.accepted`. On SQLite (aiosqlite) the same rows go through the driver
thread in ONE hand-off (`_store_sqlite`) instead of three or four per statement: each hand-off wakes
that thread and the event loop again, and on a busy gateway that, not SQLite, was the cost. Both paths
build their rows with the same functions (`_delivery_row`, `_leg_rows`, `_accepted_event`) and write
them through the columns' own bind processors, so they store the same values.

`write_submission` does the same for the worker's part of a submission batch: the relay queue rows of the
leg messages handed to the relay (those of mssante.store.queue.enqueue) and the batch's audit events.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Table, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from mssante.store.groupcommit import _bind_processor, _sqlite_driver
from mssante.store.models import AuditEvent, Blob
from mssante.y.models import LEG_DMP, LEG_MSS, YDelivery, YLeg
from mssante.y.tracking import ACCEPTED

if TYPE_CHECKING:
    from mssante.y.service import SenderRule, StoragePlan

Answer = tuple[int, bytes, bool]  # (delivery id, ACK, duplicate)
Key = tuple[str, str]  # (sender key, control id)


@dataclass
class PendingStore:
    """A group-commit job: a decided plan to store (mssante.store.groupcommit `run_many`)."""

    plan: StoragePlan
    rule: SenderRule
    actor: str
    source: str
    now: dt.datetime
    audit: Any

    @staticmethod
    async def run_many(session: AsyncSession, jobs: Sequence[PendingStore]) -> list[Answer]:
        return await store_plans(session, jobs, audit=jobs[0].audit)

    async def __call__(self, session: AsyncSession) -> Answer:
        return (await store_plans(session, [self], audit=self.audit))[0]


async def store_blobs(session: AsyncSession, payloads: dict[str, bytes]) -> dict[str, int]:
    """Content-addressed blobs (SHA-256 hex -> bytes) with two statements whatever their number (one
    INSERT that keeps a blob already stored, one SELECT); returns their ids by digest. The caller commits."""
    if not payloads:
        return {}
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    ins = postgresql.insert(Blob) if dialect == "postgresql" else sqlite.insert(Blob)
    await session.execute(ins.on_conflict_do_nothing(index_elements=["sha256"]),
                          [{"sha256": d, "size": len(r), "data": r} for d, r in payloads.items()])
    return {str(h): int(i) for i, h in (await session.execute(
        select(Blob.id, Blob.sha256).where(Blob.sha256.in_(list(payloads))))).all()}


# --- the rows, for both paths ------------------------------------------------------------------------

def _payloads(new: Sequence[PendingStore]) -> tuple[dict[str, bytes], dict[int, str]]:
    """The blobs of the new plans by SHA-256, and id(payload) -> its digest (each payload hashed once)."""
    digests: dict[str, bytes] = {}
    digest_of: dict[int, str] = {}
    for p in new:
        for payload in [leg.raw for leg in p.plan.mail_legs] + [req.cda for req in p.plan.dmp]:
            if id(payload) not in digest_of:
                digest_of[id(payload)] = hashlib.sha256(payload).hexdigest()
            digests.setdefault(digest_of[id(payload)], payload)
    return digests, digest_of


def _delivery_row(p: PendingStore) -> dict[str, Any]:
    return {"sender_key": p.rule.key, "control_id": p.plan.control_id, "message_type": p.plan.message_type,
            "action": p.plan.action, "patient_ins": p.plan.patient_ins, "sender_mailbox": p.rule.mailbox,
            "source": p.source, "actor": p.actor[:500], "ack_reception": p.plan.ack_reception,
            "ack_lecture": p.plan.ack_lecture, "ack_endpoint": p.rule.ack_endpoint,
            "ack_context": dataclasses.asdict(p.plan.ack_context), "ack": p.plan.ack.decode("utf-8"),
            "warnings": list(p.plan.warnings), "received_at": p.now}


def _leg_rows(p: PendingStore, delivery_id: int, blob_id: Callable[[bytes], int]) -> list[dict[str, Any]]:
    """One leg per (leg message, recipient) and per DMP document, all `accepted` and due now."""
    plan, now = p.plan, p.now
    ins = plan.patient_ins or ""
    legs: list[dict[str, Any]] = []
    for leg in plan.mail_legs:
        for rcpt in leg.recipients:
            rid = ins if leg.group == "patient" else plan.recipient_ids.get(rcpt.lower(), "")
            legs.append({"delivery_id": delivery_id, "kind": LEG_MSS, "group": leg.group, "recipient": rcpt,
                         "recipient_id": rid[:64], "message_id": leg.message_id, "blob_id": blob_id(leg.raw),
                         "state": ACCEPTED, "state_at": now, "attempts": 0, "next_attempt_at": now, "detail": None})
    for req in plan.dmp:
        fields = {f.name: getattr(req, f.name) for f in dataclasses.fields(req) if f.name != "cda"}
        fields["action"] = req.action.value
        fields["restrictions"] = sorted(req.restrictions)
        legs.append({"delivery_id": delivery_id, "kind": LEG_DMP, "group": "", "recipient": req.ins,
                     "recipient_id": req.ins, "message_id": None, "blob_id": blob_id(req.cda), "state": ACCEPTED,
                     "state_at": now, "attempts": 0, "next_attempt_at": now, "detail": {"request": fields}})
    return legs


def _accepted_event(p: PendingStore, delivery_id: int, audit: Any) -> dict[str, Any]:
    plan = p.plan
    ev = audit.event(
        "y.accepted", p.actor, "ok", delivery_id=delivery_id, sender=p.rule.key, control_id=plan.control_id[:64],
        message_type=plan.message_type, source=p.source, ins=plan.patient_ins or "",
        legs=sum(len(m.recipients) for m in plan.mail_legs) + len(plan.dmp), dmp_legs=len(plan.dmp),
        mss_recipients=sum(len(m.recipients) for m in plan.mail_legs),
    )
    return {"at": ev.at, "action": ev.action, "actor": ev.actor, "outcome": ev.outcome, "details": ev.details}


def _split(items: Sequence[PendingStore], found: dict[Key, tuple[int, str]]) -> dict[Key, PendingStore]:
    """The plans to write: the first of each control id not stored yet."""
    new: dict[Key, PendingStore] = {}
    for p in items:
        key = (p.rule.key, p.plan.control_id)
        if key not in found and key not in new:
            new[key] = p
    return new


def _answers(items: Sequence[PendingStore], found: dict[Key, tuple[int, str]], new: dict[Key, PendingStore],
             ids: dict[Key, int]) -> list[Answer]:
    out: list[Answer] = []
    for p in items:
        key = (p.rule.key, p.plan.control_id)
        if key in found:
            out.append((found[key][0], found[key][1].encode("utf-8"), True))
        elif new[key] is p:
            out.append((ids[key], p.plan.ack, False))
        else:  # the same control id twice in one batch: the second is a duplicate of the first
            out.append((ids[key], new[key].plan.ack, True))
    return out


# --- the transaction -----------------------------------------------------------------------------------

async def store_plans(session: AsyncSession, items: Sequence[PendingStore], *, audit: Any) -> list[Answer]:
    """Step 4 for a batch of plans, in the caller's transaction. Returns (delivery id, ACK, duplicate) per
    item. A control id already stored — or twice in the batch — is a duplicate answered with the first
    ACK. Safe to re-run after a rollback (it only writes through `session`)."""
    if session.bind is not None and session.bind.dialect.name == "sqlite":
        done = await _store_sqlite(session, items, audit)
        if done is not None:
            return done
    keys = list(dict.fromkeys((p.rule.key, p.plan.control_id) for p in items))
    found: dict[Key, tuple[int, str]] = {}
    for i in range(0, len(keys), 200):
        part = keys[i:i + 200]
        # IN on both columns of the unique index (a row-value IN makes SQLite scan the whole index).
        rows = (await session.execute(select(YDelivery.sender_key, YDelivery.control_id, YDelivery.id, YDelivery.ack)
                                      .where(YDelivery.sender_key.in_(sorted({k for k, _ in part})),
                                             YDelivery.control_id.in_(sorted({c for _, c in part}))))).all()
        wanted = set(part)
        found.update({(str(k), str(c)): (int(d), str(a)) for k, c, d, a in rows if (str(k), str(c)) in wanted})
    new = _split(items, found)
    ids: dict[Key, int] = {}
    if new:
        digests, digest_of = _payloads(list(new.values()))
        blob_ids = await store_blobs(session, digests)
        rows = (await session.execute(
            insert(YDelivery).returning(YDelivery.id, YDelivery.sender_key, YDelivery.control_id,
                                        sort_by_parameter_order=True),
            [_delivery_row(p) for p in new.values()])).all()
        ids = {(str(k), str(c)): int(i) for i, k, c in rows}
        legs: list[dict[str, Any]] = []
        events: list[dict[str, Any]] = []
        for key, p in new.items():
            legs += _leg_rows(p, ids[key], lambda raw: blob_ids[digest_of[id(raw)]])
            events.append(_accepted_event(p, ids[key], audit))
        if legs:
            await session.execute(insert(YLeg), legs)
        await session.execute(insert(AuditEvent), events)
    return _answers(items, found, new, ids)


_DELIVERY = cast(Table, YDelivery.__table__)
_SQL = {
    "found": "SELECT sender_key, control_id, id, ack FROM y_delivery WHERE sender_key = ? AND control_id = ?",
    "blob": "INSERT INTO blob (sha256, size, data) VALUES (?, ?, ?) ON CONFLICT (sha256) DO NOTHING RETURNING id",
    "blob_id": "SELECT id FROM blob WHERE sha256 = ?",
}


class _Rows:
    """INSERT statements for rows given as dicts (all of one table with the same keys), values passed
    through the columns' bind processors for `dialect`: what SQLAlchemy would send, without it."""

    def __init__(self, dialect: Any) -> None:
        self.dialect = dialect
        self._cache: dict[tuple[str, tuple[str, ...], bool],
                          tuple[str, tuple[str, ...], list[Callable[[Any], Any]]]] = {}

    def statement(self, table: Table, rows: list[dict[str, Any]], *,
                  returning: bool = False) -> tuple[str, list[tuple[Any, ...]]]:
        keys = tuple(rows[0])
        sql_procs = self._cache.get((table.name, keys, returning))
        if sql_procs is None:
            stmt = insert(table).returning(table.c.id) if returning else insert(table)
            compiled = stmt.compile(dialect=self.dialect, column_keys=list(keys))
            order = tuple(compiled.positiontup or ())
            sql_procs = (str(compiled), order, [_bind_processor(table.c[k], self.dialect) for k in order])
            self._cache[(table.name, keys, returning)] = sql_procs
        sql, order, procs = sql_procs
        return sql, [tuple(f(r[k]) for f, k in zip(procs, order, strict=True)) for r in rows]


_rows_by_dialect: dict[int, _Rows] = {}


async def _store_sqlite(session: AsyncSession, items: Sequence[PendingStore], audit: Any) -> list[Answer] | None:
    """store_plans on SQLite in ONE hand-off to the aiosqlite thread, on the session's own connection and
    transaction (as groupcommit.deliver_many_sqlite). None when the driver is not aiosqlite as expected."""
    bind = session.bind
    drv = await _sqlite_driver(session) if bind is not None else None
    if bind is None or drv is None:
        return None
    aio, sync = drv
    rows = _rows_by_dialect.setdefault(id(bind.dialect), _Rows(bind.dialect))
    legs_table, audit_table = cast(Table, YLeg.__table__), cast(Table, AuditEvent.__table__)
    keys = list(dict.fromkeys((p.rule.key, p.plan.control_id) for p in items))
    pdata = _bind_processor(cast(Table, Blob.__table__).c.data, bind.dialect)

    def run() -> list[Answer]:
        if not sync.in_transaction:
            # One transaction, and the write lock from its start: a deferred BEGIN followed by a read would
            # be refused ("database is locked", no busy wait) when it turns into a write after another
            # connection's commit. pysqlite itself only begins before the first write.
            sync.execute("BEGIN IMMEDIATE")
        found: dict[Key, tuple[int, str]] = {}
        for k in keys:  # the unique index, one probe each
            for sk, cid, did, ack in sync.execute(_SQL["found"], k).fetchall():
                found[(str(sk), str(cid))] = (int(did), str(ack))
        new = _split(items, found)
        ids: dict[Key, int] = {}
        if new:
            digests, digest_of = _payloads(list(new.values()))
            blob_ids: dict[str, int] = {}
            for d, raw in digests.items():
                got = sync.execute(_SQL["blob"], (d, len(raw), pdata(raw))).fetchall()
                blob_ids[d] = int((got or sync.execute(_SQL["blob_id"], (d,)).fetchall())[0][0])
            for key, p in new.items():
                sql, values = rows.statement(_DELIVERY, [_delivery_row(p)], returning=True)
                ids[key] = int(sync.execute(sql, values[0]).fetchall()[0][0])
            legs: list[dict[str, Any]] = []
            events: list[dict[str, Any]] = []
            for key, p in new.items():
                legs += _leg_rows(p, ids[key], lambda raw: blob_ids[digest_of[id(raw)]])
                events.append(_accepted_event(p, ids[key], audit))
            for table, batch in ((legs_table, legs), (audit_table, events)):
                if batch:
                    sync.executemany(*rows.statement(table, batch))
        return _answers(items, found, new, ids)

    try:
        return await aio._execute(run)  # type: ignore[no-any-return]  # noqa: SLF001
    except sqlite3.IntegrityError as e:  # the unique (sender_key, control_id): as SQLAlchemy would raise it
        from sqlalchemy.exc import IntegrityError

        raise IntegrityError("store_plans", None, e) from e


# --- the worker's relay queue rows and audit events ------------------------------------------------------

NOTIFY_ALL = "SUCCESS,FAILURE,DELAY"  # RFC 3461 §4.1: every outcome comes back to the lab's APP mailbox


@dataclass(frozen=True)
class QueuedLeg:
    """A leg message the worker hands to the relay: the rows of mssante.store.queue.enqueue."""

    raw: bytes  # the submitted message (Received trace included)
    sender: str  # the lab's APP mailbox (MAIL FROM)
    message_id: str
    envid: str  # RFC 3461 ENVID
    recipients: tuple[str, ...]


def _queue_rows(q: QueuedLeg, blob_id: int, now: dt.datetime) -> dict[str, Any]:
    from mssante.store.queue import message_row

    return message_row(q.raw, q.sender, blob_id=blob_id, now=now, envid=q.envid, ret="HDRS",
                       message_id=q.message_id, actor=q.sender)


def _recipient_rows(q: QueuedLeg, queue_id: int, now: dt.datetime) -> list[dict[str, Any]]:
    from mssante.store.queue import NewRecipient, recipient_rows

    return recipient_rows(queue_id, [NewRecipient(a, f"rfc822;{a}", NOTIFY_ALL) for a in q.recipients], now)


async def write_submission(session: AsyncSession, queued: Sequence[QueuedLeg], events: list[dict[str, Any]], *,
                           now: dt.datetime) -> None:
    """A worker batch's relay queue rows (NOTIFY=SUCCESS,FAILURE,DELAY, ENVID, RET=HDRS) and audit events, in the
    caller's transaction; on SQLite in one hand-off to the driver thread, as `store_plans`."""
    from mssante.store.queue import QueueMessage, QueueRecipient

    digest_of = {id(q.raw): hashlib.sha256(q.raw).hexdigest() for q in queued}  # each hashed once
    bind = session.bind
    drv = await _sqlite_driver(session) if bind is not None and bind.dialect.name == "sqlite" else None
    if drv is None or bind is None:
        blob_ids = await store_blobs(session, {digest_of[id(q.raw)]: q.raw for q in queued})
        if queued:
            qids = [int(r[0]) for r in (await session.execute(
                insert(QueueMessage).returning(QueueMessage.id, sort_by_parameter_order=True),
                [_queue_rows(q, blob_ids[digest_of[id(q.raw)]], now) for q in queued])).all()]
            await session.execute(insert(QueueRecipient), [
                r for qid, q in zip(qids, queued, strict=True) for r in _recipient_rows(q, qid, now)])
        if events:
            await session.execute(insert(AuditEvent), events)
        return
    aio, sync = drv
    rows = _rows_by_dialect.setdefault(id(bind.dialect), _Rows(bind.dialect))
    pdata = _bind_processor(cast(Table, Blob.__table__).c.data, bind.dialect)
    queue_table, rcpt_table = cast(Table, QueueMessage.__table__), cast(Table, QueueRecipient.__table__)

    def run() -> None:
        if not sync.in_transaction:
            sync.execute("BEGIN IMMEDIATE")  # as in _store_sqlite
        blob_ids: dict[str, int] = {}
        for q in queued:
            d = digest_of[id(q.raw)]
            if d not in blob_ids:
                got = sync.execute(_SQL["blob"], (d, len(q.raw), pdata(q.raw))).fetchall()
                blob_ids[d] = int((got or sync.execute(_SQL["blob_id"], (d,)).fetchall())[0][0])
        recipients: list[dict[str, Any]] = []
        for q in queued:
            sql, values = rows.statement(queue_table, [_queue_rows(q, blob_ids[digest_of[id(q.raw)]], now)],
                                         returning=True)
            recipients += _recipient_rows(q, int(sync.execute(sql, values[0]).fetchall()[0][0]), now)
        for table, batch in ((rcpt_table, recipients), (cast(Table, AuditEvent.__table__), events)):
            if batch:
                sync.executemany(*rows.statement(table, batch))

    await aio._execute(run)  # noqa: SLF001
