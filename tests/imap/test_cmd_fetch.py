"""FETCH: every item, sections, partials, BINARY, \\Seen side effect, CHANGEDSINCE, audit."""

from __future__ import annotations

from sqlalchemy import select

from .conftest import Client, Env, message

from mssante.store.models import AuditEvent

NESTED = (
    b"From: a@op-b.test\r\nTo: dr.house@op-a.test\r\nSubject: fwd\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="o"\r\n\r\n--o\r\nContent-Type: text/plain\r\n\r\nouter\r\n'
    b"--o\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\nFrom: b@op-c.test\r\n"
    b'Content-Type: multipart/alternative; boundary="i"\r\n\r\n--i\r\nContent-Type: text/plain\r\n\r\n'
    b"inner text\r\n--i\r\nContent-Type: text/html\r\n\r\n<p>inner</p>\r\n--i--\r\n--o--\r\n"
)


async def test_items(env: Env, logged: Client) -> None:
    await env.deliver(message("items"))
    await logged.cmd("s SELECT INBOX")
    r = await logged.cmd("a FETCH 1 (FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODY BODYSTRUCTURE UID MODSEQ)")
    for part in ("FLAGS ()", "INTERNALDATE \"", "RFC822.SIZE", "ENVELOPE (", "BODY (\"TEXT\"", "BODYSTRUCTURE (",
                 "UID 1", "MODSEQ ("):
        assert part in r, part
    r = await logged.cmd("b FETCH 1 FAST")
    assert "RFC822.SIZE" in r and "ENVELOPE" not in r
    r = await logged.cmd("c FETCH 1 (RFC822.HEADER)")
    assert "Subject: items" in r and "Bonjour" not in r
    r = await logged.cmd("d FETCH 1 BODY.PEEK[TEXT]<0.7>")
    assert "BODY[TEXT]<0> {7}\r\nBonjour" in r and "\\Seen" not in r
    r = await logged.cmd("e FETCH 1 RFC822.TEXT")
    assert "\\Seen" in r


async def test_nested_sections(env: Env, logged: Client) -> None:
    await env.deliver(NESTED)
    await logged.cmd("s SELECT INBOX")
    r = await logged.cmd("a FETCH 1 (BODY.PEEK[1] BODY.PEEK[2.HEADER] BODY.PEEK[2.1] BODY.PEEK[2.2] "
                         "BODY.PEEK[2.TEXT]<0.4> BODY.PEEK[2.1.MIME] BODY.PEEK[HEADER.FIELDS.NOT (To From)])")
    assert "BODY[1] {5}\r\nouter" in r
    assert "BODY[2.HEADER]" in r and "Subject: inner" in r
    assert "BODY[2.1] {10}\r\ninner text" in r
    assert "BODY[2.2] {12}\r\n<p>inner</p>" in r
    assert "BODY[2.TEXT]<0> {4}\r\n--i\r" in r
    assert "BODY[2.1.MIME] {28}\r\nContent-Type: text/plain\r\n\r\n" in r
    assert "Subject: fwd" in r.split("HEADER.FIELDS.NOT")[1]
    r = await logged.cmd("b FETCH 1 BODY.PEEK[9]")
    assert "b NO" in r


async def test_uid_fetch_ranges_and_bad_msn(env: Env, logged: Client) -> None:
    for i in range(3):
        await env.deliver(message(f"m{i}"))
    await logged.cmd("s SELECT INBOX")
    r = await logged.cmd("a UID FETCH 2:999 FLAGS")
    assert "UID 2" in r and "UID 3" in r and "UID 1 " not in r
    assert "b BAD" in await logged.cmd("b FETCH 9 FLAGS")
    r = await logged.cmd("c UID FETCH 999 FLAGS")
    assert "c OK" in r and "FETCH (" not in r


async def test_body_fetch_audited(env: Env, logged: Client) -> None:
    await env.deliver(message("secret"))
    await logged.cmd("s SELECT INBOX")
    await logged.cmd("a FETCH 1 BODY[]")
    await logged.flush_audit()
    async with env.services.sessions() as s:
        ev = (await s.scalars(select(AuditEvent).where(AuditEvent.action == "imap.fetch_body"))).all()
    assert len(ev) == 1 and ev[0].details["count"] == 1 and "secret" not in str(ev[0].details)


async def test_binary_size_and_rfc822(env: Env, logged: Client) -> None:
    await env.deliver(message("bin"))
    await logged.cmd("s SELECT INBOX")
    r = await logged.cmd("a FETCH 1 (BINARY.SIZE[1] RFC822)")
    assert "BINARY.SIZE[1] 18" in r and "RFC822 {" in r
