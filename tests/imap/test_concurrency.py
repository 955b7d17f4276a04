"""Two sessions on one mailbox: new mail, flag changes and expunges reach the other session at the
right moments, with exact MSN/UID bookkeeping (RFC 3501 §7.4.1, RFC 9051 §7.5.1)."""

from __future__ import annotations

import asyncio
import re

import pytest

from .conftest import Client, Env, message


@pytest.fixture
async def pair(env: Env) -> tuple[Client, Client]:
    a, b = Client(env), Client(env)
    for c in (a, b):
        await c.start()
        await c.login()
    yield a, b
    await a.close()
    await b.close()


async def test_flags_and_new_mail_on_noop(env: Env, pair: tuple[Client, Client]) -> None:
    a, b = pair
    await env.deliver(message("1"))
    await a.cmd("s SELECT INBOX")
    await b.cmd("s SELECT INBOX")
    await a.cmd("x STORE 1 +FLAGS (\\Flagged)")
    await env.deliver(message("2"))
    r = await b.cmd("n NOOP")
    assert "* 1 FETCH (UID 1 FLAGS (\\Flagged))" in r and "* 2 EXISTS" in r


async def test_expunge_held_back_during_fetch(env: Env, pair: tuple[Client, Client]) -> None:
    a, b = pair
    for i in range(3):
        await env.deliver(message(str(i)))
    await a.cmd("s SELECT INBOX")
    await b.cmd("s SELECT INBOX")
    await a.cmd("x STORE 2 +FLAGS (\\Deleted)")
    await a.cmd("y EXPUNGE")
    # FETCH / STORE / SEARCH by sequence number must not announce the expunge: numbers stay stable.
    r = await b.cmd("f FETCH 3 (UID)")
    assert "EXPUNGE" not in r and "* 3 FETCH (UID 3)" in r
    r = await b.cmd("g SEARCH ALL")
    assert "EXPUNGE" not in r and "* SEARCH 1 2 3" in r
    # UID commands and NOOP may announce it.
    r = await b.cmd("h NOOP")
    assert "* 2 EXPUNGE" in r
    r = await b.cmd("i FETCH 2 (UID)")
    assert "* 2 FETCH (UID 3)" in r


async def test_idle_woken_by_other_session(env: Env, pair: tuple[Client, Client]) -> None:
    a, b = pair
    await env.deliver(message("1"))
    await a.cmd("s SELECT INBOX")
    await b.cmd("s SELECT INBOX")
    b.conn.feed(b"i IDLE\r\n")
    assert (await b.read_until(b"\r\n")).startswith(b"+ ")
    raw = message("appended by a")
    await a.cmd(b"ap APPEND INBOX {%d+}\r\n" % len(raw) + raw)
    assert b"* 2 EXISTS" in await b.read_until(b"EXISTS\r\n")
    await a.cmd("st STORE 1 +FLAGS (\\Seen)")
    assert b"FLAGS (\\Seen)" in await b.read_until(b")\r\n")
    await a.cmd("d STORE 1 +FLAGS (\\Deleted)")
    await b.read_until(b")\r\n")
    await a.cmd("e EXPUNGE")
    assert b"* 1 EXPUNGE" in await b.read_until(b"EXPUNGE\r\n")
    r = await b.cmd("DONE", tag="i")
    assert "i OK" in r
    r = await b.cmd("f FETCH 1:* (UID)")
    assert "* 1 FETCH (UID 2)" in r


async def test_concurrent_stores_and_appends(env: Env, pair: tuple[Client, Client]) -> None:
    a, b = pair
    for i in range(10):
        await env.deliver(message(str(i)))
    await a.cmd("s SELECT INBOX")
    await b.cmd("s SELECT INBOX")

    async def worker(c: Client, flag: str) -> None:
        for i in range(1, 11):
            r = await c.cmd(f"w{i} STORE {i} +FLAGS ({flag})")
            assert f"w{i} OK" in r

    await asyncio.gather(worker(a, "$A"), worker(b, "$B"))
    r = await a.cmd("z FETCH 1:* (FLAGS)")
    assert r.count("$A $B") == 10


async def test_store_on_a_stale_view_still_writes(env: Env, pair: tuple[Client, Client]) -> None:
    """A STORE that changes nothing is answered from a read of the store, never from the session's
    view: here a's view still says \\Seen after b removed it, and a's +FLAGS \\Seen must set it."""
    a, b = pair
    await env.deliver(message("1"))
    await a.cmd("s SELECT INBOX")
    await b.cmd("s SELECT INBOX")
    assert "FLAGS (\\Seen)" in await a.cmd("x STORE 1 +FLAGS (\\Seen)")
    assert "FLAGS ()" in await b.cmd("y STORE 1 -FLAGS (\\Seen)")
    assert "z OK" in await a.cmd("z STORE 1 +FLAGS.SILENT (\\Seen)")
    r = await b.cmd("f FETCH 1 (FLAGS)")
    assert "FLAGS (\\Seen)" in r
    # And a STORE that really is a no-op answers with the current flags, MODSEQ unchanged.
    r1 = await a.cmd("m1 FETCH 1 (MODSEQ)")
    r2 = await a.cmd("w STORE 1 +FLAGS (\\Seen)")
    assert "FLAGS (\\Seen)" in r2 and "w OK" in r2
    r3 = await a.cmd("m2 FETCH 1 (MODSEQ)")
    assert re.search(r"MODSEQ \((\d+)\)", r1).group(1) == re.search(r"MODSEQ \((\d+)\)", r3).group(1)


async def test_writer_that_does_not_publish_is_seen_by_polling(env: Env) -> None:
    from .conftest import fast_settings

    from mssante.imap.mime import summarize
    from mssante.store.mail import deliver

    import datetime as dt

    c = Client(env, settings=fast_settings(poll_interval=0.0))
    await c.start()
    await c.login()
    await c.cmd("s SELECT INBOX")
    raw = message("silent writer")
    e, b = summarize(raw)
    async with env.services.sessions() as s, s.begin():  # no notifier.publish() after this commit
        await deliver(s, raw, [env.mailbox_id], internaldate=dt.datetime.now(dt.timezone.utc), envelope=e,
                      bodystructure=b)
    assert "* 1 EXISTS" in await c.cmd("n NOOP")
    await c.close()
