"""Submission (STARTTLS and implicit TLS): AUTH mechanisms and sending rules, over real sockets."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiosmtplib
import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import select


from .clients import RawClient, message  # noqa: E402
from .conftest import start  # noqa: E402
from ..auth.issuer import AUDIENCE, ISSUER, LocalIssuer  # noqa: E402
from .operators import PASSWORD, Operator, Space, make_operator, refresh_trust  # noqa: E402
from mssante.store.models import AuditEvent, Blob, MailboxDelegate  # noqa: E402
from mssante.store import queue as qstore  # noqa: E402

IDNPS = "810000000001"


class Sub:
    def __init__(self, op: Operator, issuer: LocalIssuer, lab, space: Space) -> None:
        self.op, self.issuer, self.lab, self.space = op, issuer, lab, space

    async def client(self, *, cert=None, implicit: bool = False) -> aiosmtplib.SMTP:
        ctx = self.space.client_ctx(cert)
        if implicit:
            c = aiosmtplib.SMTP(hostname=self.op.ip, port=self.op.subs_port, use_tls=True, tls_context=ctx, timeout=10)
        else:
            c = aiosmtplib.SMTP(hostname=self.op.ip, port=self.op.sub_port, start_tls=True, tls_context=ctx, timeout=10)
        await c.connect()
        await c.ehlo()
        return c


@pytest.fixture
async def sub(space: Space, tmp_path: Path) -> AsyncIterator[Sub]:
    issuer = LocalIssuer()
    jwks = issuer.write_jwks(tmp_path / "jwks.json")
    op = await make_operator(space, tmp_path / "a", "op-a.test",
                             auth={"jwks_path": str(jwks), "jwt_issuer": ISSUER, "jwt_audience": AUDIENCE,
                                   "max_failures_per_account": 3})
    await make_operator(space, tmp_path / "b", "op-b.test")  # listed: op-b.test is in the trust space
    refresh_trust(space, op)
    lab = space.issue_org("Automate labo", tmp_path / "lab")
    fp = hashlib.sha256(lab.cert.public_bytes(Encoding.DER)).hexdigest()
    await op.add_mailbox("dr.a", owner_idnps=IDNPS)
    await op.add_mailbox("dr.c")
    await op.add_mailbox("sec.a")
    await op.add_mailbox("lab", "APP", password=None, cert_sha256=fp)
    await start(op, mta=False)
    yield Sub(op, issuer, lab, space)
    await op.stop()


async def blobs(op: Operator) -> list[bytes]:
    async with op.services.sessions() as s:
        return [bytes(b) for b in (await s.scalars(select(Blob.data))).all()]


async def test_auth_before_tls_is_refused(sub: Sub) -> None:
    c = await RawClient.connect(sub.op.ip, sub.op.sub_port)
    await c.reply()
    ehlo = await c.cmd("EHLO client")
    assert "AUTH" not in ehlo and "STARTTLS" in ehlo
    r = await c.cmd("AUTH PLAIN " + base64.b64encode(b"\0dr.a@op-a.test\0" + PASSWORD.encode()).decode())
    assert r.startswith("530 5.7.0"), r
    await c.close()


async def test_plain_login_and_local_delivery_with_hygiene(sub: Sub) -> None:
    c = await sub.client()
    assert "plain" in c.server_auth_methods and "xoauth2" in c.server_auth_methods
    await c.login("dr.a@op-a.test", PASSWORD)
    msg = (b"From: Dr A <dr.a@op-a.test>\r\nTo: <dr.c@op-a.test>\r\nBcc: <sec.a@op-a.test>\r\n"
           b"X-MSS-CODECDA: 11502-2\r\nSubject: resultat\r\n\r\nCorps.\r\n")
    await c.sendmail("dr.a@op-a.test", ["dr.c@op-a.test", "sec.a@op-a.test"], msg)
    await c.quit()
    (raw,) = await blobs(sub.op)
    assert b"Bcc:" not in raw and b"X-MSS-CODECDA: 11502-2" in raw
    assert b"\r\nMessage-ID: <" in raw and b"\r\nDate: " in raw and b"with ESMTPSA" in raw
    async with sub.op.services.sessions() as s:
        ev = (await s.scalars(select(AuditEvent).where(AuditEvent.action == "smtp.submission.accept"))).one()
    assert ev.actor == "dr.a@op-a.test" and ev.details["local"] == ["dr.c@op-a.test", "sec.a@op-a.test"]


async def test_login_mechanism_on_implicit_tls(sub: Sub) -> None:
    c = await sub.client(implicit=True)
    await c.auth_login("dr.a@op-a.test", PASSWORD)
    await c.sendmail("dr.a@op-a.test", ["dr.c@op-a.test"], message("dr.a@op-a.test", "dr.c@op-a.test"))
    await c.quit()
    assert len(await blobs(sub.op)) == 1


async def test_wrong_password_then_rate_limited(sub: Sub) -> None:
    c = await sub.client()
    for _ in range(3):
        with pytest.raises(aiosmtplib.SMTPAuthenticationError) as e:
            await c.auth_plain("dr.a@op-a.test", "wrong password here")
        assert e.value.code == 535
    with pytest.raises(aiosmtplib.SMTPAuthenticationError) as e:
        await c.auth_plain("dr.a@op-a.test", PASSWORD)  # even the right password: the account is cooling down
    assert e.value.code == 454
    await c.quit()
    async with sub.op.services.sessions() as s:
        evs = (await s.scalars(select(AuditEvent).where(AuditEvent.action == "auth.login"))).all()
    assert len(evs) == 4 and all(e.outcome == "failure" for e in evs)
    assert all(PASSWORD not in str(e.details) for e in evs)


async def test_xoauth2_token(sub: Sub) -> None:
    c = await sub.client()
    tok = sub.issuer.token(IDNPS)
    await c.auth_xoauth2("dr.a@op-a.test", tok)
    await c.sendmail("dr.a@op-a.test", ["dr.c@op-a.test"], message("dr.a@op-a.test", "dr.c@op-a.test"))
    await c.quit()


async def test_token_for_another_idnps_is_refused(sub: Sub) -> None:
    c = await sub.client()
    with pytest.raises(aiosmtplib.SMTPAuthenticationError) as e:
        await c.auth_xoauth2("dr.a@op-a.test", sub.issuer.token("810000000777"))
    assert e.value.code == 535
    await c.quit()


async def test_oauthbearer_raw(sub: Sub) -> None:
    c = await RawClient.connect(sub.op.ip, sub.op.sub_port)
    await c.reply()
    await c.cmd("EHLO client")
    await c.starttls(sub.space.client_ctx(None))
    await c.cmd("EHLO client")
    msg = f"n,a=dr.a@op-a.test,\x01auth=Bearer {sub.issuer.token(IDNPS)}\x01\x01".encode()
    assert (await c.cmd("AUTH OAUTHBEARER " + base64.b64encode(msg).decode())).startswith("235 2.7.0")
    await c.close()
    c = await RawClient.connect(sub.op.ip, sub.op.sub_port)
    await c.reply()
    await c.cmd("EHLO client")
    await c.starttls(sub.space.client_ctx(None))
    await c.cmd("EHLO client")
    bad = f"n,,\x01auth=Bearer {sub.issuer.token(IDNPS, lifetime=-600)}\x01\x01".encode()
    r = await c.cmd("AUTH OAUTHBEARER " + base64.b64encode(bad).decode())
    assert r.startswith("334 ")  # RFC 7628 error challenge
    assert b'"invalid_token"' in base64.b64decode(r[4:].strip())
    assert (await c.cmd(base64.b64encode(b"\x01").decode())).startswith("535 5.7.8")
    await c.close()


async def test_external_with_org_certificate(sub: Sub) -> None:
    c = await sub.client(cert=sub.lab)
    assert "external" in c.server_auth_methods
    code, _ = await c.execute_command(b"AUTH", b"EXTERNAL", b"=")
    assert code == 235
    await c.sendmail("lab@op-a.test", ["dr.a@op-a.test"], message("lab@op-a.test", "dr.a@op-a.test"))
    await c.quit()


async def test_sending_as_another_mailbox_is_refused(sub: Sub) -> None:
    c = await sub.client()
    await c.login("dr.a@op-a.test", PASSWORD)
    with pytest.raises(aiosmtplib.SMTPSenderRefused) as e:
        await c.mail("dr.c@op-a.test")
    assert e.value.code == 550 and "5.7.1" in e.value.message
    await c.mail("dr.a@op-a.test")
    await c.rcpt("dr.c@op-a.test")
    with pytest.raises(aiosmtplib.SMTPDataError) as e:
        await c.data(message("dr.c@op-a.test", "dr.c@op-a.test"))  # From header of someone else
    assert e.value.code == 550 and "From <dr.c@op-a.test>" in e.value.message
    await c.quit()
    assert await blobs(sub.op) == []


async def test_delegated_mailbox_may_be_used(sub: Sub) -> None:
    async with sub.op.services.sessions() as s, s.begin():
        from mssante.store.models import Mailbox
        sec = await s.scalar(select(Mailbox).where(Mailbox.address == "sec.a@op-a.test"))
        s.add(MailboxDelegate(mailbox_id=sec.id, delegate=IDNPS))
    c = await sub.client()
    await c.auth_xoauth2("", sub.issuer.token(IDNPS))
    await c.sendmail("sec.a@op-a.test", ["dr.c@op-a.test"], message("sec.a@op-a.test", "dr.c@op-a.test"))
    await c.quit()


async def test_recipient_rules(sub: Sub) -> None:
    c = await sub.client()
    await c.login("dr.a@op-a.test", PASSWORD)
    await c.mail("dr.a@op-a.test")
    with pytest.raises(aiosmtplib.SMTPRecipientRefused) as e:
        await c.rcpt("someone@gmail.example")
    assert e.value.code == 550 and "not in the MSSante trust space" in e.value.message
    with pytest.raises(aiosmtplib.SMTPRecipientRefused) as e:
        await c.rcpt("ghost@op-a.test")
    assert e.value.code == 550 and "5.1.1" in e.value.message
    await c.rcpt("dr.b@op-b.test")  # trust space: queued for the relay
    await c.rcpt("dr.c@op-a.test")  # local
    await c.data(message("dr.a@op-a.test", "dr.b@op-b.test"))
    await c.quit()
    async with sub.op.services.sessions() as s:
        rows = await qstore.list_queue(s)
    assert [r.rcpt for r in rows] == ["dr.b@op-b.test"]
    assert len(await blobs(sub.op)) == 1  # one blob shared by the local copy and the queue


async def test_mail_before_auth(sub: Sub) -> None:
    c = await sub.client()
    with pytest.raises(aiosmtplib.SMTPSenderRefused) as e:
        await c.mail("dr.a@op-a.test")
    assert e.value.code == 530
    await c.quit()
