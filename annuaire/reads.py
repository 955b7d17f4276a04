"""The hot read path: hand-written SQL on the raw driver, no ORM, no statement building.

Measured on this project's bench (scripts/bench_annuaire.py): building a SQLAlchemy ``select()``
per call costs ~170 µs and a pooled async round-trip through aiosqlite's thread ~0.5 ms, while
the same indexed lookup on a raw sqlite3 connection is ~10 µs. Routing lookups and FHIR reads
therefore use this module:

- SQLite: one read-only sqlite3 connection (``query_only``), queried synchronously on the event
  loop thread. WAL readers never wait for the writer; every statement here is an indexed lookup,
  so the loop is blocked for microseconds. ``case_sensitive_like`` lets ``LIKE 'abc%'`` use the
  indexes (the ``norm_*`` columns and addresses are stored lowercase).
- PostgreSQL: an asyncpg pool. (For ``LIKE 'abc%'`` to use a btree index, the database should use
  the C collation or the indexes ``text_pattern_ops``; see docs/annuaire.md.)

SQL is written with ``?`` placeholders and rewritten to ``$n`` for asyncpg. Values are always
bound, never interpolated.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from typing import Any, Protocol
from urllib.parse import quote

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine


class Rec(dict[str, Any]):
    """A result row with attribute access (what the FHIR builders expect)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class Reader(Protocol):
    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Rec]: ...
    async def close(self) -> None: ...


def like_prefix(value: str) -> str:
    """A LIKE prefix pattern without ESCAPE (so SQLite can use the index): '%' is dropped, '_'
    matches any one character (a harmless superset for names and addresses)."""
    return value.replace("%", "") + "%"


def prefix_cond(col: str, value: str) -> tuple[str, list[str]]:
    """Starts-with as an index range plus the exact LIKE: ``col >= 'mar' AND col < 'mas' AND col LIKE 'mar%'``.
    The range lets both backends walk the btree whatever the collation rules for LIKE
    (PostgreSQL uses a LIKE prefix only under the C collation or text_pattern_ops)."""
    v = value.replace("%", "")
    if not v:
        return f"{col} IS NOT NULL", []
    hi = v[:-1] + chr(min(ord(v[-1]) + 1, 0x10FFFF))
    return f"({col} >= ? AND {col} < ? AND {col} LIKE ?)", [v, hi, v + "%"]


def like_contains(value: str) -> str:
    return "%" + value.replace("%", "") + "%"


class SqliteReader:
    def __init__(self, path: str) -> None:
        self.path = path
        self._con: sqlite3.Connection | None = None

    @property
    def con(self) -> sqlite3.Connection:
        if self._con is None:  # opened lazily: the schema must exist first
            con = sqlite3.connect(f"file:{quote(self.path)}?mode=ro", uri=True, check_same_thread=False,
                                  isolation_level=None)
            con.execute("PRAGMA query_only=ON")
            con.execute("PRAGMA case_sensitive_like=ON")
            con.execute("PRAGMA busy_timeout=5000")
            con.row_factory = self._row
            self._con = con
        return self._con

    @staticmethod
    def _row(cur: sqlite3.Cursor, row: tuple[Any, ...]) -> Rec:
        return Rec(zip([d[0] for d in cur.description], row, strict=True))

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Rec]:
        return self.con.execute(sql, tuple(params)).fetchall()

    async def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None


_QMARK = re.compile(r"\?")


class PgReader:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.pool: Any = None
        self._sql: dict[str, str] = {}

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Rec]:
        if self.pool is None:
            import asyncpg
            self.pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=10)
        pg = self._sql.get(sql)
        if pg is None:
            counter = iter(range(1, 10_000))
            pg = self._sql[sql] = _QMARK.sub(lambda _m: f"${next(counter)}", sql)
        rows = await self.pool.fetch(pg, *params)
        return [Rec(r.items()) for r in rows]

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()


def reader_for(engine: AsyncEngine) -> Reader:
    url = make_url(str(engine.url.render_as_string(hide_password=False)))
    if url.get_backend_name() == "sqlite":
        if not url.database or url.database == ":memory:":
            raise ValueError("the fast read path needs a file database")
        return SqliteReader(url.database)
    return PgReader(url.set(drivername="postgresql").render_as_string(hide_password=False))
