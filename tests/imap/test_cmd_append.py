"""APPEND: APPENDUID, TRYCREATE, flags and dates, MULTIAPPEND, size refused before reading."""

from __future__ import annotations

from .conftest import Client, Env, fast_settings, message


async def test_append(logged: Client) -> None:
    raw = message("appended")
    r = await logged.cmd(b'a APPEND Drafts (\\Draft $Work) " 5-Nov-2026 10:00:00 +0100" {%d+}\r\n' % len(raw) + raw)
    assert "a OK [APPENDUID " in r and " 1]" in r
    await logged.cmd("s SELECT Drafts")
    r = await logged.cmd("b FETCH 1 (FLAGS INTERNALDATE ENVELOPE)")
    assert "$Work \\Draft" in r and '" 5-Nov-2026 09:00:00 +0000"' in r and '"appended"' in r


async def test_append_sync_literal_and_multiappend(logged: Client) -> None:
    a, b = message("one"), message("two")
    logged.conn.feed(b"a APPEND INBOX {%d}\r\n" % len(a))
    assert (await logged.read_until(b"\r\n")).startswith(b"+ ")
    r = await logged.cmd(a + b" (\\Seen) {%d+}\r\n" % len(b) + b, tag="a")
    assert "a OK [APPENDUID " in r and " 1:2]" in r


async def test_append_trycreate_and_selected_exists(env: Env, logged: Client) -> None:
    raw = message("x")
    assert "NO [TRYCREATE]" in await logged.cmd(b"a APPEND Nowhere {%d+}\r\n" % len(raw) + raw)
    await logged.cmd("s SELECT INBOX")
    r = await logged.cmd(b"b APPEND INBOX {%d+}\r\n" % len(raw) + raw)
    assert "* 1 EXISTS" in r


async def test_append_too_big_refused_before_literal(env: Env) -> None:
    c = Client(env, settings=fast_settings(append_limit=1000))
    await c.start()
    await c.login()
    r = await c.cmd("a APPEND INBOX {5000}")
    assert "a NO [TOOBIG]" in r
    assert "APPENDLIMIT=1000" in await c.cmd("b CAPABILITY")
    await c.close()


async def test_append_literal8_and_binary_fetch(logged: Client) -> None:
    # RFC 3516 §4.4: APPEND with a literal8 (binary content, NUL allowed).
    pdf = b"%PDF\x00\x01\x02binary"
    raw = (b"From: a@op-b.test\r\nSubject: bin\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
           b"--b\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: binary\r\n\r\n" + pdf + b"\r\n--b--\r\n")
    r = await logged.cmd(b"a APPEND INBOX ~{%d+}\r\n" % len(raw) + raw)
    assert "a OK [APPENDUID" in r
    await logged.cmd("s SELECT INBOX")
    r = await logged.cmd("b FETCH 1 (BINARY.PEEK[1] BINARY.SIZE[1])")
    assert "BINARY[1] ~{%d}\r\n" % len(pdf) in r and "BINARY.SIZE[1] %d" % len(pdf) in r
    assert "c BAD" in await logged.cmd(b"c APPEND INBOX {3+}\r\na\x00b")  # NUL needs literal8


async def test_same_bytes_twice_share_one_blob(env: Env, logged: Client) -> None:
    from sqlalchemy import func, select

    from mssante.store.models import Blob

    raw = message("twice")
    for tag in ("a", "b"):
        assert f"{tag} OK" in await logged.cmd(f"{tag} APPEND INBOX {{{len(raw)}+}}\r\n".encode() + raw)
    await env.deliver(raw)
    async with env.services.sessions() as s:
        assert await s.scalar(select(func.count()).select_from(Blob)) == 1
    assert "MESSAGES 3" in await logged.cmd("c STATUS INBOX (MESSAGES)")
