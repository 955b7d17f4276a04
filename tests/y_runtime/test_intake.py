"""The Y intake over real MLLP on 127.0.0.1: AA only with a stored delivery, duplicates, every NACK path.

Runs on SQLite and PostgreSQL (fixture db_url). Each refusal must leave nothing behind: no delivery,
no leg, no queued or delivered message (issue 7: "Each gets a NACK that explains, and nothing is half-sent").
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import base64
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from mssante.store.models import Message
from mssante.store.queue import QueueRecipient
from mssante.y.mllp import MllpClient, start_mllp
from mssante.y.models import YDelivery, YLeg
from .support import (
    table_rows,
    close_services,
    make_services,
    replace_line,
    segur_bytes,
    sender_entry,
    with_control_id,
)


@pytest.fixture
async def env(db_url: str, tmp_path: Path) -> AsyncIterator[tuple]:
    services = await make_services(db_url, tmp_path, senders=[sender_entry()])
    server = await start_mllp(services, host="127.0.0.1", port=0)
    client = await MllpClient.connect("127.0.0.1", server.port)
    try:
        yield services, server, client
    finally:
        await client.close()
        await server.stop()
        await close_services(services)


def msa(ack: bytes) -> tuple[str, str]:
    line = [ln for ln in ack.split(b"\r") if ln.startswith(b"MSA|")][0].decode()
    parts = line.split("|")
    return parts[1], parts[2]


def errs(ack: bytes) -> list[str]:
    return [ln.decode() for ln in ack.split(b"\r") if ln.startswith(b"ERR|")]


async def counts(services) -> tuple[int, int, int, int]:
    async with services.sessions() as s:
        d = await s.scalar(select(func.count()).select_from(YDelivery))
        legs = await s.scalar(select(func.count()).select_from(YLeg))
        msgs = await s.scalar(select(func.count()).select_from(Message))
        q = await s.scalar(select(func.count()).select_from(QueueRecipient))
    return int(d or 0), int(legs or 0), int(msgs or 0), int(q or 0)


async def test_example_is_acknowledged_after_storage_with_every_leg(env) -> None:
    services, _, client = env
    ack = await client.send(segur_bytes())
    assert msa(ack) == ("AA", "015")
    # The PRT patient address disagrees with the PID INS: reported as a warning, not used.
    assert any("|W|" in e and "PID INS" in e for e in errs(ack))
    async with services.sessions() as s:
        delivery = (await s.scalars(select(YDelivery))).one()
        legs = list((await s.scalars(select(YLeg).order_by(YLeg.id))).all())
    assert delivery.sender_key == "SIL-Y|labo" and delivery.control_id == "015"
    assert delivery.ack.encode() == ack and delivery.ack_reception and delivery.ack_lecture
    assert sorted((leg.kind, leg.recipient, leg.state) for leg in legs) == [
        ("dmp", "279035121518989", "accepted"),
        ("mss", "279035121518989@patient.mssante.fr", "accepted"),
        ("mss", "adam.hoda@test-ci-sis.mssante.fr", "accepted"),
    ]
    assert {leg.recipient_id for leg in legs if leg.group == "ps"} == {"801234567897"}


async def test_duplicate_control_id_is_acknowledged_again_without_a_second_delivery(env) -> None:
    services, _, client = env
    data = segur_bytes()
    first = await client.send(data)
    second = await client.send(data)
    assert msa(second) == ("AA", "015")
    assert second == first  # the stored ACK, replayed
    assert (await counts(services))[:2] == (1, 3)
    third = await client.send(with_control_id(data, "016"))
    assert msa(third) == ("AA", "016")
    assert (await counts(services))[:2] == (2, 6)


def _document(data: bytes) -> bytes:
    line = [ln for ln in re.split(rb"\r\n|\r|\n", data) if ln.startswith(b"OBX|1|ED")][0]
    return base64.b64decode(line.split(b"^Base64^")[1].split(b"|")[0])


def with_document(data: bytes, cda: bytes) -> bytes:
    line = [ln for ln in re.split(rb"\r\n|\r|\n", data) if ln.startswith(b"OBX|1|ED")][0]
    head, rest = line.split(b"^Base64^", 1)
    tail = rest.split(b"|", 1)[1]
    return replace_line(data, b"OBX|1|ED", head + b"^Base64^" + base64.b64encode(cda) + b"|" + tail)


def _segment(data: bytes, prefix: bytes) -> bytes:
    return [ln for ln in re.split(rb"\r\n|\r|\n", data) if ln.startswith(prefix)][0]


def bad_inputs(data: bytes) -> dict[str, tuple[bytes, str]]:
    """Issue 7's bad-input list: name -> (message, text expected in an ERR)."""
    cda = _document(data)
    msh = _segment(data, b"MSH|")
    flag = _segment(data, b"OBX|7|CE|DESTDMP")
    rct = _segment(data, b"PRT||UC||RCT^^participation|801234567897")
    return {
        "missing MSH": (data[data.index(b"\n") + 1:], "MSH"),
        "missing PID": (replace_line(data, b"PID|", None), "PID"),
        "missing OBX document": (replace_line(data, b"OBX|1|ED", None), "CDA"),
        "wrong encoding characters": (replace_line(data, b"MSH|", msh.replace(b"^~\\&", b"^~\\#", 1)), "MSH-2"),
        "invalid Base64": (with_document(data, b"").replace(b"^Base64^|", b"^Base64^@@not base64@@|"), "Base64"),
        "CDA not XML": (with_document(data, b"this is not XML at all"), ""),
        "CDA with DOCTYPE": (with_document(data, b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "boom">]>'
                                                 + cda[cda.index(b"<ClinicalDocument"):]), ""),
        "CDA names another patient": (with_document(data, cda.replace(b'extension="279035121518989"',
                                                                      b'extension="187030200100187"')), ""),
        "unknown flag": (replace_line(data, b"OBX|7|CE|DESTDMP", flag.replace(b"DESTDMP^", b"DESTXYZ^")), "DESTXYZ"),
        "invalid flag combination": (replace_line(data, b"OBX|9|CE|DESTMSSANTEPAT",
                                                  _segment(data, b"OBX|9|CE|DESTMSSANTEPAT").replace(b"||Y^^", b"||N^^")),
                                     "matrix"),
        "recipient outside the trust space": (data.replace(b"^^X.400^adam.hoda@test-ci-sis.mssante.fr",
                                                           b"^^X.400^someone@gmail.com", 1), "trust space"),
        "unknown RPPS": (replace_line(data, b"PRT||UC||RCT^^participation|801234567897",
                                      rct.split(b"||||||||||^^X.400^")[0]), "directory"),
        "bad INS key": (data.replace(b"279035121518989^^^ASIP", b"279035121518988^^^ASIP", 1), "INS"),
        "unauthorised sender": (data.replace(b"|SIL-Y|labo|", b"|SIL-Z|labo|", 1), "not authorised"),
        "unsupported message type": (data.replace(b"ORU^R01^ORU_R01", b"ADT^A01^ADT_A01", 1), "not supported"),
    }


@pytest.mark.parametrize("case", [
    "missing MSH", "missing PID", "missing OBX document", "wrong encoding characters", "invalid Base64",
    "CDA not XML", "CDA with DOCTYPE", "CDA names another patient", "unknown flag", "invalid flag combination",
    "recipient outside the trust space", "unknown RPPS", "bad INS key", "unauthorised sender",
    "unsupported message type",
])
async def test_bad_input_gets_a_nack_that_explains_and_nothing_is_stored(env, case: str) -> None:
    services, _, client = env
    message, expected = bad_inputs(segur_bytes())[case]
    ack = await client.send(message)
    code, _ = msa(ack)
    assert code in ("AE", "AR"), ack
    found = errs(ack)
    assert found and all("|E|" in e or "|W|" not in e for e in found)
    if expected:
        assert any(expected.lower() in e.lower() for e in found), found
    assert await counts(services) == (0, 0, 0, 0)
    # The connection is still usable: the next good message is accepted.
    assert msa(await client.send(segur_bytes()))[0] == "AA"


async def test_oversize_message_is_refused_before_allocation(db_url: str, tmp_path: Path) -> None:
    services = await make_services(db_url, tmp_path, senders=[sender_entry()])
    services.config.mllp.max_message_size = 1024 * 1024
    server = await start_mllp(services, host="127.0.0.1", port=0)
    client = await MllpClient.connect("127.0.0.1", server.port)
    try:
        data = segur_bytes()
        big_obx = b"OBX|1|ED|11502-2^CR^LN||^TEXT^XML^Base64^" + b"A" * (50 * 1024 * 1024) + b"||||||F"
        huge = replace_line(data, b"OBX|1|ED", big_obx)
        ack = await client.send(huge, timeout=120)
        assert msa(ack) == ("AE", "015")
        assert any("exceeds" in e for e in errs(ack))
        assert await counts(services) == (0, 0, 0, 0)
        services.config.mllp.max_message_size = 20 * 1024 * 1024
    finally:
        await client.close()
        await server.stop()
        await close_services(services)


async def test_crlf_and_cr_segment_endings_are_accepted(env) -> None:
    services, _, client = env
    data = segur_bytes()
    assert msa(await client.send(with_control_id(data.replace(b"\n", b"\r"), "CR1")))[0] == "AA"
    assert msa(await client.send(with_control_id(data.replace(b"\n", b"\r\n"), "CRLF1")))[0] == "AA"
    assert (await counts(services))[0] == 2


async def test_dmp_leg_is_refused_when_no_dmp_is_configured(db_url: str, tmp_path: Path) -> None:
    services = await make_services(db_url, tmp_path, senders=[sender_entry()], dmp_enabled=False)
    server = await start_mllp(services, host="127.0.0.1", port=0)
    client = await MllpClient.connect("127.0.0.1", server.port)
    try:
        ack = await client.send(segur_bytes())
        assert msa(ack) == ("AR", "015")
        assert any("no DMP connection" in e for e in errs(ack))
        assert await counts(services) == (0, 0, 0, 0)
    finally:
        await client.close()
        await server.stop()
        await close_services(services)


async def test_decide_in_a_process_pool_gives_the_same_answers(tmp_path: Path) -> None:
    from mssante.y.service import YIntake

    services = await make_services(f"sqlite+aiosqlite:///{tmp_path / 't.db'}", tmp_path, senders=[sender_entry()])
    services.config.mllp.decide_processes = 1  # as `serve` reads it from [mllp] decide_processes
    intake = YIntake(services)
    assert intake._pool is not None and intake._pool._max_workers == 1
    server = await start_mllp(services, host="127.0.0.1", port=0, handler=intake.handle_frame)
    client = await MllpClient.connect("127.0.0.1", server.port)
    try:
        assert msa(await client.send(segur_bytes())) == ("AA", "015")
        bad, _ = bad_inputs(segur_bytes())["unknown flag"]
        assert msa(await client.send(with_control_id(bad, "016")))[0] == "AE"
        assert (await counts(services))[:2] == (1, 3)
    finally:
        await client.close()
        await server.stop()
        await intake.close()
        await close_services(services)


async def test_a_resent_control_id_gets_the_stored_ack_even_if_deciding_again_would_refuse(env) -> None:
    services, _, client = env
    data = segur_bytes()
    first = await client.send(data)
    assert msa(first) == ("AA", "015")
    bad, _ = bad_inputs(data)["unknown flag"]
    assert await client.send(with_control_id(bad, "015")) == first  # MSH-10 identifies the message
    assert (await counts(services))[:2] == (1, 3)


async def test_concurrent_connections_are_each_acknowledged_after_their_storage(env) -> None:
    import asyncio

    services, server, _ = env
    data = segur_bytes()

    async def lis(ids: list[str]) -> list[bytes]:
        c = await MllpClient.connect("127.0.0.1", server.port)
        try:
            return [await c.send(with_control_id(data, cid)) for cid in ids]
        finally:
            await c.close()

    # Six labs' connections at once, two of them sending the same control id at the same time.
    groups = [[f"K{n}{i}" for i in range(4)] for n in range(4)] + [["SAME"], ["SAME"]]
    answers = await asyncio.gather(*(lis(g) for g in groups))
    for ids, acks in zip(groups, answers, strict=True):
        assert [msa(a) for a in acks] == [("AA", cid) for cid in ids]
    assert answers[-1] == answers[-2]  # one delivery; the second got the first's ACK
    async with services.sessions() as s:
        rows = dict((await s.execute(select(YDelivery.control_id, func.count(YLeg.id))
                                     .join(YLeg, YLeg.delivery_id == YDelivery.id).group_by(YDelivery.control_id))).all())
    assert rows == {cid: 3 for g in groups for cid in g}


async def test_store_plans_answers_a_duplicate_within_one_batch_with_the_first_ack(db_url: str, tmp_path: Path) -> None:
    from mssante.y.service import StoragePlan, YIntake
    from mssante.y.storage import PendingStore, store_plans

    services = await make_services(db_url, tmp_path, senders=[sender_entry()])
    intake = YIntake(services)
    try:
        now = services.now()
        plans = [intake._decide(with_control_id(segur_bytes(), cid), {}, now) for cid in ("B1", "B2", "B1")]
        assert all(isinstance(p, StoragePlan) for p in plans)
        rule = intake.rules[0]
        items = [PendingStore(p, rule, "test", "mllp", now, services.audit) for p in plans]  # type: ignore[arg-type]
        async with services.sessions() as s, s.begin():
            first = await store_plans(s, items, audit=services.audit)
        assert [r[2] for r in first] == [False, False, True]
        assert first[2][:2] == first[0][:2] and first[0][0] != first[1][0]
        async with services.sessions() as s, s.begin():
            again = await store_plans(s, items, audit=services.audit)  # a re-run after COMMIT: all duplicates
        assert [r[2] for r in again] == [True, True, True] and [r[:2] for r in again] == [r[:2] for r in first]
        assert (await counts(services))[:2] == (2, 6)
    finally:
        await intake.close()
        await close_services(services)


async def test_store_plans_sqlite_fast_path_writes_what_the_core_path_writes(tmp_path: Path, monkeypatch) -> None:
    """On SQLite the batch goes through the driver thread in one hand-off (mssante.y.storage._store_sqlite);
    the rows it writes are those of the SQLAlchemy path, value for value (JSON null, dates, booleans)."""
    import mssante.y.storage as storage
    from mssante.store.models import AuditEvent, Blob
    from mssante.y.service import YIntake

    plans: list = []

    async def stored(name: str) -> dict[str, list[tuple]]:
        services = await make_services(f"sqlite+aiosqlite:///{tmp_path / name}.db", tmp_path / name,
                                       senders=[sender_entry()])
        intake = YIntake(services)
        try:
            now = dt.datetime(2026, 12, 4, 20, 0, tzinfo=dt.timezone.utc)
            services.now = lambda: now
            services.audit._now = lambda: now
            if not plans:
                plans.extend(intake._decide(with_control_id(segur_bytes(), cid), {}, now) for cid in ("F1", "F2", "F1"))
            items = [storage.PendingStore(p, intake.rules[0], "test", "mllp", now, services.audit) for p in plans]
            async with services.sessions() as s, s.begin():
                answers = await storage.store_plans(s, items, audit=services.audit)
            assert [a[2] for a in answers] == [False, False, True]
            return await table_rows(services, (YDelivery.__table__, YLeg.__table__, Blob.__table__, AuditEvent.__table__))
        finally:
            await intake.close()
            await close_services(services)

    real, used = storage._store_sqlite, []

    async def spy(*args: Any) -> Any:
        out = await real(*args)
        used.append(out is not None)
        return out

    monkeypatch.setattr(storage, "_store_sqlite", spy)
    fast = await stored("fast")
    assert used == [True]  # the one-hand-off path wrote it
    monkeypatch.setattr(storage, "_store_sqlite", _no_fast_path)
    core = await stored("core")
    assert fast["y_leg"] and fast == core


async def _no_fast_path(*args: object) -> None:
    return None
