"""COPY / MOVE / UID variants with COPYUID (RFC 4315) and expunge bookkeeping (RFC 6851)."""

from __future__ import annotations

from .conftest import Client, Env, message


async def test_copy(env: Env, logged: Client) -> None:
    for i in range(3):
        await env.deliver(message(f"m{i}"))
    r = await logged.cmd("s SELECT Trash")
    await logged.cmd("s SELECT INBOX")
    r = await logged.cmd("a COPY 1:2 Trash")
    assert "a OK [COPYUID " in r and " 1:2 1:2]" in r
    r = await logged.cmd("b UID COPY 3 Trash")
    assert " 3 3]" in r
    assert "c NO [TRYCREATE]" in await logged.cmd("c COPY 1 Nowhere")
    r = await logged.cmd("d STATUS Trash (MESSAGES)")
    assert "MESSAGES 3" in r


async def test_move(env: Env, logged: Client) -> None:
    for i in range(4):
        await env.deliver(message(f"m{i}"))
    await logged.cmd("s SELECT INBOX")
    r = await logged.cmd("a MOVE 2:3 Archive")
    assert "* OK [COPYUID" in r and "* 3 EXPUNGE\r\n* 2 EXPUNGE" in r and "a OK" in r
    r = await logged.cmd("b FETCH 1:* (UID)")
    assert "* 1 FETCH (UID 1)" in r and "* 2 FETCH (UID 4)" in r
    r = await logged.cmd("c UID MOVE 4 Archive")
    assert "* 2 EXPUNGE" in r
    r = await logged.cmd("d SELECT Archive")
    assert "* 3 EXISTS" in r


async def test_move_with_qresync_gives_vanished(env: Env, logged: Client) -> None:
    for i in range(2):
        await env.deliver(message(f"m{i}"))
    await logged.cmd("e ENABLE QRESYNC")
    await logged.cmd("s SELECT INBOX")
    r = await logged.cmd("a UID MOVE 1:2 Archive")
    assert "* VANISHED 1:2" in r
