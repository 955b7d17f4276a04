"""imapclient and aioimaplib against the running listener over implicit TLS."""

from __future__ import annotations

import asyncio

import aioimaplib
from imapclient import IMAPClient

from .conftest import ADDRESS, PASSWORD, Running, message

MULTIPART = (
    b"From: =?utf-8?q?Labo_S=C3=A9gur?= <labo@op-b.test>\r\nTo: dr.house@op-a.test\r\n"
    b"Subject: =?utf-8?q?R=C3=A9sultats?=\r\nMessage-ID: <m1@op-b.test>\r\nMIME-Version: 1.0\r\n"
    b"Disposition-Notification-To: labo@op-b.test\r\n"
    b'Content-Type: multipart/mixed; boundary="xx"\r\n\r\n'
    b"--xx\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    b"H=C3=A9moglobine normale\r\n"
    b"--xx\r\nContent-Type: application/pdf; name=cr.pdf\r\nContent-Disposition: attachment; filename=cr.pdf\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQKJcfs\r\n--xx--\r\n"
)


def _client(r: Running) -> IMAPClient:
    ctx = r.certs.client_context()
    return IMAPClient("localhost", port=r.imaps.port, ssl=True, ssl_context=ctx, timeout=30)


async def test_imapclient_fetch_structures_and_move(running: Running) -> None:
    await running.env.deliver(MULTIPART)
    await running.env.deliver(message("plain"))

    def work() -> None:
        c = _client(running)
        c.login(ADDRESS, PASSWORD)
        caps = c.capabilities()
        for cap in (b"IDLE", b"UIDPLUS", b"MOVE", b"CONDSTORE", b"QRESYNC", b"SPECIAL-USE", b"ESEARCH"):
            assert cap in caps
        info = c.select_folder("INBOX")
        assert info[b"EXISTS"] == 2 and b"HIGHESTMODSEQ" in info
        data = c.fetch([1], ["ENVELOPE", "BODYSTRUCTURE", "BODY.PEEK[1]", "BINARY.PEEK[1]", "BODY.PEEK[2.MIME]",
                             "BINARY.PEEK[2]", "BODY.PEEK[HEADER.FIELDS (SUBJECT)]", "FLAGS"])
        d = data[1]
        env = d[b"ENVELOPE"]
        assert env.subject == b"=?utf-8?q?R=C3=A9sultats?=" and env.from_[0].host == b"op-b.test"
        bs = d[b"BODYSTRUCTURE"]
        assert bs.is_multipart and bs[1].upper() == b"MIXED"
        assert d[b"BODY[1]"] == b"H=C3=A9moglobine normale"
        assert d[b"BINARY[1]"] == "Hémoglobine normale".encode()
        assert d[b"BINARY[2]"].startswith(b"%PDF-1.4")
        assert b"attachment" in d[b"BODY[2.MIME]"]
        assert d[b"BODY[HEADER.FIELDS (SUBJECT)]"].startswith(b"Subject:")
        assert b"\\Seen" not in d[b"FLAGS"]
        # UTF-8 search on decoded headers and bodies.
        assert c.search(["SUBJECT", "Résultats"], charset="UTF-8") == [1]
        assert c.search(["BODY", "hémoglobine"], charset="UTF-8") == [1]
        assert c.search(["FROM", "labo"]) == [1]
        # MOVE with COPYUID.
        c.move([2], "Archive")
        assert c.select_folder("Archive")[b"EXISTS"] == 1
        c.logout()

    await asyncio.to_thread(work)


async def test_imapclient_condstore_store(running: Running) -> None:
    await running.env.deliver(message("a"))
    await running.env.deliver(message("b"))

    def work() -> None:
        c = _client(running)
        c.login(ADDRESS, PASSWORD)
        c.enable("CONDSTORE")
        info = c.select_folder("INBOX")
        ms = info[b"HIGHESTMODSEQ"]
        c.add_flags([1], [b"\\Flagged"])
        changed = c.fetch([1, 2], ["FLAGS"], modifiers=[f"CHANGEDSINCE {ms}"])
        assert list(changed) == [1] and b"MODSEQ" in changed[1]
        assert c.folder_status("INBOX", ["HIGHESTMODSEQ"])[b"HIGHESTMODSEQ"] > ms
        c.logout()

    await asyncio.to_thread(work)


async def test_aioimaplib_idle_sees_delivery(running: Running) -> None:
    cl = aioimaplib.IMAP4_SSL(host="localhost", port=running.imaps.port, ssl_context=running.certs.client_context())
    await cl.wait_hello_from_server()
    await cl.login(ADDRESS, PASSWORD)
    await cl.select("INBOX")
    idle = await cl.idle_start(timeout=30)
    await running.env.deliver(message("idle wake-up"))
    msgs = await cl.wait_server_push(timeout=10)
    assert any(b"EXISTS" in (m if isinstance(m, bytes) else str(m).encode()) for m in msgs), msgs
    cl.idle_done()
    await asyncio.wait_for(idle, 10)
    await cl.logout()
