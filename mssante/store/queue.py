"""The durable relay queue: messages waiting for another operator, one row per recipient.

Rules (issue 5, ARCHITECTURE.md storage model):
- A queued message is committed in the same transaction as its acceptance (250 only after commit).
- `claim()` leases due recipients: on PostgreSQL with `FOR UPDATE SKIP LOCKED`, so several gateway
  processes share one queue without double delivery; on SQLite (one process) the single writer
  serialises claims. The claim itself records the attempt and its next retry time *before* the
  attempt is made (the mox queue rule): a crash during the attempt leaves a retry scheduled.
- Recipients of one message to one domain are claimed and delivered together (one SMTP transaction).

The retry schedule is `config.relay.retry_schedule` (seconds after each failed attempt; the last
value repeats) and `config.relay.max_age_hours` (then a failure DSN). See docs/smtp.md.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from mssante.store.base import Base
from mssante.store.mail import store_blob
from mssante.store.models import BigId, Blob, Message

# Recipient states.
QUEUED = "queued"  # waiting for an attempt (or leased by a worker)
SENT = "sent"  # accepted by the remote operator (row deleted once handled)
FAILED = "failed"  # permanent failure or expired; a failure DSN is due (row deleted once handled)


class QueueError(ValueError):
    pass


class QueueMessage(Base):
    """One message waiting in the relay queue (content in the shared blob table)."""

    __tablename__ = "queue_message"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    blob_id: Mapped[int] = mapped_column(ForeignKey("blob.id"), index=True)
    mail_from: Mapped[str] = mapped_column(String(320), default="")  # "" = null sender (no DSN)
    envid: Mapped[str | None] = mapped_column(String(100))  # RFC 3461 §4.4 ENVID
    ret: Mapped[str | None] = mapped_column(String(4))  # RFC 3461 §4.3 RET=FULL|HDRS
    message_id: Mapped[str | None] = mapped_column(String(998))
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    actor: Mapped[str] = mapped_column(String(500), default="")  # authenticated submitter or peer DN
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class QueueRecipient(Base):
    """One recipient of a queued message: its attempts, next retry and lease."""

    __tablename__ = "queue_recipient"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    queue_message_id: Mapped[int] = mapped_column(ForeignKey("queue_message.id", ondelete="CASCADE"), index=True)
    rcpt: Mapped[str] = mapped_column(String(320))
    domain: Mapped[str] = mapped_column(String(255))
    orcpt: Mapped[str | None] = mapped_column(String(500))  # RFC 3461 §4.2 ORCPT (addr-type;xtext-decoded)
    notify: Mapped[str | None] = mapped_column(String(40))  # RFC 3461 §4.1: NEVER or SUCCESS,FAILURE,DELAY
    status: Mapped[str] = mapped_column(String(10), default=QUEUED)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)
    last_attempt_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    lease_owner: Mapped[str | None] = mapped_column(String(100))
    lease_until: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    delay_notified: Mapped[bool] = mapped_column(Boolean, default=False)
    __table_args__ = (Index("ix_queue_recipient_due", "status", "next_attempt_at"),)


@dataclass(frozen=True)
class NewRecipient:
    rcpt: str
    orcpt: str | None = None
    notify: str | None = None


@dataclass(frozen=True)
class ClaimedRecipient:
    id: int
    rcpt: str
    orcpt: str | None
    notify: str | None
    attempts: int  # including the attempt being made
    delay_notified: bool


@dataclass(frozen=True)
class Claim:
    """Recipients of one message for one domain, leased to one worker for one SMTP transaction."""

    queue_message_id: int
    domain: str
    mail_from: str
    envid: str | None
    ret: str | None
    message_id: str | None
    blob_id: int
    created_at: dt.datetime
    recipients: tuple[ClaimedRecipient, ...]
    size: int = 0


def next_delay(schedule: Sequence[int], attempts: int) -> dt.timedelta:
    """Delay after the `attempts`-th attempt (1-based); the last schedule value repeats."""
    if not schedule:
        return dt.timedelta(seconds=60)
    i = min(max(attempts, 1), len(schedule)) - 1
    return dt.timedelta(seconds=schedule[i])


def domain_of(address: str) -> str:
    if "@" not in address:
        raise QueueError(f"invalid recipient {address!r}: expected local@domain")
    return address.rsplit("@", 1)[1].lower()


def _aware(t: dt.datetime) -> dt.datetime:
    # SQLite returns naive datetimes for DateTime(timezone=True): they were written in UTC.
    return t if t.tzinfo is not None else t.replace(tzinfo=dt.timezone.utc)


def message_row(raw: bytes, mail_from: str, *, blob_id: int, now: dt.datetime, envid: str | None = None,
                ret: str | None = None, message_id: str | None = None, actor: str = "") -> dict[str, Any]:
    """The `queue_message` row of a message (`enqueue`, and batched writers such as mssante.y.storage)."""
    return {"blob_id": blob_id, "mail_from": mail_from, "envid": envid, "ret": ret, "message_id": message_id,
            "size": len(raw), "actor": actor[:500], "created_at": now}


def recipient_rows(queue_message_id: int, recipients: Sequence[NewRecipient], now: dt.datetime) -> list[dict[str, Any]]:
    """The `queue_recipient` rows of a queued message's recipients, all due now."""
    return [{"queue_message_id": queue_message_id, "rcpt": r.rcpt, "domain": domain_of(r.rcpt), "orcpt": r.orcpt,
             "notify": r.notify, "status": QUEUED, "attempts": 0, "next_attempt_at": now, "delay_notified": False}
            for r in recipients]


async def enqueue(
    session: AsyncSession,
    raw: bytes,
    mail_from: str,
    recipients: Sequence[NewRecipient],
    *,
    now: dt.datetime,
    envid: str | None = None,
    ret: str | None = None,
    message_id: str | None = None,
    actor: str = "",
    blob_id: int | None = None,
) -> int:
    """Add a message for `recipients` (due now). The caller commits. Returns the queue message id."""
    if not recipients:
        raise QueueError("a queued message needs at least one recipient")
    if blob_id is None:
        blob_id = await store_blob(session, raw)
    qm = QueueMessage(**message_row(raw, mail_from, blob_id=blob_id, now=now, envid=envid, ret=ret,
                                    message_id=message_id, actor=actor))
    session.add(qm)
    await session.flush()
    session.add_all(QueueRecipient(**row) for row in recipient_rows(int(qm.id), recipients, now))
    await session.flush()
    return int(qm.id)


async def claim(
    session: AsyncSession,
    owner: str,
    *,
    now: dt.datetime,
    schedule: Sequence[int],
    lease_seconds: float = 300.0,
    limit: int = 50,
    exclude_domains: Sequence[str] = (),
) -> list[Claim]:
    """Lease due recipients, grouped by (message, domain). The caller commits before trying.

    Each leased row gets attempts+1 and next_attempt_at = now + schedule[attempts] here, before the
    attempt: a crash mid-attempt is retried at that time (the lease expires earlier or at the same time).
    """
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    q = (
        select(QueueRecipient)
        .where(QueueRecipient.status == QUEUED, QueueRecipient.next_attempt_at <= now)
        .where((QueueRecipient.lease_until.is_(None)) | (QueueRecipient.lease_until < now))
        .order_by(QueueRecipient.next_attempt_at, QueueRecipient.id)
        .limit(limit)
    )
    if exclude_domains:
        q = q.where(QueueRecipient.domain.not_in(list(exclude_domains)))
    if dialect == "postgresql":
        q = q.with_for_update(skip_locked=True)
    rows = list((await session.scalars(q)).all())
    if not rows:
        return []
    lease_until = now + dt.timedelta(seconds=lease_seconds)
    groups: dict[tuple[int, str], list[ClaimedRecipient]] = {}
    by_attempts: dict[int, list[int]] = {}
    for r in rows:
        attempts = r.attempts + 1
        by_attempts.setdefault(attempts, []).append(r.id)
        groups.setdefault((r.queue_message_id, r.domain), []).append(
            ClaimedRecipient(r.id, r.rcpt, r.orcpt, r.notify, attempts, r.delay_notified)
        )
    # One UPDATE per distinct attempt count (usually one), not one per row.
    for attempts, ids in by_attempts.items():
        retry_at = now + next_delay(schedule, attempts)
        await session.execute(
            update(QueueRecipient).where(QueueRecipient.id.in_(ids))
            .values(attempts=attempts, last_attempt_at=now, next_attempt_at=retry_at, lease_owner=owner,
                    lease_until=min(lease_until, retry_at))
            .execution_options(synchronize_session=False)
        )
    msgs = {
        m.id: m
        for m in (await session.scalars(select(QueueMessage).where(QueueMessage.id.in_({k[0] for k in groups})))).all()
    }
    out = []
    for (qid, domain), rcpts in groups.items():
        m = msgs[qid]
        out.append(
            Claim(qid, domain, m.mail_from, m.envid, m.ret, m.message_id, m.blob_id, _aware(m.created_at), tuple(rcpts),
                  int(m.size))
        )
    return out


async def load_blobs(session: AsyncSession, blob_ids: Sequence[int]) -> dict[int, bytes]:
    rows = (await session.execute(select(Blob.id, Blob.data).where(Blob.id.in_(list(set(blob_ids)))))).all()
    return {int(i): bytes(d) for i, d in rows}


async def load_blob(session: AsyncSession, blob_id: int) -> bytes:
    data = await session.scalar(select(Blob.data).where(Blob.id == blob_id))
    if data is None:
        raise QueueError(f"blob {blob_id} is missing")
    return bytes(data)


async def mark_sent(session: AsyncSession, recipient_ids: Sequence[int],
                    queue_message_ids: Sequence[int] | None = None) -> None:
    """The remote operator accepted these recipients: remove them (the audit trail keeps the outcome)."""
    await _delete_recipients(session, recipient_ids, queue_message_ids)


async def mark_deferred(session: AsyncSession, recipient_ids: Sequence[int], error: str, *, delay_notified: bool | None = None) -> None:
    """A temporary failure: release the lease; the retry time was recorded at claim."""
    values: dict[str, Any] = {"last_error": error[:1000], "lease_owner": None, "lease_until": None}
    if delay_notified is not None:
        values["delay_notified"] = delay_notified
    await session.execute(update(QueueRecipient).where(QueueRecipient.id.in_(list(recipient_ids))).values(**values))


async def mark_failed(session: AsyncSession, recipient_ids: Sequence[int],
                      queue_message_ids: Sequence[int] | None = None) -> None:
    """A permanent failure whose DSN was produced in this same transaction: remove the recipients."""
    await _delete_recipients(session, recipient_ids, queue_message_ids)


async def _delete_recipients(session: AsyncSession, recipient_ids: Sequence[int],
                             queue_message_ids: Sequence[int] | None = None) -> None:
    if not recipient_ids:
        return
    if queue_message_ids is None:
        queue_message_ids = list(set((await session.scalars(
            select(QueueRecipient.queue_message_id).where(QueueRecipient.id.in_(list(recipient_ids))))).all()))
    blob_ids = list((await session.scalars(
        select(QueueMessage.blob_id).where(QueueMessage.id.in_(list(queue_message_ids))))).all())
    await session.execute(delete(QueueRecipient).where(QueueRecipient.id.in_(list(recipient_ids)))
                          .execution_options(synchronize_session=False))
    # Messages left without recipients are done.
    left = select(QueueRecipient.id).where(QueueRecipient.queue_message_id == QueueMessage.id).exists()
    await session.execute(delete(QueueMessage).where(QueueMessage.id.in_(list(queue_message_ids)), ~left)
                          .execution_options(synchronize_session=False))
    # Their content goes too unless a mailbox message or another queued message still uses it.
    if blob_ids:
        in_mailbox = select(Message.id).where(Message.blob_id == Blob.id).exists()
        in_queue = select(QueueMessage.id).where(QueueMessage.blob_id == Blob.id).exists()
        await session.execute(delete(Blob).where(Blob.id.in_(blob_ids), ~in_mailbox, ~in_queue)
                              .execution_options(synchronize_session=False))


# --- Administration (the `mssante queue` CLI) --------------------------------------------------------


@dataclass(frozen=True)
class QueueRow:
    recipient_id: int
    queue_message_id: int
    mail_from: str
    rcpt: str
    status: str
    attempts: int
    next_attempt_at: dt.datetime
    created_at: dt.datetime
    last_error: str | None
    message_id: str | None
    size: int


async def list_queue(session: AsyncSession, *, limit: int = 1000) -> list[QueueRow]:
    rows = (
        await session.execute(
            select(QueueRecipient, QueueMessage)
            .join(QueueMessage, QueueMessage.id == QueueRecipient.queue_message_id)
            .order_by(QueueRecipient.next_attempt_at, QueueRecipient.id)
            .limit(limit)
        )
    ).all()
    return [
        QueueRow(r.id, m.id, m.mail_from, r.rcpt, r.status, r.attempts, _aware(r.next_attempt_at), _aware(m.created_at),
                 r.last_error, m.message_id, m.size)
        for r, m in rows
    ]


async def get_message(session: AsyncSession, queue_message_id: int) -> tuple[QueueMessage, list[QueueRecipient]] | None:
    m = await session.get(QueueMessage, queue_message_id)
    if m is None:
        return None
    rcpts = list(
        (await session.scalars(select(QueueRecipient).where(QueueRecipient.queue_message_id == queue_message_id))).all()
    )
    return m, rcpts


async def retry_now(session: AsyncSession, now: dt.datetime, queue_message_id: int | None = None) -> int:
    """Make waiting recipients due now (one message, or all). Returns how many."""
    stmt = update(QueueRecipient).where(QueueRecipient.status == QUEUED).values(next_attempt_at=now, lease_until=None,
                                                                                 lease_owner=None)
    if queue_message_id is not None:
        stmt = stmt.where(QueueRecipient.queue_message_id == queue_message_id)
    res = await session.execute(stmt)
    return int(res.rowcount or 0)  # type: ignore[attr-defined]


async def drop(session: AsyncSession, queue_message_id: int) -> int:
    """Remove a queued message and its recipients (no DSN). Returns the number of recipients dropped."""
    n = await session.scalar(
        select(func.count()).select_from(QueueRecipient).where(QueueRecipient.queue_message_id == queue_message_id)
    )
    ids = list((await session.scalars(
        select(QueueRecipient.id).where(QueueRecipient.queue_message_id == queue_message_id))).all())
    if not ids:
        raise QueueError(f"no queued message {queue_message_id}")
    await _delete_recipients(session, ids, [queue_message_id])
    return int(n or 0)


async def depth(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(QueueRecipient)) or 0)


async def release_unattempted(session: AsyncSession, recipient_ids: Sequence[int], now: dt.datetime) -> None:
    """Give back leased recipients that were not tried (e.g. the connection dropped first): due now again."""
    if not recipient_ids:
        return
    await session.execute(
        update(QueueRecipient)
        .where(QueueRecipient.id.in_(list(recipient_ids)))
        .values(attempts=QueueRecipient.attempts - 1, next_attempt_at=now, lease_owner=None, lease_until=None)
    )
