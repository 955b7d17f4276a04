"""`mssante queue` through an argparse parser built like the top-level CLI's."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import select

from mssante.observability.audit import Audit  # noqa: F401
from mssante.smtp import cli
from mssante.store import queue as qstore
from mssante.store.base import Base
from mssante.store.db import make_engine, make_sessions
from mssante.store.models import AuditEvent

import mssante.store.models  # noqa: F401


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mssante")
    sub = p.add_subparsers(dest="command", required=True)
    cli.register(sub)
    return p


def run(db_url: str, *argv: str) -> int:
    args = parser().parse_args(list(argv))
    args.db_url, args.data_dir, args.config_path = db_url, Path("."), None
    return int(args.func(args))


@pytest.fixture
def db(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'q.db'}"

    async def setup() -> None:
        eng = make_engine(url)
        async with eng.begin() as c:
            await c.run_sync(Base.metadata.create_all)
        async with make_sessions(eng)() as s, s.begin():
            await qstore.enqueue(s, b"Subject: x\r\n\r\nx\r\n", "a@op-a.test", [qstore.NewRecipient("b@op-b.test")],
                            now=dt.datetime.now(dt.timezone.utc), message_id="<m1@op-a.test>")
        await eng.dispose()

    asyncio.run(setup())
    return url


def audit_actions(url: str) -> list[str]:
    async def q() -> list[str]:
        eng = make_engine(url)
        async with make_sessions(eng)() as s:
            out = list((await s.scalars(select(AuditEvent.action))).all())
        await eng.dispose()
        return out

    return asyncio.run(q())


def test_list_show_retry_flush_drop(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(db, "queue", "list") == 0
    out = capsys.readouterr().out
    assert "<a@op-a.test> -> <b@op-b.test>" in out
    assert run(db, "queue", "show", "1") == 0
    assert "<m1@op-a.test>" in capsys.readouterr().out
    assert run(db, "queue", "retry", "1") == 0
    assert run(db, "queue", "flush") == 0
    assert run(db, "queue", "drop", "1") == 0
    capsys.readouterr()
    assert run(db, "queue", "list") == 0
    assert "queue is empty" in capsys.readouterr().out
    assert sorted(audit_actions(db)) == ["queue.drop", "queue.flush", "queue.retry"]


def test_errors_are_one_line(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(db, "queue", "drop", "99") == 1
    assert capsys.readouterr().err.strip() == "error: no queued message 99"
    assert run(db, "queue", "show", "99") == 1
    assert run("", "queue", "list") == 2
    with pytest.raises(SystemExit):
        parser().parse_args(["queue", "drop", "notanumber"])
