"""Hostile input over real sockets: oversized literals, nesting, unterminated quotes, invalid
modified UTF-7, a flood of unknown commands, and a client that stops reading."""

from __future__ import annotations

import asyncio

from .conftest import ADDRESS, PASSWORD, Client, Running, fast_settings, message

from mssante.imap.server import start_imap


async def _open(r: Running) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", r.imaps.port, ssl=r.certs.client_context(),
                                                   server_hostname="localhost", limit=1 << 20)
    await reader.readline()
    return reader, writer


async def _cmd(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: bytes, tag: bytes) -> bytes:
    writer.write(line)
    await writer.drain()
    out = b""
    while True:
        ln = await asyncio.wait_for(reader.readline(), 20)
        if not ln:
            return out
        out += ln
        if ln.startswith(tag + b" "):
            return out


async def test_bad_syntax_answers(client: Client) -> None:
    assert "a BAD" in await client.cmd('a LOGIN "unterminated')
    assert "b BAD" in await client.cmd("b SELECT " + "(" * 1000)
    assert "c BAD" in await client.cmd("c SEARCH " + "(" * 200 + "ALL" + ")" * 200)
    assert "d BAD" in await client.cmd("d CREATE &Jjo")
    assert "e OK" in await client.cmd("e NOOP")


async def test_literal_over_appendlimit_is_refused_before_reading(running: Running) -> None:
    reader, writer = await _open(running)
    await _cmd(reader, writer, f'a LOGIN {ADDRESS} "{PASSWORD}"\r\n'.encode(), b"a")
    out = await _cmd(reader, writer, b"b APPEND INBOX {999999999}\r\n", b"b")
    assert out.startswith(b"b NO [TOOBIG]")
    # The server never asked for the literal and is still usable.
    assert b"c OK" in await _cmd(reader, writer, b"c NOOP\r\n", b"c")
    writer.close()


async def test_unknown_command_flood_gets_bye(running: Running) -> None:
    reader, writer = await _open(running)
    writer.write(b"".join(b"x%d FROB\r\n" % i for i in range(10_000)))
    try:
        await writer.drain()
    except ConnectionError:
        pass
    data = b""
    while True:
        try:
            chunk = await asyncio.wait_for(reader.read(65536), 20)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    assert b"* BYE too many bad commands" in data
    assert data.count(b" BAD ") <= fast_settings().bad_command_limit + 1
    writer.close()


async def test_client_that_stops_reading_is_disconnected(running: Running) -> None:
    # A big message fetched again and again by a client that never reads its socket.
    env = running.env
    await env.deliver(message("big", "y" * 1_000_000 + "\r\n"))
    listener = await start_imap(env.services, host="127.0.0.1", port=0, implicit_tls=True,
                                ssl_context=running.certs.server_context(),
                                settings=fast_settings(write_timeout=1.0, output_limit=64 * 1024))
    try:
        ctx = running.certs.client_context()
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port, ssl=ctx,
                                                       server_hostname="localhost")
        writer.transport.pause_reading()  # type: ignore[attr-defined]
        writer.write(f'a LOGIN {ADDRESS} "{PASSWORD}"\r\nb SELECT INBOX\r\n'.encode()
                     + b"".join(b"f%d FETCH 1 BODY.PEEK[]\r\n" % i for i in range(50)))
        await writer.drain()
        for _ in range(200):
            if not listener.connections:
                break
            await asyncio.sleep(0.1)
        assert not listener.connections  # dropped, not buffered forever
        writer.close()
    finally:
        await listener.stop()


async def test_tls_garbage_and_plaintext_on_tls_port(running: Running) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", running.imaps.port)
    writer.write(b"a LOGIN x y\r\n")
    await writer.drain()
    try:
        data = await asyncio.wait_for(reader.read(100), 10)
    except ConnectionResetError:
        data = b""
    assert b"OK" not in data  # a failed handshake, never an IMAP answer in plaintext
    writer.close()
    # The listener still serves proper TLS clients.
    r2, w2 = await _open(running)
    assert b"a OK" in await _cmd(r2, w2, b"a NOOP\r\n", b"a")
    w2.close()


async def test_starttls_discards_pipelined_plaintext(running: Running) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", running.imap.port)
    await reader.readline()
    # Command injection attempt: a LOGIN pipelined after STARTTLS in plaintext.
    writer.write(f's STARTTLS\r\nx LOGIN {ADDRESS} "{PASSWORD}"\r\n'.encode())
    await writer.drain()
    assert (await reader.readline()).startswith(b"s OK")
    ctx = running.certs.client_context()
    await writer.start_tls(ctx, server_hostname="localhost")
    writer.write(b"n NOOP\r\n")
    await writer.drain()
    line = await asyncio.wait_for(reader.readline(), 10)
    assert line.startswith(b"n OK"), line  # no "x OK": the injected LOGIN was thrown away
    writer.close()
