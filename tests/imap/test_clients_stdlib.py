"""Python's imaplib against the running listener, over real TLS (implicit and STARTTLS)."""

from __future__ import annotations

import asyncio
import imaplib

from .conftest import ADDRESS, PASSWORD, Running, message


def _imaps(r: Running) -> imaplib.IMAP4_SSL:
    return imaplib.IMAP4_SSL("localhost", r.imaps.port, ssl_context=r.certs.client_context(), timeout=30)


async def test_imaplib_implicit_tls(running: Running) -> None:
    await running.env.deliver(message("first"))

    def work() -> None:
        m = _imaps(running)
        assert "IMAP4REV1" in m.capabilities and "AUTH=PLAIN" in m.capabilities
        m.login(ADDRESS, PASSWORD)
        typ, data = m.select("INBOX")
        assert typ == "OK" and data == [b"1"]
        typ, data = m.fetch("1", "(RFC822)")
        assert typ == "OK" and b"Subject: first" in data[0][1]
        m.append("Sent", "(\\Seen)", imaplib.Time2Internaldate(1_700_000_000), message("sent"))
        typ, data = m.status("Sent", "(MESSAGES UIDNEXT)")
        assert b"MESSAGES 1" in data[0]
        typ, data = m.uid("SEARCH", None, "ALL")
        assert data == [b"1"]
        m.logout()

    await asyncio.to_thread(work)


async def test_imaplib_starttls_and_logindisabled(running: Running) -> None:
    def work() -> None:
        m = imaplib.IMAP4("127.0.0.1", running.imap.port, timeout=30)
        assert "LOGINDISABLED" in m.capabilities and "STARTTLS" in m.capabilities
        try:
            m.login(ADDRESS, PASSWORD)
            raise AssertionError("LOGIN before TLS must fail")
        except imaplib.IMAP4.error as e:
            assert "PRIVACYREQUIRED" in str(e)
        ctx = running.certs.client_context()
        ctx.check_hostname = False
        m.starttls(ssl_context=ctx)
        m.login(ADDRESS, PASSWORD)
        assert m.select("INBOX")[0] == "OK"
        m.logout()

    await asyncio.to_thread(work)


async def test_imaplib_bad_password(running: Running) -> None:
    def work() -> None:
        m = _imaps(running)
        try:
            m.login(ADDRESS, "wrong password here")
            raise AssertionError("must fail")
        except imaplib.IMAP4.error as e:
            assert "AUTHENTICATIONFAILED" in str(e)
        m.logout()

    await asyncio.to_thread(work)
