"""Protocol abuse against the MTA on real sockets: smuggling, STARTTLS injection, slowloris, limits."""

from __future__ import annotations

import asyncio

from sqlalchemy import select

from .clients import RawClient
from .operators import Operator, Space
from mssante.store.models import Message


async def tls_session(a: Operator, space: Space, issued) -> RawClient:
    c = await RawClient.connect(a.ip, a.mta_port)
    await c.reply()
    await c.cmd("EHLO mx.op-b.test")
    assert (await c.starttls(space.client_ctx(issued))).startswith("220")
    await c.cmd("EHLO mx.op-b.test")
    return c


async def count(op: Operator) -> int:
    async with op.services.sessions() as s:
        return len((await s.scalars(select(Message))).all())


async def test_smuggling_bare_lf_end_of_data_is_refused(ops: dict[str, Operator], space: Space) -> None:
    a, b = ops["a"], ops["b"]
    await a.add_mailbox("dr.martin")
    await a.add_mailbox("victim")
    c = await tls_session(a, space, b.serv)
    assert (await c.cmd("MAIL FROM:<sec@op-b.test>")).startswith("250")
    assert (await c.cmd("RCPT TO:<dr.martin@op-a.test>")).startswith("250")
    assert (await c.cmd("DATA")).startswith("354")
    # A "\n.\n" (and "\r\n.\n") fake end of data followed by a smuggled transaction, then the real end.
    await c.send(b"Subject: a\r\n\r\nhello\n.\nMAIL FROM:<ceo@op-b.test>\r\nRCPT TO:<victim@op-a.test>\r\n"
                 b"DATA\r\nSubject: smuggled\r\n\r\nx\r\n.\n\r\n.\r\n")
    r = await c.reply()
    assert r.startswith("550 5.6.11"), r
    # The connection is in a clean state: nothing smuggled was executed, a new transaction works.
    assert (await c.cmd("MAIL FROM:<sec@op-b.test>")).startswith("250")
    await c.cmd("QUIT")
    await c.close()
    assert await count(a) == 0


async def test_smuggling_bare_cr_is_refused(ops: dict[str, Operator], space: Space) -> None:
    a, b = ops["a"], ops["b"]
    await a.add_mailbox("dr.martin")
    c = await tls_session(a, space, b.serv)
    await c.cmd("MAIL FROM:<sec@op-b.test>")
    await c.cmd("RCPT TO:<dr.martin@op-a.test>")
    await c.cmd("DATA")
    await c.send(b"Subject: a\r\n\r\nhello\r.\rMAIL FROM:<x@op-b.test>\r\n.\r\n")
    assert (await c.reply()).startswith("550 5.6.11")
    await c.close()
    assert await count(a) == 0


async def test_dot_stuffing_is_undone(ops: dict[str, Operator], space: Space) -> None:
    a, b = ops["a"], ops["b"]
    await a.add_mailbox("dr.martin")
    c = await tls_session(a, space, b.serv)
    await c.cmd("MAIL FROM:<sec@op-b.test>")
    await c.cmd("RCPT TO:<dr.martin@op-a.test>")
    await c.cmd("DATA")
    await c.send(b"Subject: a\r\n\r\n..leading dot\r\n.\r\n")
    assert (await c.reply()).startswith("250 2.0.0")
    await c.close()
    from mssante.store.models import Blob
    async with a.services.sessions() as s:
        raw = await s.scalar(select(Blob.data))
    assert raw.endswith(b"\r\n.leading dot\r\n")


async def test_starttls_injection_is_discarded(ops: dict[str, Operator], space: Space) -> None:
    a, b = ops["a"], ops["b"]
    await a.add_mailbox("dr.martin")
    c = await RawClient.connect(a.ip, a.mta_port)
    await c.reply()
    await c.cmd("EHLO mx.op-b.test")
    # Plaintext pipelined after STARTTLS (CVE-2011-0411 class): must not be executed after the upgrade.
    await c.send(b"STARTTLS\r\nMAIL FROM:<sec@op-b.test>\r\n")
    assert (await c.reply()).startswith("220")
    await c.writer.start_tls(space.client_ctx(b.serv), server_hostname="mx")
    # RFC 3207 §4.2: the session is reset; the injected MAIL produced no reply and no state.
    r = await c.cmd("RCPT TO:<dr.martin@op-a.test>")
    assert r.startswith("503"), r
    r = await c.cmd("MAIL FROM:<sec@op-b.test>")
    assert r.startswith("503 5.5.1"), r  # EHLO needed again after TLS
    await c.cmd("EHLO mx.op-b.test")
    assert (await c.cmd("MAIL FROM:<sec@op-b.test>")).startswith("250")
    await c.close()


async def test_slowloris_command_timeout(ops: dict[str, Operator]) -> None:
    a = ops["a"]  # command_timeout = 5 s in the fixture
    c = await RawClient.connect(a.ip, a.mta_port)
    await c.reply()
    await c.send(b"EHLO slow")  # never finishes the line
    r = await c.reply(timeout=30)
    assert r.startswith("421 4.4.2"), r
    assert await asyncio.wait_for(c.reader.read(), 10) == b""
    await c.close()


async def test_long_command_and_bad_command_budget(ops: dict[str, Operator]) -> None:
    a = ops["a"]
    c = await RawClient.connect(a.ip, a.mta_port)
    await c.reply()
    r = await c.cmd("NOOP " + "x" * 600)
    assert r.startswith("500 5.5.2"), r
    replies = []
    for _ in range(25):
        try:
            replies.append(await c.cmd("FOO"))
        except ConnectionError:
            break
    assert any("421" in r for r in replies)
    await c.close()


async def test_long_data_line_is_refused(ops: dict[str, Operator], space: Space) -> None:
    a, b = ops["a"], ops["b"]
    await a.add_mailbox("dr.martin")
    c = await tls_session(a, space, b.serv)
    await c.cmd("MAIL FROM:<sec@op-b.test>")
    await c.cmd("RCPT TO:<dr.martin@op-a.test>")
    await c.cmd("DATA")
    await c.send(b"Subject: a\r\n\r\n" + b"y" * 5000 + b"\r\n.\r\n")
    assert (await c.reply()).startswith("500 5.5.2")
    assert (await c.cmd("NOOP")).startswith("250")
    await c.close()


async def test_header_too_large(ops: dict[str, Operator], space: Space) -> None:
    a, b = ops["a"], ops["b"]
    await a.add_mailbox("dr.martin")
    c = await tls_session(a, space, b.serv)
    await c.cmd("MAIL FROM:<sec@op-b.test>")
    await c.cmd("RCPT TO:<dr.martin@op-a.test>")
    await c.cmd("DATA")
    line = b"X-Filler: " + b"z" * 900 + b"\r\n"
    await c.send(b"Subject: a\r\n" + line * 300 + b"\r\nbody\r\n.\r\n")
    assert (await c.reply()).startswith("552 5.3.4")
    await c.close()


async def test_per_peer_connection_limit(ops: dict[str, Operator]) -> None:
    a = ops["a"]
    a.services.config.smtp.max_connections_per_peer = 2
    from .test_mta import restart

    await restart(a)
    c1 = await RawClient.connect(a.ip, a.mta_port)
    c2 = await RawClient.connect(a.ip, a.mta_port)
    assert (await c1.reply()).startswith("220") and (await c2.reply()).startswith("220")
    c3 = await RawClient.connect(a.ip, a.mta_port)
    assert (await c3.reply()).startswith("421 4.7.0")
    for c in (c1, c2, c3):
        await c.close()


async def test_pipelining(ops: dict[str, Operator], space: Space) -> None:
    """RFC 2920: MAIL, RCPTs and DATA in one write get their replies in order."""
    a, b = ops["a"], ops["b"]
    await a.add_mailbox("dr.martin")
    c = await tls_session(a, space, b.serv)
    await c.send(b"MAIL FROM:<sec@op-b.test>\r\nRCPT TO:<dr.martin@op-a.test>\r\nRCPT TO:<nobody@op-a.test>\r\nDATA\r\n")
    assert (await c.reply()).startswith("250 2.1.0")
    assert (await c.reply()).startswith("250 2.1.5")
    assert (await c.reply()).startswith("550 5.1.1")
    assert (await c.reply()).startswith("354")
    await c.send(b"Subject: p\r\n\r\nx\r\n.\r\nQUIT\r\n")
    assert (await c.reply()).startswith("250 2.0.0")
    assert (await c.reply()).startswith("221")
    await c.close()
    assert await count(a) == 1


async def test_malformed_header_is_still_delivered_inbound(ops: dict[str, Operator], space: Space) -> None:
    a, b = ops["a"], ops["b"]
    await a.add_mailbox("dr.martin")
    c = await tls_session(a, space, b.serv)
    await c.cmd("MAIL FROM:<sec@op-b.test>")
    await c.cmd("RCPT TO:<dr.martin@op-a.test>")
    await c.cmd("DATA")
    await c.send(b"no header here\r\n.\r\n")
    assert (await c.reply()).startswith("250 2.0.0")
    await c.close()
    assert await count(a) == 1
