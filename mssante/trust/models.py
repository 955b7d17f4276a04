"""Trust authority tables: the liste blanche entries it publishes, join requests, enrolment tokens.

Changes are audited in the gateway's `audit_event` table (mssante.store.models.AuditEvent), actions
prefixed ``trust.``. Secrets (enrolment tokens, poll secrets) are stored as SHA-256 digests only.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, DateTime, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from mssante.store.base import Base

BigId = BigInteger().with_variant(Integer(), "sqlite")


class JoinStatus:
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    SUSPENDED = "suspended"
    REMOVED = "removed"
    ALL = (PENDING, APPROVED, REJECTED, SUSPENDED, REMOVED)


class TrustEnrolmentToken(Base):
    """A one-time token the authority hands to an operator out of band, to authenticate its join request."""

    __tablename__ = "trust_enrolment_token"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    note: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class TrustJoinRequest(Base):
    """An operator asking to join: its domain, MTA host name, organisation and CSR; then the decision."""

    __tablename__ = "trust_join_request"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # random, not guessable
    poll_secret_sha256: Mapped[str] = mapped_column(String(64))
    token_id: Mapped[int] = mapped_column(ForeignKey("trust_enrolment_token.id"))
    domain: Mapped[str] = mapped_column(String(253), index=True)
    fqdn: Mapped[str] = mapped_column(String(253))  # the MTA host name: the certificate's CN
    org: Mapped[str] = mapped_column(String(200))
    structure_id: Mapped[str] = mapped_column(String(40))
    department: Mapped[str] = mapped_column(String(60))
    contact: Mapped[str] = mapped_column(String(300))
    csr_pem: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default=JoinStatus.PENDING, index=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    decided_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    decided_by: Mapped[str | None] = mapped_column(String(200))
    decision_note: Mapped[str | None] = mapped_column(String(500))
    cert_pem: Mapped[str | None] = mapped_column(Text)
    chain_pem: Mapped[str | None] = mapped_column(Text)
    serial: Mapped[str | None] = mapped_column(String(64))  # hex
    subject_dn: Mapped[str | None] = mapped_column(String(500))


class TrustListEntry(Base):
    """One <Domaine> of the published liste blanche: (domain, MTA certificate DN)."""

    __tablename__ = "trust_list_entry"
    __table_args__ = (UniqueConstraint("domain", "dn", name="uq_trust_list_entry_domain_dn"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    domain: Mapped[str] = mapped_column(String(253), index=True)
    dn: Mapped[str] = mapped_column(String(500))
    description: Mapped[str] = mapped_column(String(500), default="")
    responsable_contact: Mapped[str] = mapped_column(String(300), default="")
    support_contact: Mapped[str] = mapped_column(String(300), default="")
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    join_request_id: Mapped[str | None] = mapped_column(ForeignKey("trust_join_request.id"), index=True)
