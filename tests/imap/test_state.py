"""Commands allowed per state (like mox's TestState) and the handler/grammar tables agreeing."""

from __future__ import annotations

from .conftest import Client, Env

from mssante.imap.handlers import HANDLERS
from mssante.imap.parser import ARGUMENTS
from mssante.imap.state import ALLOWED, State


def test_tables_agree() -> None:
    assert set(HANDLERS) == set(ARGUMENTS)
    every = set().union(*ALLOWED.values())
    assert every == set(ARGUMENTS)


async def test_not_authenticated(client: Client) -> None:
    for line in ("a SELECT INBOX", "a LIST \"\" *", "a FETCH 1 FLAGS", "a IDLE", "a ENABLE CONDSTORE",
                 "a APPEND INBOX {1+}\r\nx", "a CLOSE", "a EXPUNGE"):
        r = await client.cmd(line)
        assert "a BAD" in r, (line, r)
    assert "a OK" in await client.cmd("a NOOP")
    assert "* CAPABILITY" in await client.cmd("a CAPABILITY")
    assert "a OK" in await client.cmd("a ID NIL")


async def test_authenticated(logged: Client) -> None:
    for line in ("a FETCH 1 FLAGS", "a STORE 1 +FLAGS (\\Seen)", "a SEARCH ALL", "a CLOSE", "a UNSELECT",
                 "a EXPUNGE", "a COPY 1 Trash", "a MOVE 1 Trash", "a UID FETCH 1 FLAGS", "a CHECK"):
        r = await logged.cmd(line)
        assert "a BAD" in r, (line, r)
    r = await logged.cmd('a LOGIN x "y"')
    assert "a BAD" in r
    assert "a OK" in await logged.cmd("a NAMESPACE")


async def test_selected_and_logout(env: Env, logged: Client) -> None:
    await logged.cmd("s SELECT INBOX")
    assert logged.session.state == State.SELECTED
    assert "a OK" in await logged.cmd("a UNSELECT")
    assert logged.session.state == State.AUTHENTICATED
    r = await logged.cmd("z LOGOUT")
    assert "* BYE" in r and "z OK" in r
    assert logged.session.state == State.LOGOUT
