"""Engine and schema helpers for running the directory on its own (``mssante annuaire ...``).

annuaire/ never imports mssante/, so this mirrors the gateway's engine settings: SQLite in WAL
mode with synchronous=FULL and a busy timeout; PostgreSQL through asyncpg.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from annuaire.models import AnnuaireBase


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def make_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        engine = create_async_engine(url, connect_args={"timeout": 30})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    if backend == "postgresql":
        return create_async_engine(url, pool_size=pool_size, max_overflow=pool_size)
    raise ValueError(f"unsupported database backend {backend!r}: expected sqlite or postgresql")


async def create_schema(engine: AsyncEngine) -> None:
    """Create the directory tables if missing (tests and standalone use; the gateway uses Alembic)."""
    async with engine.begin() as conn:
        await conn.run_sync(AnnuaireBase.metadata.create_all)
