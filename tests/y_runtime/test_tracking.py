"""The leg state machine: the table itself (pure) and idempotent, race-safe application in the store."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import func, select

from mssante.y.models import LEG_DMP, LEG_MSS, YAckOutbox, YDelivery, YLeg, YStateChange
from mssante.y.tracking import (
    ACCEPTED,
    DELIVERED,
    DMP_ACCEPTED,
    DMP_REJECTED,
    FAILED,
    MSS_STATES,
    QUEUED,
    READ,
    READ_ERROR,
    SENT,
    TRANSITIONS,
    Outcome,
    decide,
    transition,
)
from .support import close_services, make_services


def test_every_state_has_a_row_and_terminal_states_go_nowhere() -> None:
    for state in MSS_STATES:
        assert (LEG_MSS, state) in TRANSITIONS
    for state in (FAILED, READ, READ_ERROR):
        assert TRANSITIONS[(LEG_MSS, state)] == frozenset()
    assert TRANSITIONS[(LEG_DMP, DMP_ACCEPTED)] == frozenset()


@pytest.mark.parametrize(("kind", "current", "target", "expected"), [
    (LEG_MSS, ACCEPTED, QUEUED, Outcome.APPLIED),
    (LEG_MSS, QUEUED, QUEUED, Outcome.UNCHANGED),
    (LEG_MSS, DELIVERED, SENT, Outcome.UNCHANGED),  # a late hand-over after the DSN
    (LEG_MSS, READ, DELIVERED, Outcome.UNCHANGED),  # a late DSN after the MDN
    (LEG_MSS, SENT, FAILED, Outcome.APPLIED),
    (LEG_MSS, DELIVERED, FAILED, Outcome.APPLIED),
    (LEG_MSS, FAILED, READ, Outcome.REFUSED),
    (LEG_MSS, FAILED, FAILED, Outcome.UNCHANGED),
    (LEG_DMP, ACCEPTED, DMP_REJECTED, Outcome.APPLIED),
    (LEG_DMP, DMP_ACCEPTED, DMP_ACCEPTED, Outcome.UNCHANGED),
    (LEG_DMP, DMP_ACCEPTED, DMP_REJECTED, Outcome.UNCHANGED),
])
def test_decide(kind: str, current: str, target: str, expected: Outcome) -> None:
    assert decide(kind, current, target) is expected


def test_unknown_states_are_errors() -> None:
    with pytest.raises(ValueError):
        decide(LEG_MSS, "lost", SENT)
    with pytest.raises(ValueError):
        decide(LEG_DMP, ACCEPTED, SENT)


async def _one_leg(services, *, ack: bool = True) -> int:
    now = services.now()
    async with services.sessions() as s, s.begin():
        d = YDelivery(sender_key="SIL-Y|labo", control_id="1", message_type="ORU^R01", action="submit",
                      sender_mailbox="labo@x", ack_reception=ack, ack_lecture=ack, ack_endpoint="127.0.0.1:9",
                      ack_context={}, ack="", received_at=now)
        s.add(d)
        await s.flush()
        leg = YLeg(delivery_id=d.id, kind=LEG_MSS, group="ps", recipient="a@b.fr", message_id="<m@x>",
                   state=ACCEPTED, state_at=now)
        s.add(leg)
        await s.flush()
        return int(leg.id)


async def test_transitions_are_idempotent_in_the_store(db_url: str, tmp_path: Path) -> None:
    services = await make_services(db_url, tmp_path)
    try:
        leg_id = await _one_leg(services)
        for _ in range(3):
            async with services.sessions() as s, s.begin():
                await transition(s, leg_id, QUEUED, now=services.now())
                await transition(s, leg_id, DELIVERED, now=services.now())
        async with services.sessions() as s:
            leg = await s.get(YLeg, leg_id)
            assert leg.state == DELIVERED
            assert await s.scalar(select(func.count()).select_from(YStateChange)) == 2
            assert await s.scalar(select(func.count()).select_from(YAckOutbox)) == 1  # one Z02
    finally:
        await close_services(services)


async def test_concurrent_workers_apply_a_transition_once(db_url: str, tmp_path: Path) -> None:
    services = await make_services(db_url, tmp_path)
    try:
        leg_id = await _one_leg(services)

        async def apply() -> Outcome:
            async with services.sessions() as s, s.begin():
                return await transition(s, leg_id, READ, now=services.now())

        outcomes = await asyncio.gather(*(apply() for _ in range(5)), return_exceptions=True)
        assert not [o for o in outcomes if isinstance(o, BaseException)], outcomes
        applied = [o for o in outcomes if o is Outcome.APPLIED]
        assert len(applied) == 1, outcomes
        async with services.sessions() as s:
            assert await s.scalar(select(func.count()).select_from(YAckOutbox)) == 1  # one Z03
            assert await s.scalar(select(func.count()).select_from(YStateChange)) == 1
    finally:
        await close_services(services)
