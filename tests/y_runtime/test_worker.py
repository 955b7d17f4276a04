"""Leg processing: submission as the APP mailbox, relay hand-over, DSN/MDN matching, DMP retries, ZAM acks.

The DMP connector here is a test double of the DmpConnector Protocol (mssante/dmp/api.py); the
demo and docs/y-runtime.md use the reference DMP. Everything else is real: MLLP on 127.0.0.1,
the store, the relay queue tables, DSNs built by mssante/smtp/dsn.py, a lab ACK endpoint.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import delete, func, select

from mssante.smtp.dsn import DsnRecipient, build_dsn
from mssante.store.mail import deliver, mailbox_by_address
from mssante.store.models import Folder, Mailbox, Message
from mssante.store.queue import QueueMessage, QueueRecipient
from mssante.y.mllp import MllpClient, start_mllp
from mssante.y.models import YAckOutbox, YLeg, YStateChange
from mssante.y.worker import YWorker
from .support import (
    table_rows,
    LAB_MAILBOX,
    PATIENT,
    PRESCRIBER,
    DmpRejected,
    DmpTemporaryFailure,
    FakeDmp,
    ZamSink,
    close_services,
    make_services,
    segur_bytes,
    sender_entry,
    with_control_id,
)


@pytest.fixture
async def env(db_url: str, tmp_path: Path) -> AsyncIterator[tuple]:
    sink = ZamSink()
    services = await make_services(db_url, tmp_path, senders=[sender_entry()])
    endpoint = await sink.start(services)
    services.config.mllp.senders[0]["ack_endpoint"] = endpoint
    server = await start_mllp(services, host="127.0.0.1", port=0)
    client = await MllpClient.connect("127.0.0.1", server.port)
    try:
        yield services, client, sink
    finally:
        await client.close()
        await server.stop()
        await sink.stop()
        await close_services(services)


async def legs(services) -> dict[str, YLeg]:
    async with services.sessions() as s:
        rows = (await s.scalars(select(YLeg).order_by(YLeg.id))).all()
    return {(r.recipient if r.kind == "mss" else "dmp"): r for r in rows}


async def inbox_count(services, address: str) -> int:
    async with services.sessions() as s:
        box = await mailbox_by_address(s, address)
        assert box is not None
        return int(await s.scalar(
            select(func.count()).select_from(Message).join(Folder, Folder.id == Message.folder_id)
            .where(Folder.mailbox_id == box.id, Folder.name == "INBOX")) or 0)


async def deliver_to_lab(services, raw: bytes) -> None:
    async with services.sessions() as s, s.begin():
        box = await mailbox_by_address(s, LAB_MAILBOX)
        await deliver(s, raw, [box.id], internaldate=services.now())


async def wait_zams(sink: ZamSink, n: int) -> list[tuple[str, str]]:
    for _ in range(200):
        if len(sink.received) >= n:
            break
        sink.event.clear()
        await asyncio.wait_for(sink.event.wait(), 10)
    return sink.events()


def mdn(original_message_id: str, final: str, error: str | None = None) -> bytes:
    disposition = "automatic-action/MDN-sent-automatically; processed"
    if error:
        disposition += f"/Error: {error}"
    return (
        f"From: <{final}>\r\nTo: <{LAB_MAILBOX}>\r\nSubject: Accuse de lecture\r\nMessage-ID: <mdn.1@x>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=disposition-notification; boundary=\"b\"\r\n\r\n"
        "--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nLu.\r\n"
        "--b\r\nContent-Type: message/disposition-notification\r\n\r\n"
        f"Reporting-UA: client; test\r\nOriginal-Recipient: rfc822;{final}\r\nFinal-Recipient: rfc822;{final}\r\n"
        f"Original-Message-ID: {original_message_id}\r\nDisposition: {disposition}\r\n\r\n--b--\r\n"
    ).encode()


async def test_full_y_lifecycle_with_reports_and_business_acks(env) -> None:
    services, client, sink = env
    assert (await client.send(segur_bytes())).split(b"\r")[1].startswith(b"MSA|AA|015")
    dmp = FakeDmp([DmpTemporaryFailure("connection refused")])
    worker = YWorker(services, dmp=dmp, dmp_schedule=(0,))
    await worker.run_once()
    await worker.drain_dmp()
    state = await legs(services)
    # Local prescriber: delivered into its mailbox by the submission path; patient: queued for relay.
    assert state[PRESCRIBER].state == "delivered"
    assert await inbox_count(services, PRESCRIBER) == 1
    assert state[PATIENT].state == "queued"
    assert state["dmp"].state == "accepted" and state["dmp"].attempts == 1 and state["dmp"].last_error
    async with services.sessions() as s:
        q = (await s.execute(select(QueueMessage, QueueRecipient).join(
            QueueRecipient, QueueRecipient.queue_message_id == QueueMessage.id))).one()
    assert q[0].mail_from == LAB_MAILBOX and q[0].message_id == state[PATIENT].message_id
    assert q[1].rcpt == PATIENT and q[1].notify == "SUCCESS,FAILURE,DELAY"

    # DMP retried (durable schedule) and accepted; ZAM Z01 + Z02 reach the lab.
    await worker.run_once()
    await worker.drain_dmp()
    await worker.run_once()
    state = await legs(services)
    assert state["dmp"].state == "dmp-accepted" and len(dmp.requests) == 2
    assert dmp.requests[0].ins == "279035121518989" and dmp.requests[0].ins_oid == "1.2.250.1.213.1.4.10"
    assert sorted(await wait_zams(sink, 2)) == [("Z01", "Y"), ("Z02", "Y")]

    # The relay hands the patient message over (its queue rows disappear): sent, and a Z02.
    async with services.sessions() as s, s.begin():
        await s.execute(delete(QueueRecipient))
        await s.execute(delete(QueueMessage))
    await worker.run_once(relay=False)  # a loop round between two relay checks (`relay_interval`)
    assert (await legs(services))[PATIENT].state == "queued"
    await worker.run_once()
    assert (await legs(services))[PATIENT].state == "sent"
    # A failure DSN arrives later for the patient: failed, a negative Z02 with the SMTP code.
    dsn = build_dsn(reporting_mta="mx.patient.mssante.fr", postmaster="postmaster@patient.mssante.fr",
                    sender=LAB_MAILBOX, recipients=[DsnRecipient(PATIENT, "failed", "5.2.2", "550 5.2.2 mailbox full",
                                                                 original_recipient=f"rfc822;{PATIENT}")],
                    original=b"Message-ID: " + state[PATIENT].message_id.encode() + b"\r\n\r\n", now=services.now(),
                    envid=state[PATIENT].message_id.strip("<>"), original_message_id=state[PATIENT].message_id)
    await deliver_to_lab(services, dsn)
    # The prescriber reads the message: MDN -> read, Z03.
    await deliver_to_lab(services, mdn(state[PRESCRIBER].message_id, PRESCRIBER))
    await worker.run_once()
    await worker.run_once()
    state = await legs(services)
    assert state[PATIENT].state == "failed" and state[PATIENT].last_error.startswith("550")
    assert state[PRESCRIBER].state == "read"
    events = await wait_zams(sink, 5)
    assert sorted(events) == [("Z01", "Y"), ("Z02", "N"), ("Z02", "Y"), ("Z02", "Y"), ("Z03", "Y")]
    z03 = [p for p in sink.received if b"ZAM^Z03" in p][0].decode()
    assert "LECTEUR_MSS" in z03 and PRESCRIBER in z03 and "801234567897" in z03
    z02n = [p for p in sink.received if b"ZAM^Z02" in p and b"|N^^" in p][0].decode()
    assert "550^" in z02n and "SMTPERRORCODE" in z02n

    # Replaying the same reports changes nothing and sends no second acknowledgement.
    await deliver_to_lab(services, dsn)
    await deliver_to_lab(services, mdn(state[PRESCRIBER].message_id, PRESCRIBER))
    await worker.run_once()
    await worker.run_once()
    async with services.sessions() as s:
        assert await s.scalar(select(func.count()).select_from(YAckOutbox)) == 5
        assert await s.scalar(select(func.count()).select_from(YAckOutbox).where(YAckOutbox.sent_at.is_(None))) == 0
        history = (await s.scalars(select(YStateChange.to_state).where(YStateChange.leg_id == state[PATIENT].id)
                                   .order_by(YStateChange.id))).all()
    assert list(history) == ["queued", "sent", "failed"]


async def test_mdn_error_and_dmp_rejection_are_reported_with_their_codes(env) -> None:
    services, client, sink = env
    await client.send(segur_bytes())
    worker = YWorker(services, dmp=FakeDmp([DmpRejected("XDSRegistryError", "document refuse")]))
    await worker.run_once()
    await worker.drain_dmp()
    state = await legs(services)
    await deliver_to_lab(services, mdn(state[PRESCRIBER].message_id, PRESCRIBER,
                                       "904^L'INS transmis ne correspond pas"))
    await worker.run_once()
    state = await legs(services)
    assert state["dmp"].state == "dmp-rejected"
    assert state[PRESCRIBER].state == "read-error" and state[PRESCRIBER].last_error.startswith("904")
    await wait_zams(sink, 3)
    z03 = [p for p in sink.received if b"ZAM^Z03" in p][0].decode()
    assert "|N^^" in z03 and "904^" in z03
    z01 = [p for p in sink.received if b"ZAM^Z01" in p][0].decode()
    assert "|N^^" in z01 and "XDSRegistryError^" in z01 and "DMPERRORCODE" in z01


async def test_missing_local_recipient_fails_its_leg_only(env) -> None:
    services, client, sink = env
    async with services.sessions() as s, s.begin():
        await s.execute(delete(Mailbox).where(Mailbox.address == PRESCRIBER))
    await client.send(segur_bytes())
    worker = YWorker(services, dmp=None)
    await worker.run_once()
    state = await legs(services)
    assert state[PRESCRIBER].state == "failed" and state[PRESCRIBER].last_error.startswith("550 5.1.1")
    assert state[PATIENT].state == "queued"
    assert state["dmp"].state == "accepted"  # no connector configured: waits, never lost


async def test_a_failing_leg_message_blocks_no_other_in_its_batch(env, monkeypatch) -> None:
    """The batch transaction (through the shared group committer) fails: each leg message is then submitted
    alone; the bad one stays `accepted` (retried next round), the others go, nothing is written twice."""
    import mssante.store.groupcommit as groupcommit

    services, client, sink = env
    for cid in ("C1", "C2"):
        assert b"MSA|AA|" in await client.send(with_control_id(segur_bytes(), cid))
    async with services.sessions() as s:
        first = await s.scalar(select(YLeg.message_id).where(YLeg.group == "ps").order_by(YLeg.id).limit(1))
    real = groupcommit.deliver_many

    async def failing(session, items, folder="INBOX"):
        if any(it.message_id == first for it in items):
            raise RuntimeError("disk full")
        return await real(session, items, folder)

    monkeypatch.setattr(groupcommit, "deliver_many", failing)
    worker = YWorker(services, dmp=None)
    await worker.submit_mss(services.now())
    async with services.sessions() as s:
        ps = {m: st for m, st in (await s.execute(select(YLeg.message_id, YLeg.state).where(YLeg.group == "ps"))).all()}
    assert ps[first] == "accepted" and sorted(ps.values()) == ["accepted", "delivered"]
    assert await inbox_count(services, PRESCRIBER) == 1
    monkeypatch.setattr(groupcommit, "deliver_many", real)
    await worker.submit_mss(services.now())
    async with services.sessions() as s:
        states = (await s.scalars(select(YLeg.state).where(YLeg.kind == "mss"))).all()
        queued = await s.scalar(select(func.count()).select_from(QueueMessage))
    assert sorted(states) == ["delivered", "delivered", "queued", "queued"]
    assert await inbox_count(services, PRESCRIBER) == 2 and queued == 2  # each leg message once


async def test_unreachable_ack_endpoint_is_retried_from_the_outbox(env) -> None:
    services, client, sink = env
    await sink.stop()
    await client.send(segur_bytes())
    worker = YWorker(services, dmp=FakeDmp(), zam_schedule=(0,))
    await worker.run_once()
    await worker.drain_dmp()
    await worker.run_once()
    async with services.sessions() as s:
        rows = (await s.scalars(select(YAckOutbox))).all()
    assert rows and all(r.sent_at is None and r.attempts >= 1 and r.last_error for r in rows)
    # The lab's endpoint comes back: every pending acknowledgement is delivered once.
    sink.received.clear()
    sink.server = None
    from mssante.y.mllp import start_mllp as restart

    host, port = services.config.mllp.senders[0]["ack_endpoint"].split(":")
    old_handler_sink = ZamSink()
    old_handler_sink.server = await restart(services, host=host, port=int(port),
                                            handler=(await _handler_of(old_handler_sink)))
    try:
        await worker.run_once()
        assert len(old_handler_sink.received) == len(rows)
        await worker.run_once()
        assert len(old_handler_sink.received) == len(rows)
    finally:
        await old_handler_sink.server.stop()


async def _handler_of(sink: ZamSink):
    async def handler(item, peer) -> bytes:
        sink.received.append(item.payload)
        cid = item.payload.split(b"\r")[0].split(b"|")[9].decode()
        return f"MSH|^~\\&|SIL-Y|labo|PFI|x|20250101||ACK^Z02^ACK|R{cid}|P|2.6\rMSA|AA|{cid}\r".encode()
    return handler


async def test_submission_rows_on_the_sqlite_fast_path_are_those_of_the_core_path(tmp_path: Path, monkeypatch) -> None:
    """The worker's relay queue rows and audit events go through the SQLite driver thread in one hand-off
    (mssante.y.storage.write_submission); they are the rows the SQLAlchemy path writes, value for value."""
    import datetime as dt

    import mssante.y.storage as storage
    from mssante.store.models import AuditEvent, Blob

    now = dt.datetime(2026, 12, 4, 20, 0, tzinfo=dt.timezone.utc)
    legs = [storage.QueuedLeg(b"Subject: a\r\n\r\nA\r\n", LAB_MAILBOX, "<a@x>", "a@x", (PATIENT, "p2@patient.mssante.fr")),
            storage.QueuedLeg(b"Subject: b\r\n\r\nB\r\n", LAB_MAILBOX, "<b@x>", "b@x", (PATIENT,)),
            storage.QueuedLeg(b"Subject: a\r\n\r\nA\r\n", LAB_MAILBOX, "<c@x>", "c@x", (PATIENT,))]  # same blob
    events = [{"at": now, "action": "smtp.y.accept", "actor": LAB_MAILBOX, "outcome": "accepted",
               "details": {"remote": [PATIENT], "size": 17}}]

    async def written(name: str) -> dict[str, list[tuple]]:
        services = await make_services(f"sqlite+aiosqlite:///{tmp_path / name}.db", tmp_path / name,
                                       senders=[sender_entry()])
        try:
            async with services.sessions() as s, s.begin():
                await storage.write_submission(s, legs, events, now=now)
            return await table_rows(services, (Blob.__table__, QueueMessage.__table__, QueueRecipient.__table__, AuditEvent.__table__))
        finally:
            await close_services(services)

    real, used = storage._sqlite_driver, []

    async def spy(session):
        drv = await real(session)
        used.append(drv is not None)
        return drv

    monkeypatch.setattr(storage, "_sqlite_driver", spy)
    fast = await written("fast")
    assert used == [True]  # the one-hand-off path wrote it

    async def no_driver(session):
        await real(session)  # the session's transaction begins as on the fast path
        return None

    monkeypatch.setattr(storage, "_sqlite_driver", no_driver)
    core = await written("core")
    assert len(fast["queue_recipient"]) == 4 and len(fast["blob"]) >= 2 and fast == core
