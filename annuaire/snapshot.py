"""Compact in-memory digests of the live snapshot, so a re-import stages only what changed.

Every live table already stores ``row_hash``, the 64-bit content hash of the row as the importer
computed it from the file (formats.row_hash). Before a re-import the importer loads those hashes,
sorted, into a flat ``array('q')`` (8 bytes per row: 2 M activities = 16 MB, no per-row Python
object), plus one "seen" byte per row and, for keyed tables, the first line that matched (4 bytes).
While reading the new file, a row whose hash is found is *unchanged*: it is only marked seen, never
parsed further nor staged. Rows that miss (new or changed, about 1 % on a normal day) take the usual
path. Afterwards the hashes never seen are the candidates for closing/deactivation/removal.

No schema change: the hashes are the existing ``row_hash`` columns. A 64-bit hash collision between
two different rows of the same table (probability ~1e-8 for millions of rows) could make a changed
row look unchanged; the same assumption already underlies the SQL diff (which compares row_hash).
"""

from __future__ import annotations

import itertools
from itertools import accumulate
from array import array
from bisect import bisect_left
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

FETCH = 100_000
_cursor_ids = itertools.count()


class Digests:
    """Sorted live row hashes with per-row "seen" marks (and first matching line when keyed).

    Lookups go through a bucket table on the top bits of the hash (about two hashes a bucket, the
    hashes being uniform), then a bisect over that bucket only: a plain bisect over a 2 M-entry
    ``array`` boxes ~21 items per lookup (~2 µs); this is ~0.3 µs, and costs 8 bytes a bucket.
    """

    __slots__ = ("hashes", "n", "seen", "first", "_repeats", "_starts", "_shift", "_half", "hit", "_find")

    def __init__(self, hashes: array, *, keyed: bool) -> None:  # type: ignore[type-arg]
        self.hashes = hashes
        self.n = n = len(hashes)
        self.seen = bytearray(n)
        self.first: array | None = array("i", bytes(4 * n)) if keyed else None  # type: ignore[type-arg]
        self._repeats = [0]  # hits on a row already seen (an identical duplicate line)
        bits = min(24, max(1, n.bit_length() - 1))
        self._shift = 64 - bits
        self._half = 1 << (bits - 1)  # signed hashes: (h >> shift) + half is in [0, 2**bits)
        counts = array("q", bytes(8 * ((1 << bits) + 1)))
        shift, half = self._shift, self._half
        for h in hashes:
            counts[(h >> shift) + half + 1] += 1
        self._starts = array("q", accumulate(counts))
        self.hit = self._make_hit()
        self._find = self.make_find()

    @property
    def repeats(self) -> int:
        return self._repeats[0]

    def __len__(self) -> int:
        return self.n

    def _make_hit(self) -> Callable[[int, int], bool]:
        # the per-row hot path (millions of calls): a closure over locals, find inlined
        shift, half, starts, hashes = self._shift, self._half, self._starts, self.hashes
        seen, first, repeats = self.seen, self.first, self._repeats

        def hit(h: int, line: int) -> bool:
            """True (and mark it seen) if ``h`` is a live row hash."""
            b = (h >> shift) + half
            hi = starts[b + 1]
            i = bisect_left(hashes, h, starts[b], hi)
            if i >= hi or hashes[i] != h:
                return False
            if seen[i]:
                repeats[0] += 1
            else:
                seen[i] = 1
                if first is not None:
                    first[i] = line
            return True
        return hit

    def make_find(self) -> Callable[[int], int]:
        """A closure ``find(h)``: the index of live hash ``h`` (-1 if absent), marking nothing; pair it
        with :meth:`mark` when a caller must check several hashes before committing to any."""
        shift, half, starts, hashes = self._shift, self._half, self._starts, self.hashes

        def find(h: int) -> int:
            b = (h >> shift) + half
            hi = starts[b + 1]
            i = bisect_left(hashes, h, starts[b], hi)
            return i if i < hi and hashes[i] == h else -1
        return find

    def lookup_parts(self) -> tuple[int, int, array, array, bytearray, list[int]]:  # type: ignore[type-arg]
        """(shift, half, starts, hashes, seen, repeats) for a caller that inlines ``find`` and ``mark``
        in its own hot loop (unkeyed digests only: no first line to record)."""
        assert self.first is None
        return self._shift, self._half, self._starts, self.hashes, self.seen, self._repeats

    def mark(self, i: int, line: int) -> None:
        """Mark the live hash at index ``i`` (from ``find``) seen by ``line``, as :meth:`hit` does."""
        if self.seen[i]:
            self._repeats[0] += 1
        else:
            self.seen[i] = 1
            if self.first is not None:
                self.first[i] = line

    def first_line(self, h: int) -> int | None:
        """The first line that matched live hash ``h``, or None if it was never seen."""
        i = self._find(h)
        if i >= 0 and self.seen[i]:
            return self.first[i] if self.first is not None else 0
        return None

    def unseen(self) -> Iterator[int]:
        """Live hashes no row of the file matched."""
        seen, hashes, i = self.seen, self.hashes, 0
        while True:
            i = seen.find(0, i)
            if i < 0:
                return
            yield hashes[i]
            i += 1


async def stream_rows(conn: AsyncConnection, sql: str) -> AsyncIterator[list[tuple[Any, ...]]]:
    """Chunks of result rows read on the driver connection (same transaction), FETCH at a time."""
    raw = await conn.get_raw_connection()
    driver: Any = raw.driver_connection
    if conn.dialect.name == "postgresql":  # an explicit cursor, closed after: no DDL may follow an open one
        # a fresh name each time: asyncpg caches statements by text, and a cached "FETCH n FROM c"
        # would keep the column description of another query
        name = f"ann_snapshot_cur{next(_cursor_ids)}"
        await driver.execute(f"DECLARE {name} NO SCROLL CURSOR FOR {sql}")
        try:
            while recs := await driver.fetch(f"FETCH {FETCH} FROM {name}"):
                yield [tuple(r) for r in recs]
        finally:
            await driver.execute(f"CLOSE {name}")
    else:
        cur = await driver.execute(sql)
        try:
            while rows := await cur.fetchmany(FETCH):
                yield rows
        finally:
            await cur.close()


async def load_digests(conn: AsyncConnection, sql: str, *, keyed: bool) -> Digests:
    """Run ``sql`` (one BIGINT column, ORDER BY it) and keep the values in a flat array
    (streamed: memory stays at 8 bytes a row plus one chunk)."""
    hashes = array("q")
    async for rows in stream_rows(conn, sql):
        hashes.extend(r[0] for r in rows)
    return Digests(hashes, keyed=keyed)


async def fill_values_table(conn: AsyncConnection, name: str, values: Iterable[int]) -> int:
    """(Re)create TEMPORARY table ``name (v BIGINT)`` holding ``values``; return how many."""
    await conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")
    await conn.exec_driver_sql(f"CREATE TEMPORARY TABLE {name} (v BIGINT NOT NULL)")
    pg = conn.dialect.name == "postgresql"
    total = 0
    batch: list[tuple[int]] = []

    async def flush() -> None:
        if not batch:
            return
        if pg:
            raw = await conn.get_raw_connection()
            await raw.driver_connection.copy_records_to_table(name, records=batch, columns=["v"])  # type: ignore[union-attr]
        else:
            await conn.exec_driver_sql(f"INSERT INTO {name} (v) VALUES (?)", batch)  # type: ignore[arg-type]  # noqa: S608
        batch.clear()

    for v in values:
        batch.append((v,))
        total += 1
        if len(batch) >= 50_000:
            await flush()
    await flush()
    await conn.exec_driver_sql(f"CREATE INDEX ix_{name}_v ON {name} (v)")
    if pg:
        await conn.exec_driver_sql(f"ANALYZE {name}")
    return total
