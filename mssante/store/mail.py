"""Mailbox provisioning and local delivery: the writes the MTA, submission and IMAP share.

Delivery allocates a UID and a MODSEQ in the target folder with one UPDATE ... RETURNING,
so concurrent deliveries to one folder serialise on that row and never reuse a UID
(RFC 3501 §2.3.1.1: UIDs strictly ascending; RFC 7162 §3.1: MODSEQ per change).
The caller owns the transaction: nothing is acknowledged before it commits.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from mssante.store.models import Blob, Folder, Mailbox, Message

MAILBOX_KINDS = ("PER", "ORG", "APP", "CAB")

# RFC 6154 special-use folders created for each mailbox (issue 6), plus INBOX.
DEFAULT_FOLDERS: tuple[tuple[str, str | None], ...] = (
    ("INBOX", None),
    ("Sent", "\\Sent"),
    ("Drafts", "\\Drafts"),
    ("Trash", "\\Trash"),
    ("Archive", "\\Archive"),
    ("Junk", "\\Junk"),
)

NOTIFY_CHANNEL = "mssante_folder"


class MailboxError(ValueError):
    pass


@dataclass(frozen=True)
class Delivered:
    mailbox_id: int
    folder_id: int
    uid: int
    modseq: int


def normalise_address(address: str) -> str:
    addr = address.strip()
    if addr.count("@") != 1:
        raise MailboxError(f"invalid address {address!r}: expected local@domain")
    local, domain = addr.rsplit("@", 1)
    if not local or not domain or any(c.isspace() for c in addr) or len(addr) > 320:
        raise MailboxError(f"invalid address {address!r}: expected local@domain")
    return f"{local}@{domain.lower()}".lower()


def new_uidvalidity() -> int:
    # Seconds since the epoch fit in 32 bits until 2106 (RFC 3501 nz-number < 2^32).
    return int(time.time()) & 0xFFFFFFFF or 1


async def create_mailbox(
    session: AsyncSession,
    address: str,
    kind: str,
    *,
    display_name: str = "",
    owner_idnps: str | None = None,
    structure_id: str | None = None,
    password_hash: str | None = None,
    cert_sha256: str | None = None,
    cert_subject: str | None = None,
) -> Mailbox:
    if kind not in MAILBOX_KINDS:
        raise MailboxError(f"invalid mailbox type {kind!r}: expected one of {', '.join(MAILBOX_KINDS)}")
    addr = normalise_address(address)
    exists = await session.scalar(select(Mailbox.id).where(Mailbox.address == addr))
    if exists is not None:
        raise MailboxError(f"mailbox {addr} already exists")
    box = Mailbox(
        address=addr,
        kind=kind,
        display_name=display_name,
        owner_idnps=owner_idnps,
        structure_id=structure_id,
        password_hash=password_hash,
        cert_sha256=cert_sha256,
        cert_subject=cert_subject,
        enabled=True,
    )
    session.add(box)
    await session.flush()
    validity = new_uidvalidity()
    for i, (name, special) in enumerate(DEFAULT_FOLDERS):
        session.add(
            Folder(mailbox_id=box.id, name=name, special_use=special, uidvalidity=validity + i, uidnext=1,
                   highestmodseq=1, subscribed=True)
        )
    await session.flush()
    return box


async def mailbox_by_address(session: AsyncSession, address: str) -> Mailbox | None:
    try:
        addr = normalise_address(address)
    except MailboxError:
        return None
    return await session.scalar(select(Mailbox).where(Mailbox.address == addr))


async def store_blob(session: AsyncSession, raw: bytes) -> int:
    """Insert the raw message once (content-addressed) and return its id."""
    digest = hashlib.sha256(raw).hexdigest()
    found = await session.scalar(select(Blob.id).where(Blob.sha256 == digest))
    if found is not None:
        return int(found)
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    values = {"sha256": digest, "size": len(raw), "data": raw}
    stmt: Any
    if dialect == "postgresql":
        stmt = postgresql.insert(Blob).values(**values).on_conflict_do_nothing(index_elements=["sha256"])
    else:
        stmt = sqlite.insert(Blob).values(**values).on_conflict_do_nothing(index_elements=["sha256"])
    await session.execute(stmt)
    blob_id = await session.scalar(select(Blob.id).where(Blob.sha256 == digest))
    assert blob_id is not None
    return int(blob_id)


async def allocate_uid(session: AsyncSession, folder_id: int) -> tuple[int, int]:
    """Reserve the next UID and MODSEQ of a folder (row-locked until commit)."""
    row = (
        await session.execute(
            update(Folder)
            .where(Folder.id == folder_id)
            .values(uidnext=Folder.uidnext + 1, highestmodseq=Folder.highestmodseq + 1)
            .returning(Folder.uidnext, Folder.highestmodseq)
        )
    ).one()
    return int(row[0]) - 1, int(row[1])


async def deliver(
    session: AsyncSession,
    raw: bytes,
    mailbox_ids: Sequence[int],
    *,
    internaldate: dt.datetime,
    folder: str = "INBOX",
    flags: str = "",
    message_id: str | None = None,
    envelope: Any | None = None,
    bodystructure: Any | None = None,
) -> list[Delivered]:
    """Store one message for each mailbox, in the named folder. The caller commits."""
    blob_id = await store_blob(session, raw)
    folders = (
        await session.execute(
            select(Folder.mailbox_id, Folder.id).where(Folder.mailbox_id.in_(list(mailbox_ids)), Folder.name == folder)
        )
    ).all()
    by_box = {int(m): int(f) for m, f in folders}
    out: list[Delivered] = []
    for box_id in mailbox_ids:
        folder_id = by_box.get(box_id)
        if folder_id is None:
            raise MailboxError(f"mailbox {box_id} has no folder {folder!r}")
        uid, modseq = await allocate_uid(session, folder_id)
        session.add(
            Message(
                folder_id=folder_id,
                uid=uid,
                blob_id=blob_id,
                flags=flags,
                modseq=modseq,
                internaldate=internaldate,
                size=len(raw),
                message_id=message_id,
                envelope=envelope,
                bodystructure=bodystructure,
            )
        )
        out.append(Delivered(box_id, folder_id, uid, modseq))
    await session.flush()
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        # Delivered to listeners at COMMIT only (PostgreSQL NOTIFY semantics): IMAP IDLE on
        # other gateway processes wakes up once the message is durable (issue 6).
        for folder_id in sorted({d.folder_id for d in out}):
            await session.execute(text("SELECT pg_notify(:ch, :payload)"), {"ch": NOTIFY_CHANNEL, "payload": str(folder_id)})
    return out


async def count_messages(session: AsyncSession, folder_id: int) -> int:
    return int(await session.scalar(select(func.count()).select_from(Message).where(Message.folder_id == folder_id)) or 0)
