"""Y delivery tables: one `y_delivery` per accepted HL7 request, one `y_leg` per destination.

- `y_delivery` is written, with all its legs, in ONE transaction before the ACK AA is sent
  (issue 7: "AA only after the request is durably stored as a Y delivery"). The unique key
  (sender_key, control_id) is the duplicate guard: a message control id seen again from the same
  sending system is re-acknowledged with the stored ACK and creates nothing (HL7 v2.5 §2.10.1,
  MSH-10 uniqueness per sending system).
- `y_leg`: one row per DMP submission and per (MSSanté message, recipient). Its durable schedule
  (attempts, next_attempt_at, lease_until) is written *before* each attempt (the mox queue rule),
  so a crash mid-attempt is retried later and never forgotten.
- `y_ack_outbox`: business acknowledgements (ZAM) due to the lab, created in the transaction of
  the leg transition that causes them; unique per (leg, event, outcome) so a replayed transition
  never queues a second acknowledgement.
- `y_mail_cursor`: how far the DSN/MDN matcher has read each lab APP mailbox's INBOX (UID).

Content (HL7, CDA, mail) lives in the shared content-addressed `blob` table; these rows hold
identifiers only (never logged: see mssante/observability/audit.py).
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
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from mssante.store.base import Base
from mssante.store.models import BigId

# Leg kinds.
LEG_DMP = "dmp"
LEG_MSS = "mss"


class YDelivery(Base):
    """One HL7 request accepted (ACK AA) by the intake, with what its acknowledgements need."""

    __tablename__ = "y_delivery"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    sender_key: Mapped[str] = mapped_column(String(200))  # "MSH-3|MSH-4", e.g. "SIL-Y|labo"
    control_id: Mapped[str] = mapped_column(String(200))  # MSH-10
    message_type: Mapped[str] = mapped_column(String(20))  # ORU^R01, MDM^T02...
    action: Mapped[str] = mapped_column(String(10))  # submit | replace | delete
    patient_ins: Mapped[str | None] = mapped_column(String(20), index=True)
    sender_mailbox: Mapped[str] = mapped_column(String(320), default="")  # the lab's APP mailbox
    source: Mapped[str] = mapped_column(String(10), default="mllp")  # mllp | mail (native email entry)
    actor: Mapped[str] = mapped_column(String(500), default="")  # certificate DN or peer address
    ack_reception: Mapped[bool] = mapped_column(Boolean, default=False)  # ACK_RECEPTION=Y
    ack_lecture: Mapped[bool] = mapped_column(Boolean, default=False)  # ACK_LECTURE_MSS=Y
    ack_endpoint: Mapped[str] = mapped_column(String(300), default="")  # host:port for ZAM
    ack_context: Mapped[Any | None] = mapped_column(JSON)  # original MSH fields (mssante.y.ack.AckContext)
    ack: Mapped[str] = mapped_column(Text, default="")  # the ACK AA sent (replayed for duplicates)
    warnings: Mapped[Any | None] = mapped_column(JSON)  # ERR W texts sent with the AA
    received_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    __table_args__ = (UniqueConstraint("sender_key", "control_id", name="uq_y_delivery_sender_control"),)


class YLeg(Base):
    """One destination of a Y delivery and its tracked state (mssante/y/tracking.py)."""

    __tablename__ = "y_leg"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("y_delivery.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(8))  # dmp | mss
    group: Mapped[str] = mapped_column(String(10), default="")  # mss: ps | patient
    recipient: Mapped[str] = mapped_column(String(320), default="")  # mss: address; dmp: patient INS
    recipient_id: Mapped[str] = mapped_column(String(64), default="")  # IDNPS / INS, for ZAM OBX-4
    message_id: Mapped[str | None] = mapped_column(String(998), index=True)  # mss leg message's Message-ID
    blob_id: Mapped[int | None] = mapped_column(ForeignKey("blob.id"))  # mss: the MIME message; dmp: the request
    state: Mapped[str] = mapped_column(String(16))
    state_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    lease_until: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)  # a code and a label, never content
    detail: Mapped[Any | None] = mapped_column(JSON)  # dmp document id, DSN status, MDN disposition...
    # The worker's look-ups are by kind and state (due MSSanté legs, due DMP legs, queued legs): with
    # `kind` first, thousands of legs of the other kind waiting in the same state are not read each round.
    __table_args__ = (Index("ix_y_leg_kind_due", "kind", "state", "next_attempt_at"),)


class YStateChange(Base):
    """The history of each leg: every applied transition, in order (for `y status`)."""

    __tablename__ = "y_state_change"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    leg_id: Mapped[int] = mapped_column(ForeignKey("y_leg.id", ondelete="CASCADE"), index=True)
    from_state: Mapped[str] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    reason: Mapped[str] = mapped_column(String(500), default="")


class YAckOutbox(Base):
    """A business acknowledgement (ZAM^Z01/Z02/Z03) due to the lab over MLLP."""

    __tablename__ = "y_ack_outbox"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("y_delivery.id", ondelete="CASCADE"), index=True)
    leg_id: Mapped[int] = mapped_column(ForeignKey("y_leg.id", ondelete="CASCADE"))
    event: Mapped[str] = mapped_column(String(4))  # Z01 | Z02 | Z03
    success: Mapped[bool] = mapped_column(Boolean)
    error_code: Mapped[str] = mapped_column(String(40), default="")
    error_label: Mapped[str] = mapped_column(String(300), default="")
    endpoint: Mapped[str] = mapped_column(String(300))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    sent_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    ack_code: Mapped[str] = mapped_column(String(4), default="")  # the lab's MSA-1 answer
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    __table_args__ = (
        UniqueConstraint("leg_id", "event", "success", name="uq_y_ack_outbox_leg_event"),
        Index("ix_y_ack_outbox_due", "sent_at", "next_attempt_at"),
    )


class YMailCursor(Base):
    """Last INBOX UID of a lab APP mailbox already examined for DSNs and MDNs."""

    __tablename__ = "y_mail_cursor"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    folder_id: Mapped[int] = mapped_column(ForeignKey("folder.id", ondelete="CASCADE"), unique=True)
    last_uid: Mapped[int] = mapped_column(BigInteger, default=0)
