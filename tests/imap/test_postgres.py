"""Several processes' worth of servers on one PostgreSQL: IDLE on one instance is woken by a
delivery made through another (LISTEN/NOTIFY), and the store works on both backends."""

from __future__ import annotations

import asyncio

from .conftest import ADDRESS, PASSWORD, Certs, Client, Env, fast_settings, make_env, message

from mssante.imap.server import start_imap
from mssante.store.notify import PgFolderNotifier


async def test_idle_across_instances(pg_url: str, certs: Certs) -> None:
    # Two gateways: separate engines, separate LISTEN connections, one database.
    n1, n2 = PgFolderNotifier(pg_url), PgFolderNotifier(pg_url)
    await n1.start()
    await n2.start()
    e1 = await make_env(pg_url, notifier=n1)
    from mssante.store.db import make_engine, make_sessions

    engine2 = make_engine(pg_url)
    e2 = Env(type(e1.services)(config=e1.services.config, engine=engine2, sessions=make_sessions(engine2),
                               audit=e1.services.audit, metrics=e1.services.metrics, notifier=n2),
             e1.mailbox_id, e1.other_id)
    s1 = await start_imap(e1.services, host="127.0.0.1", port=0, implicit_tls=True,
                          ssl_context=certs.server_context(), settings=fast_settings())
    s2 = await start_imap(e2.services, host="127.0.0.1", port=0, implicit_tls=True,
                          ssl_context=certs.server_context(), settings=fast_settings())
    try:
        r1, w1 = await asyncio.open_connection("127.0.0.1", s1.port, ssl=certs.client_context(),
                                               server_hostname="localhost")
        await r1.readline()
        w1.write(f'a LOGIN {ADDRESS} "{PASSWORD}"\r\nb SELECT INBOX\r\nc IDLE\r\n'.encode())
        while not (await asyncio.wait_for(r1.readline(), 20)).startswith(b"+ "):
            pass
        # A message appended through the OTHER instance (its own process-local notifier never
        # reaches instance 1 except through PostgreSQL NOTIFY).
        r2, w2 = await asyncio.open_connection("127.0.0.1", s2.port, ssl=certs.client_context(),
                                               server_hostname="localhost")
        await r2.readline()
        raw = message("via instance 2")
        w2.write(f'a LOGIN {ADDRESS} "{PASSWORD}"\r\n'.encode() + b"b APPEND INBOX {%d+}\r\n" % len(raw) + raw
                 + b"\r\n")
        line = b""
        while b"EXISTS" not in line:
            line = await asyncio.wait_for(r1.readline(), 20)
        assert line == b"* 1 EXISTS\r\n"
        # And a plain delivery (mssante.store.mail.deliver, which NOTIFYs) also wakes it.
        await e2.deliver(message("delivered"))
        line = b""
        while b"EXISTS" not in line:
            line = await asyncio.wait_for(r1.readline(), 20)
        assert line == b"* 2 EXISTS\r\n"
        w1.write(b"DONE\r\n")
        assert (await asyncio.wait_for(r1.readline(), 20)).startswith(b"c OK")
        w1.close()
        w2.close()
    finally:
        await s1.stop()
        await s2.stop()
        await n1.stop()
        await n2.stop()
        await e1.services.engine.dispose()
        await engine2.dispose()


async def test_flow_on_both_backends(env_any: Env) -> None:
    c = Client(env_any)
    await c.start()
    assert "OK" in await c.login()
    for i in range(3):
        await env_any.deliver(message(f"m{i}"))
    assert "* 3 EXISTS" in await c.cmd("s SELECT INBOX")
    assert "FLAGS (\\Seen)" in await c.cmd("a STORE 1 +FLAGS (\\Seen)")
    await c.cmd("b STORE 2 +FLAGS (\\Deleted)")
    assert "* 2 EXPUNGE" in await c.cmd("c EXPUNGE")
    assert "COPYUID" in await c.cmd("d MOVE 1 Archive")
    raw = message("app")
    assert "APPENDUID" in await c.cmd(b"e APPEND INBOX {%d+}\r\n" % len(raw) + raw)
    assert "* SEARCH 1 2" in await c.cmd("f SEARCH ALL")
    assert "g OK" in await c.cmd("g CREATE A/B")
    assert "h OK" in await c.cmd("h RENAME A X")
    await c.close()


async def test_highestmodseq_survives_restart(env_any: Env) -> None:
    c = Client(env_any)
    await c.start()
    await c.login()
    await env_any.deliver(message("m"))
    await c.cmd("s SELECT INBOX")
    await c.cmd("a STORE 1 +FLAGS (\\Seen)")
    before = await c.cmd("b STATUS INBOX (HIGHESTMODSEQ UIDVALIDITY)")
    await c.close()
    # A new engine (a restarted process) sees the same counters.
    from mssante.store.db import make_engine, make_sessions

    engine = make_engine(str(env_any.services.engine.url.render_as_string(hide_password=False)))
    env2 = Env(type(env_any.services)(config=env_any.services.config, engine=engine,
                                      sessions=make_sessions(engine), audit=env_any.services.audit,
                                      metrics=env_any.services.metrics, notifier=env_any.services.notifier),
               env_any.mailbox_id, env_any.other_id)
    c2 = Client(env2)
    await c2.start()
    await c2.login()
    after = await c2.cmd("b STATUS INBOX (HIGHESTMODSEQ UIDVALIDITY)")
    assert before.splitlines()[0] == after.splitlines()[0]
    await c2.close()
    await engine.dispose()
