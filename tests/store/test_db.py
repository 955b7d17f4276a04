from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select, text

from mssante.store.base import Base
from mssante.store.db import UnsupportedDatabase, backend_of, make_engine, make_sessions
from mssante.store.mail import MailboxError, create_mailbox, deliver, mailbox_by_address
from mssante.store.models import Blob, Folder, Message


async def _fresh(db_url: str):
    engine = make_engine(db_url)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    return engine


async def test_sqlite_pragmas_are_durable(tmp_path):
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'd.db'}")
    async with engine.connect() as conn:
        assert (await conn.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
        assert (await conn.execute(text("PRAGMA synchronous"))).scalar() == 2  # FULL
        assert (await conn.execute(text("PRAGMA foreign_keys"))).scalar() == 1
    await engine.dispose()


def test_backend_refuses_unknown():
    assert backend_of("sqlite+aiosqlite:///x.db") == "sqlite"
    assert backend_of("postgresql+asyncpg://u@h/d") == "postgresql"
    with pytest.raises(UnsupportedDatabase, match="mysql"):
        backend_of("mysql+aiomysql://u@h/d")


async def test_mailbox_and_delivery(db_url):
    engine = await _fresh(db_url)
    sessions = make_sessions(engine)
    async with sessions() as s, s.begin():
        a = await create_mailbox(s, "Dr.House@Op-A.test", "PER", owner_idnps="810000000001")
        b = await create_mailbox(s, "cardio@op-a.test", "ORG", structure_id="1234")
    async with sessions() as s, s.begin():
        with pytest.raises(MailboxError, match="already exists"):
            await create_mailbox(s, "dr.house@op-a.test", "PER")
    async with sessions() as s, s.begin():
        with pytest.raises(MailboxError, match="invalid mailbox type"):
            await create_mailbox(s, "x@op-a.test", "XYZ")
    raw = b"Subject: hi\r\n\r\nbody\r\n"
    now = dt.datetime(2026, 11, 23, tzinfo=dt.timezone.utc)
    async with sessions() as s, s.begin():
        first = await deliver(s, raw, [a.id, b.id], internaldate=now)
        second = await deliver(s, raw, [a.id], internaldate=now)
    assert [d.uid for d in first] == [1, 1]
    assert second[0].uid == 2 and second[0].modseq > first[0].modseq
    async with sessions() as s:
        assert (await mailbox_by_address(s, "DR.HOUSE@op-a.TEST")) is not None
        assert len((await s.scalars(select(Blob))).all()) == 1  # stored once
        assert len((await s.scalars(select(Message))).all()) == 3
        inbox = await s.scalar(select(Folder).where(Folder.mailbox_id == a.id, Folder.name == "INBOX"))
        assert inbox is not None and inbox.uidnext == 3
        names = set((await s.scalars(select(Folder.name).where(Folder.mailbox_id == a.id))).all())
        assert {"INBOX", "Sent", "Drafts", "Trash", "Archive", "Junk"} <= names
    await engine.dispose()


async def test_rollback_leaves_nothing(db_url):
    engine = await _fresh(db_url)
    sessions = make_sessions(engine)
    async with sessions() as s, s.begin():
        a = await create_mailbox(s, "a@op.test", "PER")
    with pytest.raises(RuntimeError):
        async with sessions() as s, s.begin():
            await deliver(s, b"x\r\n", [a.id], internaldate=dt.datetime.now(dt.timezone.utc))
            raise RuntimeError("crash before commit")
    async with sessions() as s:
        assert (await s.scalars(select(Message))).all() == []
        inbox = await s.scalar(select(Folder).where(Folder.mailbox_id == a.id, Folder.name == "INBOX"))
        assert inbox is not None and inbox.uidnext == 1
    await engine.dispose()
