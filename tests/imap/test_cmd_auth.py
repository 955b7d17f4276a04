"""LOGIN and AUTHENTICATE (PLAIN, LOGIN, SASL-IR, cancel), failures and the audit trail."""

from __future__ import annotations

import base64

from sqlalchemy import select

from .conftest import ADDRESS, PASSWORD, Client, Env

from mssante.store.models import AuditEvent


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


async def test_login_ok_and_capabilities(client: Client) -> None:
    r = await client.login()
    assert "l1 OK [CAPABILITY" in r and "IDLE" in r and "AUTH=" not in r.split("l1 OK")[1]


async def test_authenticate_plain_sasl_ir(client: Client) -> None:
    r = await client.cmd(f"a AUTHENTICATE PLAIN {b64(chr(0) + ADDRESS + chr(0) + PASSWORD)}")
    assert "a OK" in r


async def test_authenticate_plain_continuation(client: Client) -> None:
    client.conn.feed(b"a AUTHENTICATE PLAIN\r\n")
    assert (await client.read_until(b"\r\n")).startswith(b"+")
    r = await client.cmd(b64("\0" + ADDRESS + "\0" + PASSWORD), tag="a")
    assert "a OK" in r


async def test_authenticate_login_mechanism(client: Client) -> None:
    client.conn.feed(b"a AUTHENTICATE LOGIN\r\n")
    assert b"VXNlcm5hbWU6" in await client.read_until(b"\r\n")
    client.conn.feed(b64(ADDRESS).encode() + b"\r\n")
    assert b"UGFzc3dvcmQ6" in await client.read_until(b"\r\n")
    assert "a OK" in await client.cmd(b64(PASSWORD), tag="a")


async def test_authenticate_cancel_and_bad_base64(client: Client) -> None:
    client.conn.feed(b"a AUTHENTICATE PLAIN\r\n")
    await client.read_until(b"\r\n")
    assert "a BAD" in await client.cmd("*", tag="a")
    assert "b BAD" in await client.cmd("b AUTHENTICATE PLAIN !!notbase64")


async def test_failures_audited_and_rate_limited(env: Env, client: Client) -> None:
    for i in range(6):
        r = await client.cmd(f'f{i} LOGIN {ADDRESS} "wrong password {i}"')
        assert f"f{i} NO" in r
    # The limiter now refuses even the right password (temporary refusal).
    r = await client.cmd(f'g LOGIN {ADDRESS} "{PASSWORD}"')
    assert "g NO" in r
    await client.flush_audit()
    async with env.services.sessions() as s:
        rows = (await s.scalars(select(AuditEvent).where(AuditEvent.action == "imap.login"))).all()
    assert sum(1 for e in rows if e.outcome == "failure") >= 6
    assert all("password" not in (e.details or {}) for e in rows)


async def test_unknown_mechanism(client: Client) -> None:
    assert "a NO" in await client.cmd("a AUTHENTICATE CRAM-MD5")


async def test_plaintext_listener_refuses_login_before_tls(env: Env) -> None:
    c = Client(env, tls=False, starttls=True)
    greeting = await c.start()
    assert b"LOGINDISABLED" in greeting and b"AUTH=PLAIN" not in greeting
    assert "PRIVACYREQUIRED" in await c.login()
    r = await c.cmd("s STARTTLS")
    assert "s OK" in r
    assert "l1 OK" in await c.login()
    await c.close()
