"""EXPUNGE and UID EXPUNGE: MSN bookkeeping, audit, Expunged rows with MODSEQ."""

from __future__ import annotations

from sqlalchemy import select

from .conftest import Client, Env, message

from mssante.store.models import AuditEvent, Expunged


async def test_expunge_msns(env: Env, logged: Client) -> None:
    for i in range(5):
        await env.deliver(message(f"m{i}"))
    await logged.cmd("s SELECT INBOX")
    await logged.cmd("a STORE 2,4,5 +FLAGS (\\Deleted)")
    r = await logged.cmd("b EXPUNGE")
    # Highest first, so each number is valid when sent.
    assert "* 5 EXPUNGE\r\n* 4 EXPUNGE\r\n* 2 EXPUNGE\r\n" in r
    r = await logged.cmd("c FETCH 1:* (UID)")
    assert "* 1 FETCH (UID 1)" in r and "* 2 FETCH (UID 3)" in r and "* 3" not in r
    async with env.services.sessions() as s:
        rows = (await s.scalars(select(Expunged))).all()
        audit = (await s.scalars(select(AuditEvent).where(AuditEvent.action == "imap.expunge"))).all()
    assert sorted(r.uid for r in rows) == [2, 4, 5] and len({r.modseq for r in rows}) == 1
    assert audit and audit[0].details["count"] == 3


async def test_uid_expunge_only_named(env: Env, logged: Client) -> None:
    for i in range(3):
        await env.deliver(message(f"m{i}"))
    await logged.cmd("s SELECT INBOX")
    await logged.cmd("a STORE 1:3 +FLAGS (\\Deleted)")
    r = await logged.cmd("b UID EXPUNGE 2")
    assert "* 2 EXPUNGE" in r and "* 1 EXPUNGE" not in r and "* 3 EXPUNGE" not in r


async def test_expunge_read_only(env: Env, logged: Client) -> None:
    await logged.cmd("s EXAMINE INBOX")
    assert "a NO [READ-ONLY]" in await logged.cmd("a EXPUNGE")
