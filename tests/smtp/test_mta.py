"""Inbound MTA (operator to operator): acceptance and the failure catalogue, on real sockets and TLS."""

from __future__ import annotations

import ssl

import aiosmtplib
import pytest
from sqlalchemy import select

from .clients import RawClient, message
from .operators import Operator, Space, refresh_trust, utcnow
from mssante.store.models import AuditEvent, Message


async def mta_client(op: Operator, space: Space, issued, *, helo: str = "mx.op-b.test") -> aiosmtplib.SMTP:
    c = aiosmtplib.SMTP(hostname=op.ip, port=op.mta_port, start_tls=False, use_tls=False, timeout=10,
                        local_hostname=helo)
    await c.connect()
    await c.starttls(tls_context=space.client_ctx(issued))
    return c


async def restart(op: Operator) -> None:
    """Limits are read when a listener starts."""
    from .conftest import start

    for item in op.listeners:
        await item.stop()
    op.listeners.clear()
    await start(op, submission=False)


async def messages(op: Operator) -> list[Message]:
    async with op.services.sessions() as s:
        return list((await s.scalars(select(Message))).all())


async def test_accepts_mail_from_listed_peer(ops: dict[str, Operator], space: Space) -> None:
    a, b = ops["a"], ops["b"]
    await a.add_mailbox("dr.martin")
    c = await mta_client(a, space, b.serv)
    code, text = await c.mail("sec@op-b.test")
    assert code == 250
    code, _ = await c.rcpt("dr.martin@op-a.test")
    assert code == 250
    code, text = await c.data(message("sec@op-b.test", "dr.martin@op-a.test", mid="<m1@op-b.test>"))
    assert code == 250, text
    await c.quit()
    msgs = await messages(a)
    assert len(msgs) == 1 and msgs[0].message_id == "<m1@op-b.test>"
    async with a.services.sessions() as s:
        from mssante.store.models import Blob
        raw = (await s.scalar(select(Blob.data)))
        ev = (await s.scalars(select(AuditEvent).where(AuditEvent.action == "smtp.mta.accept"))).one()
    assert raw.startswith(b"Received: from mx.op-b.test")
    assert b"TLSv1.3" in raw and b"peer-cert=" in raw and b"mx.op-b.test" in raw
    assert ev.details["message_id"] == "<m1@op-b.test>" and ev.details["local"] == ["dr.martin@op-a.test"]
    assert "mx.op-b.test" in ev.actor
    assert msgs[0].envelope is not None  # ENVELOPE computed at delivery (mssante.imap.mime)


async def test_ehlo_advertises_extensions(ops: dict[str, Operator], space: Space) -> None:
    a = ops["a"]
    c = await RawClient.connect(a.ip, a.mta_port)
    assert (await c.reply()).startswith("220")
    ehlo = await c.cmd("EHLO mx.op-b.test")
    for ext in ("PIPELINING", "SIZE 26214400", "8BITMIME", "ENHANCEDSTATUSCODES", "DSN", "STARTTLS"):
        assert ext in ehlo
    assert "SMTPUTF8" not in ehlo and "AUTH" not in ehlo
    await c.close()


async def test_no_starttls_is_refused(ops: dict[str, Operator]) -> None:
    a = ops["a"]
    c = await RawClient.connect(a.ip, a.mta_port)
    await c.reply()
    await c.cmd("EHLO mx.op-b.test")
    r = await c.cmd("MAIL FROM:<sec@op-b.test>")
    assert r.startswith("530 5.7.0"), r
    await c.close()


async def test_no_client_certificate_is_refused(ops: dict[str, Operator], space: Space) -> None:
    a = ops["a"]
    c = await mta_client(a, space, None)
    with pytest.raises(aiosmtplib.SMTPSenderRefused) as e:
        await c.mail("sec@op-b.test")
    assert e.value.code == 550 and "5.7.1" in e.value.message and "certificate is required" in e.value.message
    await c.quit()


async def test_untrusted_ca_fails_the_handshake(ops: dict[str, Operator], space: Space, tmp_path) -> None:
    other = Space.create(tmp_path / "other")
    rogue = other.issue_serv("op-b.test", tmp_path / "rogue")
    a = ops["a"]
    ctx = other.client_ctx(rogue)
    ctx.load_verify_locations(cafile=str(space.pki.anchors_path))
    c = aiosmtplib.SMTP(hostname=a.ip, port=a.mta_port, start_tls=False, timeout=10)
    await c.connect()
    with pytest.raises((aiosmtplib.SMTPException, ssl.SSLError, ConnectionError, OSError)):
        await c.starttls(tls_context=ctx)
        await c.mail("sec@op-b.test")
    c.close()


async def test_revoked_certificate_is_refused(ops: dict[str, Operator], space: Space) -> None:
    a, b = ops["a"], ops["b"]
    space.pki.revoke(b.serv.serial, "keyCompromise", utcnow())
    space.pki.write_crls(utcnow())
    a.services.validator = space.validator()  # the CRL refresher's job
    c = await mta_client(a, space, b.serv)
    with pytest.raises(aiosmtplib.SMTPSenderRefused) as e:
        await c.mail("sec@op-b.test")
    assert e.value.code == 550 and "REVOKED" in e.value.message
    await c.quit()


async def test_unlisted_dn_is_refused(ops: dict[str, Operator], space: Space) -> None:
    a, x = ops["a"], ops["x"]
    c = await mta_client(a, space, x.serv, helo="mx.op-x.test")
    with pytest.raises(aiosmtplib.SMTPSenderRefused) as e:
        await c.mail("sec@op-x.test")
    assert e.value.code == 550 and "liste blanche" in e.value.message
    await c.quit()
    async with a.services.sessions() as s:
        ev = (await s.scalars(select(AuditEvent).where(AuditEvent.action == "smtp.mta.refuse"))).one()
    assert ev.outcome == "refused" and ev.details["reason"] == "DOMAIN_NOT_LISTED"


async def test_listed_dn_used_for_another_domain_is_refused(ops: dict[str, Operator], space: Space) -> None:
    a, b = ops["a"], ops["b"]
    c = await mta_client(a, space, b.serv)
    with pytest.raises(aiosmtplib.SMTPSenderRefused) as e:
        await c.mail("someone@op-a.test")  # b's DN is listed, but for op-b.test only
    assert e.value.code == 550 and "DN_NOT_LISTED_FOR_DOMAIN" in e.value.message
    await c.quit()


async def test_delisting_applies_to_an_open_connection(ops: dict[str, Operator], space: Space) -> None:
    a, b = ops["a"], ops["b"]
    await a.add_mailbox("dr.martin")
    c = await mta_client(a, space, b.serv)
    await c.sendmail("sec@op-b.test", ["dr.martin@op-a.test"], message("sec@op-b.test", "dr.martin@op-a.test"))
    space.entries[:] = [e for e in space.entries if e[0] != "op-b.test"]
    refresh_trust(space, a)
    with pytest.raises(aiosmtplib.SMTPSenderRefused):
        await c.mail("sec@op-b.test")
    await c.quit()


async def test_unknown_recipient_and_relay_attempt(ops: dict[str, Operator], space: Space) -> None:
    a, b = ops["a"], ops["b"]
    await a.add_mailbox("closed")
    c = await mta_client(a, space, b.serv)
    await c.mail("sec@op-b.test")
    with pytest.raises(aiosmtplib.SMTPRecipientRefused) as e:
        await c.rcpt("nobody@op-a.test")
    assert e.value.code == 550 and "5.1.1" in e.value.message
    with pytest.raises(aiosmtplib.SMTPRecipientRefused) as e:
        await c.rcpt("someone@op-b.test")  # never relay
    assert e.value.code == 550 and "5.7.1" in e.value.message and "Relaying denied" in e.value.message
    await c.quit()


async def test_oversize_is_refused(ops: dict[str, Operator], space: Space) -> None:
    a, b = ops["a"], ops["b"]
    await a.add_mailbox("dr.martin")
    a.services.config.smtp.max_message_size = 4096
    await restart(a)
    c = await mta_client(a, space, b.serv)
    with pytest.raises(aiosmtplib.SMTPSenderRefused) as e:
        await c.mail("sec@op-b.test", options=["SIZE=100000000"])
    assert e.value.code == 552 and "5.3.4" in e.value.message
    await c.mail("sec@op-b.test")
    await c.rcpt("dr.martin@op-a.test")
    with pytest.raises(aiosmtplib.SMTPDataError) as e:
        await c.data(message("sec@op-b.test", "dr.martin@op-a.test", body="x" * 998 + "\r\n") * 40)
    assert e.value.code == 552 and "5.3.4" in e.value.message
    await c.quit()
    assert await messages(a) == []


async def test_too_many_recipients(ops: dict[str, Operator], space: Space) -> None:
    a, b = ops["a"], ops["b"]
    for i in range(3):
        await a.add_mailbox(f"u{i}", password=None)
    a.services.config.smtp.max_recipients = 2
    await restart(a)
    c = await mta_client(a, space, b.serv)
    await c.mail("sec@op-b.test")
    await c.rcpt("u0@op-a.test")
    await c.rcpt("u1@op-a.test")
    with pytest.raises(aiosmtplib.SMTPRecipientRefused) as e:
        await c.rcpt("u2@op-a.test")
    assert e.value.code == 452 and "4.5.3" in e.value.message
    await c.quit()


async def test_delivery_wakes_imap_sessions_of_this_process(ops: dict[str, Operator], space: Space) -> None:
    from mssante.store.models import Folder
    from mssante.store.notify import FolderNotifier

    a, b = ops["a"], ops["b"]
    box = await a.add_mailbox("dr.martin")
    async with a.services.sessions() as s:
        inbox_id = await s.scalar(select(Folder.id).where(Folder.mailbox_id == box, Folder.name == "INBOX"))
    a.services.notifier = FolderNotifier()
    seen: list[int] = []
    a.services.notifier.subscribe(inbox_id, lambda f, m: seen.append(f))
    c = await mta_client(a, space, b.serv)
    await c.sendmail("sec@op-b.test", ["dr.martin@op-a.test"], message("sec@op-b.test", "dr.martin@op-a.test"))
    await c.quit()
    assert seen == [inbox_id]


async def test_cached_certificate_decision_follows_a_refreshed_crl(ops: dict[str, Operator], space: Space) -> None:
    """The per-fingerprint cache of pki decisions: a second connection reuses it, a new CRL in the same
    validator's store (a refresh that revokes the certificate) is seen at the next connection."""
    from mssante.smtp.certcache import cert_cache_for

    a, b = ops["a"], ops["b"]
    for _ in range(2):
        c = await mta_client(a, space, b.serv)
        await c.mail("sec@op-b.test")
        await c.quit()
    cache = cert_cache_for(a.services)
    assert cache.hits >= 1
    space.pki.revoke(b.serv.serial, "keyCompromise", utcnow())
    for path in space.pki.write_crls(utcnow()):
        a.services.validator.crls.load_file(path)  # the same Validator object, a refreshed CRL store
    c = await mta_client(a, space, b.serv)
    with pytest.raises(aiosmtplib.SMTPSenderRefused) as e:
        await c.mail("sec@op-b.test")
    assert e.value.code == 550 and "REVOKED" in e.value.message
    await c.quit()
