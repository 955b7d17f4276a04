"""The audit trail: who did what, when, on what, with which result (SPECS.md §2, Ségur traceability).

Callers pass identifiers (addresses, message-ids, sizes, DNs, INS, document ids), never
content: `record()` refuses keys that name content or secrets, so a careless call fails in
tests instead of leaking in production.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any, NamedTuple

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mssante.store.models import AuditEvent

log = logging.getLogger("mssante.audit")

FORBIDDEN_KEYS = frozenset({"body", "content", "data", "password", "secret", "token", "key", "raw", "document", "cda"})


class AuditFieldError(ValueError):
    pass


def _check_fields(fields: dict[str, Any]) -> dict[str, Any]:
    for k in fields:
        if k.lower() in FORBIDDEN_KEYS:
            raise AuditFieldError(f"audit field {k!r} would record content or a secret")
    return {k: (v if isinstance(v, (str, int, float, bool, type(None), list, dict)) else str(v)) for k, v in fields.items()}


class AuditRow(NamedTuple):
    """An audit event as plain values, for writers that insert rows themselves (the IMAP stores):
    building an ORM AuditEvent costs several times more, and IMAP records one per body fetch."""

    at: dt.datetime
    action: str
    actor: str
    outcome: str
    details: dict[str, Any]


def as_orm(ev: AuditEvent | AuditRow) -> AuditEvent:
    """The ORM object for an event, for writers that add it to a SQLAlchemy session."""
    return ev if isinstance(ev, AuditEvent) else AuditEvent(**ev._asdict())


class Audit:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], now: Callable[[], dt.datetime]) -> None:
        self._sessions = sessions
        self._now = now

    def event(self, action: str, actor: str = "", outcome: str = "ok", **fields: Any) -> AuditEvent:
        """An event to add to the caller's own transaction (committed with the data it describes)."""
        return AuditEvent(at=self._now(), action=action, actor=actor, outcome=outcome, details=_check_fields(fields))

    def row(self, action: str, actor: str = "", outcome: str = "ok", **fields: Any) -> AuditRow:
        """The same event as plain values (AuditRow), with the same checks."""
        return AuditRow(self._now(), action, actor, outcome, _check_fields(fields))

    async def record(self, action: str, actor: str = "", outcome: str = "ok", **fields: Any) -> None:
        """Record an event in its own transaction (for actions with no data write, e.g. a failed login)."""
        ev = self.event(action, actor, outcome, **fields)
        async with self._sessions() as s, s.begin():
            s.add(ev)
        log.info("audit %s actor=%s outcome=%s", action, actor, outcome)

    async def purge(self, retention_days: int) -> int:
        """Delete events older than the retention period; returns how many were removed."""
        cutoff = self._now() - dt.timedelta(days=retention_days)
        async with self._sessions() as s, s.begin():
            res = await s.execute(delete(AuditEvent).where(AuditEvent.at < cutoff))
        return int(res.rowcount or 0)  # type: ignore[attr-defined]
