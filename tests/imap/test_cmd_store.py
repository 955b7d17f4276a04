"""STORE: +/-/replace, .SILENT, keywords, UNCHANGEDSINCE + MODIFIED, MODSEQ bump, read receipts."""

from __future__ import annotations

import re

from .conftest import Client, Env, message

from mssante.imap.session import ReadReceipt


async def test_store_modes(env: Env, logged: Client) -> None:
    await env.deliver(message("a"))
    await logged.cmd("s SELECT INBOX")
    r = await logged.cmd("a STORE 1 +FLAGS (\\Flagged $Urgent)")
    assert "* 1 FETCH (FLAGS ($Urgent \\Flagged))" in r
    r = await logged.cmd("b STORE 1 -FLAGS ($Urgent)")
    assert "FLAGS (\\Flagged)" in r
    r = await logged.cmd("c STORE 1 FLAGS (\\Seen)")
    assert "FLAGS (\\Seen)" in r
    r = await logged.cmd("d STORE 1 +FLAGS.SILENT (\\Answered)")
    assert "FETCH" not in r and "d OK" in r
    r = await logged.cmd("e UID STORE 1 +FLAGS (\\Draft)")
    assert "UID 1" in r
    r = await logged.cmd("f STORE 1 +FLAGS (\\Recent)")
    assert "\\Recent" not in r


async def test_modseq_and_unchangedsince(env: Env, logged: Client) -> None:
    await env.deliver(message("a"))
    await env.deliver(message("b"))
    r = await logged.cmd("s SELECT INBOX (CONDSTORE)")
    hm = int(re.search(r"HIGHESTMODSEQ (\d+)", r).group(1))
    r = await logged.cmd("a STORE 1 +FLAGS (\\Seen)")
    m1 = int(re.search(r"MODSEQ \((\d+)\)", r).group(1))
    assert m1 > hm
    r = await logged.cmd(f"b STORE 1:2 (UNCHANGEDSINCE {hm}) +FLAGS (\\Flagged)")
    assert "b OK [MODIFIED 1]" in r and "* 2 FETCH" in r
    r = await logged.cmd("c STATUS INBOX (HIGHESTMODSEQ)")
    assert int(re.search(r"HIGHESTMODSEQ (\d+)", r).group(1)) > m1
    # A STORE that changes nothing does not bump MODSEQ.
    r1 = await logged.cmd("d STATUS INBOX (HIGHESTMODSEQ)")
    await logged.cmd("e STORE 1 +FLAGS (\\Seen)")
    r2 = await logged.cmd("f STATUS INBOX (HIGHESTMODSEQ)")
    assert re.search(r"HIGHESTMODSEQ (\d+)", r1).group(1) == re.search(r"HIGHESTMODSEQ (\d+)", r2).group(1)


async def test_read_receipt_event_once(env: Env) -> None:
    events: list[ReadReceipt] = []
    c = Client(env, on_read_receipt=events.append)
    await c.start()
    await c.login()
    await env.deliver(message("mdn", extra="Disposition-Notification-To: <a@op-b.test>\r\n"))
    await env.deliver(message("no mdn"))
    await c.cmd("s SELECT INBOX")
    await c.cmd("a FETCH 1:2 BODY[]")
    await c.cmd("b STORE 1 -FLAGS (\\Seen)")
    await c.cmd("c STORE 1:2 +FLAGS (\\Seen)")
    assert len(events) == 2  # first \Seen, then again after the user marked it unread and read again
    assert events[0].uid == 1 and events[0].notify_to == "<a@op-b.test>" and events[0].folder == "INBOX"
    await c.close()
