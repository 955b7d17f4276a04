"""Core gateway tables: mailboxes, folders, blobs, messages and the audit trail.

Other slices add their tables on the same Base in their own modules (queue, Y deliveries,
trust authority); `mssante.store.schema.all_metadata()` gathers them for migrations.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from mssante.store.base import Base

# BigInteger autoincrement on PostgreSQL, INTEGER PRIMARY KEY (rowid) on SQLite.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Mailbox(Base):
    """An MSSanté mailbox hosted by this operator (SPECS.md §2, mailbox types)."""

    __tablename__ = "mailbox"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    address: Mapped[str] = mapped_column(String(320), unique=True)  # stored lower-case
    kind: Mapped[str] = mapped_column(String(3))  # PER | ORG | APP | CAB
    display_name: Mapped[str] = mapped_column(String(200), default="")
    owner_idnps: Mapped[str | None] = mapped_column(String(20), index=True)  # PER/CAB owner
    structure_id: Mapped[str | None] = mapped_column(String(40))  # ORG/APP owner
    password_hash: Mapped[str | None] = mapped_column(String(200))  # application password (argon2)
    cert_sha256: Mapped[str | None] = mapped_column(String(64), index=True)  # SASL EXTERNAL
    cert_subject: Mapped[str | None] = mapped_column(String(500))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    liste_rouge: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    disabled_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class MailboxDelegate(Base):
    """An identity (IDNPS or another mailbox) allowed to send as a mailbox."""

    __tablename__ = "mailbox_delegate"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailbox.id", ondelete="CASCADE"))
    delegate: Mapped[str] = mapped_column(String(320))  # an IDNPS or a mailbox address
    __table_args__ = (UniqueConstraint("mailbox_id", "delegate"),)


class Folder(Base):
    """An IMAP mailbox (folder) with its UID and MODSEQ counters (RFC 3501 §2.3.1, RFC 7162)."""

    __tablename__ = "folder"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailbox.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(500))  # Unicode, '/' as hierarchy delimiter
    special_use: Mapped[str | None] = mapped_column(String(20))  # \Sent, \Drafts, ...
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    uidnext: Mapped[int] = mapped_column(BigInteger, default=1)
    highestmodseq: Mapped[int] = mapped_column(BigInteger, default=1)
    subscribed: Mapped[bool] = mapped_column(Boolean, default=True)
    __table_args__ = (UniqueConstraint("mailbox_id", "name"),)


class Blob(Base):
    """A raw message, content-addressed, stored once however many local recipients it has."""

    __tablename__ = "blob"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    size: Mapped[int] = mapped_column(BigInteger)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Message(Base):
    """One message in one folder. ENVELOPE and BODYSTRUCTURE are computed once at delivery."""

    __tablename__ = "message"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    folder_id: Mapped[int] = mapped_column(ForeignKey("folder.id", ondelete="CASCADE"))
    uid: Mapped[int] = mapped_column(BigInteger)
    blob_id: Mapped[int] = mapped_column(ForeignKey("blob.id"), index=True)
    flags: Mapped[str] = mapped_column(Text, default="")  # space-separated, sorted
    modseq: Mapped[int] = mapped_column(BigInteger)
    internaldate: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    size: Mapped[int] = mapped_column(BigInteger)
    message_id: Mapped[str | None] = mapped_column(String(998), index=True)
    envelope: Mapped[Any | None] = mapped_column(JSON)
    bodystructure: Mapped[Any | None] = mapped_column(JSON)
    __table_args__ = (
        UniqueConstraint("folder_id", "uid"),
        Index("ix_message_folder_modseq", "folder_id", "modseq"),
    )


class Expunged(Base):
    """UIDs expunged from a folder, with the MODSEQ of the expunge (RFC 7162 QRESYNC VANISHED)."""

    __tablename__ = "expunged"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    folder_id: Mapped[int] = mapped_column(ForeignKey("folder.id", ondelete="CASCADE"))
    uid: Mapped[int] = mapped_column(BigInteger)
    modseq: Mapped[int] = mapped_column(BigInteger)
    __table_args__ = (Index("ix_expunged_folder_modseq", "folder_id", "modseq"),)


class AuditEvent(Base):
    """Who did what, when, with which result (SPECS.md §2 traceability). Never content."""

    __tablename__ = "audit_event"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    action: Mapped[str] = mapped_column(String(64), index=True)
    actor: Mapped[str] = mapped_column(String(500), default="")
    outcome: Mapped[str] = mapped_column(String(32), default="ok")
    details: Mapped[Any | None] = mapped_column(JSON)
