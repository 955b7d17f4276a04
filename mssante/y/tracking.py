"""The state machine of Y delivery legs, as data (h11 `_state.py` style), and its durable application.

Leg states (issue 7, "The Y delivery object"):

    MSSanté leg:  accepted -> queued -> sent -> delivered -> read | read-error
                          \\-> delivered (local recipient)    \\-> failed (DSN failure)
    DMP leg:      accepted -> dmp-accepted | dmp-rejected

`TRANSITIONS` lists every allowed (kind, from, to). Applying a transition is idempotent:
- to the state the leg already has, or to a state it has already passed (a late "sent" after
  "delivered", a replayed DSN): nothing changes (`UNCHANGED`), no second acknowledgement;
- to a state not reachable from the current one (e.g. `failed` -> `read`): `REFUSED`, nothing changes.

The database write is a conditional UPDATE ... WHERE state IN (allowed sources), so two workers
racing on the same leg apply it once. The ZAM acknowledgement a transition causes is queued in the
same transaction (y_ack_outbox, unique per leg/event/outcome): a crash never loses it nor doubles it.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from mssante.y.models import LEG_DMP, LEG_MSS, YAckOutbox, YDelivery, YLeg, YStateChange

ACCEPTED = "accepted"
QUEUED = "queued"
SENT = "sent"
DELIVERED = "delivered"
FAILED = "failed"
READ = "read"
READ_ERROR = "read-error"
DMP_ACCEPTED = "dmp-accepted"
DMP_REJECTED = "dmp-rejected"

MSS_STATES = (ACCEPTED, QUEUED, SENT, DELIVERED, FAILED, READ, READ_ERROR)
DMP_STATES = (ACCEPTED, DMP_ACCEPTED, DMP_REJECTED)

# (kind, from) -> states reachable in one step. Anything else is refused or already passed.
TRANSITIONS: dict[tuple[str, str], frozenset[str]] = {
    (LEG_MSS, ACCEPTED): frozenset({QUEUED, SENT, DELIVERED, FAILED, READ, READ_ERROR}),
    (LEG_MSS, QUEUED): frozenset({SENT, DELIVERED, FAILED, READ, READ_ERROR}),
    (LEG_MSS, SENT): frozenset({DELIVERED, FAILED, READ, READ_ERROR}),
    # A DSN "failed" after "delivered" is possible (delivered to a relay, then bounced): kept.
    (LEG_MSS, DELIVERED): frozenset({READ, READ_ERROR, FAILED}),
    (LEG_MSS, FAILED): frozenset(),
    (LEG_MSS, READ): frozenset(),
    (LEG_MSS, READ_ERROR): frozenset(),
    (LEG_DMP, ACCEPTED): frozenset({DMP_ACCEPTED, DMP_REJECTED}),
    (LEG_DMP, DMP_ACCEPTED): frozenset(),
    (LEG_DMP, DMP_REJECTED): frozenset(),
}

# Progress order, used to tell "already passed" (UNCHANGED) from "not allowed" (REFUSED).
_RANK = {ACCEPTED: 0, QUEUED: 1, SENT: 2, DELIVERED: 3, FAILED: 3, READ: 4, READ_ERROR: 4, DMP_ACCEPTED: 1,
         DMP_REJECTED: 1}

TERMINAL = frozenset({FAILED, READ, READ_ERROR, DMP_ACCEPTED, DMP_REJECTED})

# Business acknowledgements caused by a transition (ANS guide ack-metier-zam.md):
# event, success, and which delivery flag asks for it.
ZAM_FOR_STATE: dict[str, tuple[str, bool, str]] = {
    DMP_ACCEPTED: ("Z01", True, "ack_reception"),
    DMP_REJECTED: ("Z01", False, "ack_reception"),
    SENT: ("Z02", True, "ack_reception"),
    DELIVERED: ("Z02", True, "ack_reception"),
    FAILED: ("Z02", False, "ack_reception"),
    READ: ("Z03", True, "ack_lecture"),
    READ_ERROR: ("Z03", False, "ack_lecture"),
}


class Outcome(enum.Enum):
    APPLIED = "applied"
    UNCHANGED = "unchanged"  # already in that state or past it
    REFUSED = "refused"  # not reachable from the current state


def decide(kind: str, current: str, target: str) -> Outcome:
    """Pure: what applying `target` to a leg in `current` does."""
    allowed = TRANSITIONS.get((kind, current))
    if allowed is None:
        raise ValueError(f"unknown leg state {kind}/{current}")
    if (kind, target) not in TRANSITIONS:
        raise ValueError(f"unknown leg state {kind}/{target}")
    if target in allowed:
        return Outcome.APPLIED
    if _RANK[target] <= _RANK[current]:
        return Outcome.UNCHANGED  # already there, or a late event about a step already passed
    return Outcome.REFUSED


def sources_for(kind: str, target: str) -> list[str]:
    return [frm for (k, frm), tos in TRANSITIONS.items() if k == kind and target in tos]


@dataclass(frozen=True)
class ZamError:
    code: str
    label: str


async def transition(
    session: AsyncSession,
    leg_id: int,
    target: str,
    *,
    now: dt.datetime,
    reason: str = "",
    detail: dict[str, Any] | None = None,
    error: ZamError | None = None,
) -> Outcome:
    """Apply `target` to leg `leg_id` in the caller's transaction (the caller commits)."""
    row = (await session.execute(
        select(YLeg.kind, YLeg.state, YLeg.delivery_id, YLeg.detail).where(YLeg.id == leg_id)
    )).first()
    if row is None:
        raise LookupError(f"no Y leg {leg_id}")
    kind, previous, delivery_id, old_detail = row
    outcome = decide(kind, previous, target)
    if outcome is not Outcome.APPLIED:
        return outcome
    values = _leg_values(target, now, _error_text(error))
    if detail:
        merged = dict(old_detail or {})
        merged.update(detail)
        values["detail"] = merged
    res = await session.execute(
        update(YLeg).where(YLeg.id == leg_id, YLeg.state.in_(sources_for(kind, target)))
        .values(**values).execution_options(synchronize_session=False)
    )
    if not res.rowcount:  # type: ignore[attr-defined]
        return Outcome.UNCHANGED  # another worker moved it first
    session.add(YStateChange(leg_id=leg_id, from_state=previous, to_state=target, at=now, reason=reason[:500]))
    await _queue_zams(session, [Change(leg_id, kind, previous, int(delivery_id), target, reason, error)], now)
    return Outcome.APPLIED


def _error_text(error: ZamError | None) -> str | None:
    return f"{error.code} {error.label}"[:1000] if error is not None else None


def _leg_values(target: str, now: dt.datetime, error_text: str | None) -> dict[str, Any]:
    """The YLeg columns a transition to `target` writes."""
    values: dict[str, Any] = {"state": target, "state_at": now, "lease_until": None}
    if target in TERMINAL or target in (DELIVERED, SENT, QUEUED):
        values["next_attempt_at"] = None
    if error_text is not None:
        values["last_error"] = error_text
    return values


@dataclass(frozen=True)
class Change:
    """One transition for `apply_many`: the leg as read in the caller's transaction and its target."""

    leg_id: int
    kind: str
    current: str
    delivery_id: int
    target: str
    reason: str = ""
    error: ZamError | None = None


async def apply_many(session: AsyncSession, changes: list[Change], *, now: dt.datetime) -> list[int]:
    """`transition` for many legs with a fixed number of statements (the worker's batches): one
    conditional UPDATE … RETURNING per (kind, target, error), the history rows, the ZAMs. Same rules:
    only APPLIED outcomes write, the UPDATE is guarded by the allowed source states (a racing worker
    applies it once). Returns the ids of the legs changed. The caller commits."""
    todo = [c for c in changes if decide(c.kind, c.current, c.target) is Outcome.APPLIED]
    groups: dict[tuple[str, str, str | None], list[Change]] = {}
    for c in todo:
        groups.setdefault((c.kind, c.target, _error_text(c.error)), []).append(c)
    applied: set[int] = set()
    for (kind, target, err), group in groups.items():
        values = _leg_values(target, now, err)
        ids = [c.leg_id for c in group]
        for i in range(0, len(ids), 500):
            # `state || ''`: the guard must not become the access path (SQLite would walk ix_y_leg_kind_due).
            rows = await session.execute(
                update(YLeg).where(YLeg.id.in_(ids[i:i + 500]), (YLeg.state + "").in_(sources_for(kind, target)))
                .values(**values).returning(YLeg.id).execution_options(synchronize_session=False))
            applied.update(int(r[0]) for r in rows)
    done = [c for c in todo if c.leg_id in applied]
    if not done:
        return []
    await session.execute(insert(YStateChange), [
        {"leg_id": c.leg_id, "from_state": c.current, "to_state": c.target, "at": now, "reason": c.reason[:500]}
        for c in done])
    await _queue_zams(session, done, now)
    return [c.leg_id for c in done]


async def _queue_zams(session: AsyncSession, done: list[Change], now: dt.datetime) -> None:
    """The business acknowledgements (ZAM outbox rows) of applied transitions, when their delivery asks
    for them; a row already queued for that leg and event is kept (a replayed transition queues nothing)."""
    zams = [c for c in done if c.target in ZAM_FOR_STATE]
    if not zams:
        return
    flags = {int(i): (bool(r), bool(lec), str(ep or "")) for i, r, lec, ep in (await session.execute(
        select(YDelivery.id, YDelivery.ack_reception, YDelivery.ack_lecture, YDelivery.ack_endpoint)
        .where(YDelivery.id.in_(sorted({c.delivery_id for c in zams}))))).all()}
    rows: list[dict[str, Any]] = []
    for c in zams:
        event, success, flag = ZAM_FOR_STATE[c.target]
        f = flags.get(c.delivery_id)
        if f is None or not f[0 if flag == "ack_reception" else 1] or not f[2]:
            continue
        error = c.error if c.error is not None or success else ZamError("906", "Autre erreur")
        rows.append({
            "delivery_id": c.delivery_id, "leg_id": c.leg_id, "event": event, "success": success,
            "error_code": error.code[:40] if error and not success else "",
            "error_label": error.label[:300] if error and not success else "",
            "endpoint": f[2], "attempts": 0, "next_attempt_at": now, "created_at": now,
        })
    if not rows:
        return
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    stmt: Any
    if dialect == "postgresql":
        stmt = postgresql.insert(YAckOutbox).on_conflict_do_nothing(constraint="uq_y_ack_outbox_leg_event")
    else:
        stmt = sqlite.insert(YAckOutbox).on_conflict_do_nothing()
    await session.execute(stmt, rows)


async def legs_of(session: AsyncSession, delivery_id: int) -> list[YLeg]:
    return list((await session.scalars(select(YLeg).where(YLeg.delivery_id == delivery_id).order_by(YLeg.id))).all())


def aware(t: dt.datetime | None) -> dt.datetime | None:
    """SQLite returns naive datetimes for DateTime(timezone=True): they were written in UTC."""
    if t is None:
        return None
    return t if t.tzinfo is not None else t.replace(tzinfo=dt.timezone.utc)


# --- read views (CLI `mssante y`, HTTP /y/deliveries) --------------------------------------------------


def _iso(t: dt.datetime | None) -> str | None:
    t = aware(t)
    return t.isoformat() if t is not None else None


def leg_view(leg: YLeg) -> dict[str, Any]:
    detail = {k: v for k, v in (leg.detail or {}).items() if k != "request"}  # the DMP request stays internal
    return {
        "id": leg.id, "kind": leg.kind, "group": leg.group or None, "recipient": leg.recipient,
        "state": leg.state, "state_at": _iso(leg.state_at), "attempts": leg.attempts,
        "next_attempt_at": _iso(leg.next_attempt_at), "message_id": leg.message_id,
        "last_error": leg.last_error, "detail": detail or None,
    }


def delivery_summary(d: YDelivery, legs: list[YLeg]) -> dict[str, Any]:
    return {
        "id": d.id, "sender": d.sender_key, "control_id": d.control_id, "message_type": d.message_type,
        "action": d.action, "source": d.source, "received_at": _iso(d.received_at),
        "legs": {state: sum(1 for leg in legs if leg.state == state) for state in sorted({leg.state for leg in legs})},
        "complete": all(leg.state in TERMINAL or leg.state in (DELIVERED, SENT) for leg in legs),
    }


async def delivery_view(session: AsyncSession, delivery_id: int) -> dict[str, Any] | None:
    d = await session.get(YDelivery, delivery_id)
    if d is None:
        return None
    legs = await legs_of(session, delivery_id)
    history = (await session.scalars(
        select(YStateChange).where(YStateChange.leg_id.in_([leg.id for leg in legs])).order_by(YStateChange.id)
    )).all() if legs else []
    acks = (await session.scalars(select(YAckOutbox).where(YAckOutbox.delivery_id == delivery_id)
                                  .order_by(YAckOutbox.id))).all()
    out = delivery_summary(d, legs)
    out.update({
        "patient_ins": d.patient_ins, "sender_mailbox": d.sender_mailbox, "actor": d.actor,
        "ack_reception": d.ack_reception, "ack_lecture": d.ack_lecture, "warnings": d.warnings or [],
        "leg_details": [leg_view(leg) for leg in legs],
        "history": [{"leg": h.leg_id, "from": h.from_state, "to": h.to_state, "at": _iso(h.at), "reason": h.reason}
                    for h in history],
        "business_acks": [{"event": a.event, "leg": a.leg_id, "success": a.success, "sent_at": _iso(a.sent_at),
                           "attempts": a.attempts, "lab_answer": a.ack_code or None, "error": a.error_code or None}
                          for a in acks],
    })
    return out


async def list_deliveries(session: AsyncSession, *, since: dt.datetime | None = None,
                          limit: int = 100) -> list[dict[str, Any]]:
    q = select(YDelivery).order_by(YDelivery.id.desc()).limit(limit)
    if since is not None:
        q = q.where(YDelivery.received_at >= since)
    deliveries = list((await session.scalars(q)).all())
    if not deliveries:
        return []
    all_legs = (await session.scalars(select(YLeg).where(YLeg.delivery_id.in_([d.id for d in deliveries])))).all()
    by_delivery: dict[int, list[YLeg]] = {}
    for leg in all_legs:
        by_delivery.setdefault(leg.delivery_id, []).append(leg)
    return [delivery_summary(d, by_delivery.get(d.id, [])) for d in deliveries]
