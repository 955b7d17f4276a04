"""SELECT / EXAMINE / UNSELECT / CLOSE, CONDSTORE and QRESYNC resynchronisation."""

from __future__ import annotations

import re

from .conftest import Client, Env, message


async def test_select_responses(env: Env, logged: Client) -> None:
    await env.deliver(message("a"))
    r = await logged.cmd("a SELECT INBOX")
    for part in ("* 1 EXISTS", "* 0 RECENT", "* FLAGS (", "PERMANENTFLAGS", "[UNSEEN 1]", "UIDVALIDITY",
                 "[UIDNEXT 2]", "HIGHESTMODSEQ", "a OK [READ-WRITE]"):
        assert part in r, part


async def test_examine_is_read_only(env: Env, logged: Client) -> None:
    await env.deliver(message("a"))
    r = await logged.cmd("a EXAMINE INBOX")
    assert "a OK [READ-ONLY]" in r
    assert "NO [READ-ONLY]" in await logged.cmd("b STORE 1 +FLAGS (\\Seen)")
    r = await logged.cmd("c FETCH 1 BODY[]")
    assert "\\Seen" not in r  # EXAMINE never sets \Seen (RFC 3501 §6.3.2)


async def test_select_missing_and_mutf7(logged: Client) -> None:
    assert "a NO [NONEXISTENT]" in await logged.cmd("a SELECT Nowhere")
    assert "b OK" in await logged.cmd("b CREATE &AMk-l&AOk-ments")
    assert "c OK" in await logged.cmd("c SELECT &AMk-l&AOk-ments")
    assert "d BAD" in await logged.cmd("d SELECT &AMk")


async def test_uidvalidity_stable(env: Env, logged: Client) -> None:
    r1 = await logged.cmd("a SELECT INBOX")
    r2 = await logged.cmd("b SELECT INBOX")
    v = re.findall(r"UIDVALIDITY (\d+)", r1 + r2)
    assert len(v) == 2 and v[0] == v[1]


async def test_close_expunges_silently(env: Env, logged: Client) -> None:
    await env.deliver(message("a"))
    await env.deliver(message("b"))
    await logged.cmd("a SELECT INBOX")
    await logged.cmd("b STORE 1 +FLAGS.SILENT (\\Deleted)")
    r = await logged.cmd("c CLOSE")
    assert "EXPUNGE" not in r and "c OK" in r
    r = await logged.cmd("d SELECT INBOX")
    assert "* 1 EXISTS" in r


async def test_qresync(env: Env, logged: Client) -> None:
    for i in range(4):
        await env.deliver(message(f"m{i}"))
    assert "ENABLED QRESYNC" in await logged.cmd("e ENABLE QRESYNC")
    r = await logged.cmd("a SELECT INBOX")
    validity = re.search(r"UIDVALIDITY (\d+)", r).group(1)
    modseq = int(re.search(r"HIGHESTMODSEQ (\d+)", r).group(1))
    await logged.cmd("b STORE 2 +FLAGS (\\Deleted \\Flagged)")
    await logged.cmd("c UID EXPUNGE 2")
    await logged.cmd("d STORE 2 +FLAGS (\\Seen)")
    r = await logged.cmd(f"f SELECT INBOX (QRESYNC ({validity} {modseq} 1:4))")
    assert "* OK [CLOSED]" in r
    assert "* VANISHED (EARLIER) 2" in r
    assert re.search(r"\* 2 FETCH \(UID 3 FLAGS \(\\Seen\) MODSEQ \(\d+\)\)", r), r
    r = await logged.cmd(f"g UID FETCH 1:* FLAGS (CHANGEDSINCE {modseq} VANISHED)")
    assert "VANISHED (EARLIER) 2" in r and "UID 3" in r and "UID 1" not in r


async def test_qresync_needs_enable(logged: Client) -> None:
    assert "a BAD" in await logged.cmd("a SELECT INBOX (QRESYNC (1 1))")
