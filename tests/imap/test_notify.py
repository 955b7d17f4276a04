"""mssante.store.notify: in-process pub/sub and PostgreSQL LISTEN with reconnection."""

from __future__ import annotations

import asyncio

import asyncpg
from sqlalchemy.engine import make_url

from mssante.store.notify import FolderNotifier, PgFolderNotifier, make_notifier


def test_in_process() -> None:
    n = FolderNotifier()
    got: list[tuple[int, int | None]] = []

    def cb(fid: int, modseq: int | None) -> None:
        got.append((fid, modseq))

    def broken(fid: int, modseq: int | None) -> None:
        raise RuntimeError("subscriber bug")

    n.subscribe(1, cb)
    n.subscribe(1, broken)
    n.subscribe(2, cb)
    n.publish(1, 7)
    n.publish(3)
    n.unsubscribe(1, cb)
    n.publish(1)
    assert got == [(1, 7)]
    assert n.subscribers(1) == 1 and n.subscribers(2) == 1
    assert isinstance(make_notifier("sqlite+aiosqlite:///x.db"), FolderNotifier)


async def _pg_conn(url: str) -> asyncpg.Connection:
    u = make_url(url)
    return await asyncpg.connect(host=u.host, port=u.port, user=u.username, password=u.password, database=u.database)


async def test_pg_listen_payloads_and_reconnect(pg_url: str) -> None:
    n = PgFolderNotifier(pg_url, reconnect_delay=0.1)
    await n.start()
    got: asyncio.Queue[tuple[int, int | None]] = asyncio.Queue()
    n.subscribe(5, lambda f, m: got.put_nowait((f, m)))
    c = await _pg_conn(pg_url)
    try:
        await c.execute("SELECT pg_notify('mssante_folder', '5:12')")
        assert await asyncio.wait_for(got.get(), 10) == (5, 12)
        await c.execute("SELECT pg_notify('mssante_folder', '5')")
        assert await asyncio.wait_for(got.get(), 10) == (5, None)
        await c.execute("SELECT pg_notify('mssante_folder', 'garbage')")
        # Kill the LISTEN connection: the notifier reconnects and tells every subscriber to re-read.
        await c.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid()")
        assert await asyncio.wait_for(got.get(), 20) == (5, None)
        await c.execute("SELECT pg_notify('mssante_folder', '5:13')")
        assert await asyncio.wait_for(got.get(), 10) == (5, 13)
    finally:
        await c.close()
        await n.stop()
