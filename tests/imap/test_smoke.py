from __future__ import annotations

from .conftest import Client, Env, message


async def test_basic_flow(env: Env, logged: Client) -> None:
    await env.deliver(message("one"))
    await env.deliver(message("two"))
    r = await logged.cmd("a SELECT INBOX")
    print(r)
    assert "* 2 EXISTS" in r and "a OK [READ-WRITE]" in r
    r = await logged.cmd("b FETCH 1:* (UID FLAGS ENVELOPE BODYSTRUCTURE RFC822.SIZE INTERNALDATE)")
    print(r)
    r = await logged.cmd("c FETCH 1 BODY[]")
    print(r)
    assert "\\Seen" in r
    r = await logged.cmd("d SEARCH UNSEEN")
    print(r)
    assert "* SEARCH 2" in r
    r = await logged.cmd("e STORE 2 +FLAGS (\\Deleted)")
    r = await logged.cmd("f EXPUNGE")
    print(r)
    assert "* 2 EXPUNGE" in r
    r = await logged.cmd('g LIST "" "*"')
    print(r)
