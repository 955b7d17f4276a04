"""Native email entry: an APP mailbox submits IHE_XDM.ZIP to dmp@<our domain> and gets the same tracked Y.

The stored messages are made the way the submission path stores them (mssante/smtp/message.py:
prepare_submission + received_header "with ESMTPSA", then local delivery), the XDM comes from the
real ANS example through the pure intake core.
"""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

from sqlalchemy import func, select

from mssante.smtp.message import prepare_submission, received_header
from mssante.store.mail import deliver, mailbox_by_address
from mssante.store.models import Folder, Message
from mssante.y.models import YDelivery, YLeg
from mssante.y.service import YIntake, ensure_routing_mailbox, routing_address
from mssante.y.worker import YWorker
from .support import LAB_MAILBOX, PRESCRIBER, FakeDmp, close_services, make_services, segur_bytes, sender_entry


def native_mail(services, *, sender: str = LAB_MAILBOX, protocol: str = "ESMTPSA", xdm: bool = True,
                message_id: str = "<native.1@test-ci-sis.mssante.fr>") -> bytes:
    intake = YIntake(services)
    rendered = intake._decide(segur_bytes(), {}, services.now())
    msg = email.message_from_bytes(rendered.mails[0], policy=email.policy.SMTP)
    del msg["To"], msg["From"], msg["Message-ID"]
    msg["From"] = sender
    msg["To"] = f"{routing_address(services)}, {PRESCRIBER}"
    msg["Message-ID"] = message_id
    if not xdm:
        msg.clear_content()
        msg.set_content("no attachment")
    prepared, _ = prepare_submission(msg.as_bytes(), now=services.now(), domain=services.config.operator.domain)
    return received_header(from_helo="lis", peer_ip="127.0.0.1", by_host=services.config.hostname, protocol=protocol,
                           tls="TLSv1.3", cert_subject=None, recipient=None, queue_id="q1", now=services.now()) + prepared


async def store(services, raw: bytes, *to: str) -> None:
    async with services.sessions() as s, s.begin():
        ids = [(await mailbox_by_address(s, a)).id for a in to]
        await deliver(s, raw, ids, internaldate=services.now())


async def inbox(services, address: str) -> list[bytes]:
    from mssante.store.models import Blob

    async with services.sessions() as s:
        box = await mailbox_by_address(s, address)
        rows = (await s.execute(select(Blob.data).join(Message, Message.blob_id == Blob.id)
                                .join(Folder, Folder.id == Message.folder_id)
                                .where(Folder.mailbox_id == box.id, Folder.name == "INBOX"))).all()
    return [bytes(r[0]) for r in rows]


async def test_app_mailbox_feeds_the_dmp_by_mail(db_url: str, tmp_path: Path) -> None:
    services = await make_services(db_url, tmp_path, senders=[sender_entry()])
    try:
        await ensure_routing_mailbox(services)
        raw = native_mail(services)
        await store(services, raw, routing_address(services), PRESCRIBER)
        dmp = FakeDmp()
        worker = YWorker(services, dmp=dmp)
        await worker.run_once()
        await worker.drain_dmp()
        await worker.run_once()
        async with services.sessions() as s:
            d = (await s.scalars(select(YDelivery))).one()
            legs = {leg.kind + ":" + leg.recipient: leg.state for leg in (await s.scalars(select(YLeg))).all()}
        assert d.source == "mail" and d.sender_mailbox == LAB_MAILBOX and d.control_id == "<native.1@test-ci-sis.mssante.fr>"
        assert legs == {"dmp:279035121518989": "dmp-accepted", f"mss:{PRESCRIBER}": "delivered"}
        assert dmp.requests[0].ins == "279035121518989" and dmp.requests[0].structure_id
        # Seen again (same Message-ID): the same delivery, not a second one.
        await store(services, raw, routing_address(services))
        await worker.run_once()
        async with services.sessions() as s:
            assert await s.scalar(select(func.count()).select_from(YDelivery)) == 1
    finally:
        await close_services(services)


async def test_refusals_tell_the_sender_and_create_nothing(db_url: str, tmp_path: Path) -> None:
    services = await make_services(db_url, tmp_path, senders=[sender_entry()])
    try:
        await ensure_routing_mailbox(services)
        cases = [
            native_mail(services, protocol="ESMTPS", message_id="<a@x>"),  # came from another operator's MTA
            native_mail(services, sender=PRESCRIBER, message_id="<b@x>"),  # a PER mailbox, not an APP one
            native_mail(services, xdm=False, message_id="<c@x>"),  # no IHE_XDM.ZIP
        ]
        for raw in cases:
            await store(services, raw, routing_address(services))
        worker = YWorker(services, dmp=FakeDmp())
        await worker.run_once()
        async with services.sessions() as s:
            assert await s.scalar(select(func.count()).select_from(YDelivery)) == 0
        notices = [m for m in await inbox(services, LAB_MAILBOX) if b"[KO DMP]" in m]
        reasons = b"\n".join(notices).decode()
        assert "authenticated APP mailbox" in reasons and "IHE_XDM.ZIP" in reasons
        assert any(b"[KO DMP]" in m for m in await inbox(services, PRESCRIBER))
    finally:
        await close_services(services)
