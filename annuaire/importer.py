"""Incremental, streaming import of the public extractions (SPECS.md §5).

Per file (a .txt, or each .txt member of a zip), in ONE transaction:
  1. read and check the header (layout by column names); a wrong header aborts before any write;
  2. stream rows, validate them (bad rows are reported with line and reason, and skipped), and
     bulk-load them into TEMPORARY staging tables in batches (SQLite: executemany on the driver
     connection; PostgreSQL: asyncpg ``copy_records_to_table``). Parsing of batch n+1 overlaps the
     database write of batch n;
  3. deduplicate the staging tables (first occurrence of a key wins: "duplicate addresses are merged");
  4. diff against the live tables with set-based SQL on a per-row content hash: update changed rows,
     insert new ones, mark vanished mailboxes closed (``closed_at``) and vanished practitioners
     inactive. Nothing is ever deleted except activity/savoir-faire rows, which have no identity
     beyond their content. Re-importing the same file therefore changes nothing.
Any FormatError (encoding, truncated or bomb archive) rolls the transaction back: previous data intact.

Two fast paths, same results (tests/annuaire/test_reimport_fast.py compares them with the above):
  - re-import: the live rows' ``row_hash`` are loaded as compact digests (snapshot.py); a row whose
    hash is live is only marked seen, never staged; vanished = live hashes never seen;
  - SQLite first load (every target table empty): rows go straight into the live tables with
    INSERT OR IGNORE in file order (first occurrence wins), no staging, dedupe or diff.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, Index, Table, TextClause, bindparam, insert, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from annuaire.formats import FileKind, FormatError, Layout, RowError, line_hash
from annuaire.models import (ACTIVITY_DATA_COLUMNS, AnnuaireBase, MAILBOX_DATA_COLUMNS, PRACTITIONER_DATA_COLUMNS,
                             SF_DATA_COLUMNS, STAGE_ACTIVITY, STAGE_KEYS, STAGE_MAILBOX, STAGE_PRACTITIONER,
                             STAGE_SF, STAGE_STRUCTURE, STRUCTURE_DATA_COLUMNS, ImportRun)
from annuaire.reader import TOO_LONG, Limits, Source, decode_fields, iter_lines, open_sources, read_header
from annuaire.rows import ActivityRows, KnownActivity, MailboxRows
from annuaire.snapshot import Digests, fill_values_table, load_digests, stream_rows

Progress = Callable[[str, int, int], None]
MAX_REPORTED_ERRORS = 1000
SQLITE_CACHE_KIB = 96 * 1024  # counted in the importer's RSS (budget 500 MB)
UNSEEN = "ann_stage_unseen"    # live hashes no row of the file matched (re-import)
GONE = "ann_stage_gone"        # keys of the live rows to close / deactivate
DROP = "ann_stage_drop"        # staged lines superseded by an earlier unchanged occurrence
SCRATCH = (UNSEEN, GONE, DROP)


LIVE = {STAGE_MAILBOX.name: "ann_mailbox", STAGE_PRACTITIONER.name: "ann_practitioner",
        STAGE_STRUCTURE.name: "ann_structure", STAGE_ACTIVITY.name: "ann_activity", STAGE_SF.name: "ann_savoir_faire"}


def _direct_sql(conn: AsyncConnection, stage: Table, own: bool, now: datetime) -> str:
    """SQLite first load: the staged tuple (line, columns...) inserted straight into the live table.
    ``?NNN`` parameters skip the line number; INSERT OR IGNORE in file order = first occurrence wins."""
    proc = DateTime(timezone=True).dialect_impl(conn.dialect).bind_processor(conn.dialect)
    stamp = proc(now) if proc else now.isoformat(sep=" ")
    if not re.fullmatch(r"[0-9: .+-]+", str(stamp)):
        raise ValueError(f"unexpected timestamp literal {stamp!r}")
    now_sql = f"'{stamp}'"
    cols = [c.name for c in stage.columns][1:]  # without "line"
    values = [f"?{i + 2}" for i in range(len(cols))]
    if stage is STAGE_MAILBOX:  # the last staged column is liste_rouge (False outside the operator file)
        cols[-1:] = ["published", "own", "liste_rouge", "first_seen", "updated_at"]
        values[-1:] = ["0" if own else "1", "1" if own else "0", f"?{len(values) + 1}", now_sql, now_sql]
    else:
        if stage is STAGE_PRACTITIONER:
            cols.append("active")
            values.append("1")
        cols.append("updated_at")
        values.append(now_sql)
    return f"INSERT OR IGNORE INTO {LIVE[stage.name]} ({', '.join(cols)}) VALUES ({', '.join(values)})"  # noqa: S608


@dataclass
class Known:
    """Digests of the live snapshot for one file (None per table: stage everything, as on a first load)."""

    mailboxes: Digests | None = None
    activity: KnownActivity = field(default_factory=KnownActivity)


@dataclass
class FileReport:
    source: str
    kind: str = ""
    rows: int = 0
    bad_count: int = 0
    bad: list[RowError] = field(default_factory=list)
    duplicates: int = 0
    inserted: int = 0
    updated: int = 0
    closed: int = 0
    error: str | None = None  # set when the file was refused (nothing written)
    staged: int = 0  # tuples staged, all tables: new or changed parts (everything on a first load)
    seconds: dict[str, float] = field(default_factory=dict)  # load / stage / dedupe / merge wall times
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # the same phases, process CPU time

    @property
    def ok(self) -> bool:
        return self.error is None

    def summary(self) -> str:
        if self.error:
            return f"{self.source}: REFUSED: {self.error}"
        return (f"{self.source}: {self.kind}, {self.rows} rows, {self.bad_count} bad, {self.duplicates} duplicates "
                f"merged, {self.inserted} inserted, {self.updated} updated, {self.closed} closed/deactivated")


class _Pipe:
    """At most one bulk write in flight on the connection, overlapping the parsing of the next batch."""

    def __init__(self) -> None:
        self.pending: asyncio.Future[None] | None = None

    async def wait(self) -> None:
        if self.pending is not None:
            pending, self.pending = self.pending, None
            await pending


class _StageWriter:
    """Bulk-loads tuples into one staging table through the shared pipe."""

    def __init__(self, conn: AsyncConnection, table: Table, batch: int, pipe: _Pipe, direct: str | None = None) -> None:
        self.conn = conn
        self.table = table
        self.batch = batch
        self.pipe = pipe
        self.rows: list[tuple[object, ...]] = []
        self.written = 0
        self.direct = direct  # SQLite first load: INSERT OR IGNORE straight into the live table
        self.inserted = 0
        self.cols = [c.name for c in table.columns]
        self._pg = conn.dialect.name == "postgresql"
        marks = ", ".join("?" if not self._pg else f"${i + 1}" for i in range(len(self.cols)))
        self._sql = f"INSERT INTO {table.name} ({', '.join(self.cols)}) VALUES ({marks})"  # noqa: S608 - names are code constants, values bound

    async def add(self, row: tuple[object, ...]) -> None:
        self.rows.append(row)
        if len(self.rows) >= self.batch:
            await self.flush()

    async def flush(self) -> None:
        await self.pipe.wait()
        if self.rows:
            rows, self.rows = self.rows, []
            self.written += len(rows)
            self.pipe.pending = asyncio.ensure_future(self._write(rows))

    async def _write(self, rows: list[tuple[object, ...]]) -> None:
        if self._pg:
            raw = await self.conn.get_raw_connection()
            await raw.driver_connection.copy_records_to_table(  # type: ignore[union-attr]
                self.table.name, records=rows, columns=self.cols)
        elif self.direct:
            res = await self.conn.exec_driver_sql(self.direct, rows)  # type: ignore[arg-type]
            self.inserted += int(res.rowcount or 0)
        else:
            await self.conn.exec_driver_sql(self._sql, rows)  # type: ignore[arg-type]


def _set(cols: Sequence[str]) -> str:
    return ", ".join(f"{c} = s.{c}" for c in cols if c != "address")


def _T(sql: str) -> TextClause:  # noqa: N802 - a typed text() with the :now parameter
    return text(sql).bindparams(bindparam("now", type_=DateTime(timezone=True)))


class Importer:
    def __init__(self, engine: AsyncEngine, *, limits: Limits | None = None, batch: int = 5000,
                 progress: Progress | None = None, max_vanished: float = 0.2, skip_unchanged: bool = True,
                 direct_first_load: bool = True) -> None:
        self.engine = engine
        # SQLite, every target table empty: rows go straight to the live tables (INSERT OR IGNORE in
        # file order), no staging, dedupe or diff; False always stages (same result, slower)
        self.direct_first_load = direct_first_load
        # re-import: rows whose content hash is already live are only marked seen, never staged
        # (snapshot.py); False stages every row and diffs in SQL (same result, slower)
        self.skip_unchanged = skip_unchanged
        # a truncated or wrong snapshot must not close the whole directory: refuse a file that
        # would close/deactivate more than this fraction of what is live (1.0 disables the guard)
        self.max_vanished = max_vanished
        self.limits = limits or Limits()
        self.batch = batch
        self.progress = progress

    async def import_path(self, path: Path, *, now: datetime | None = None) -> list[FileReport]:
        """Import every extraction found in ``path``; each one commits or rolls back on its own."""
        now = now or datetime.now(UTC)
        reports: list[FileReport] = []
        try:
            for src in open_sources(path, self.limits):
                report = FileReport(src.name)
                reports.append(report)
                try:
                    await self._import_source(src, report, now)
                except FormatError as exc:
                    report.error = str(exc)
                    report.inserted = report.updated = report.closed = 0
        except FormatError as exc:
            reports.append(FileReport(path.name, error=str(exc)))
        return reports

    async def _import_source(self, src: Source, report: FileReport, now: datetime) -> None:
        layout = read_header(src)  # before any database work: a wrong header writes nothing
        report.kind = layout.kind.value
        async with self.engine.begin() as conn:
            pg = conn.dialect.name == "postgresql"
            if pg:  # one import at a time across gateway processes
                await conn.execute(text("SELECT pg_advisory_xact_lock(4242001)"))
            else:  # a bigger page cache for this connection: the merge touches every index page
                await conn.exec_driver_sql(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
                # pysqlite opens its transaction lazily, at the first INSERT/UPDATE/DELETE: DDL before
                # that (a first load drops indexes first) would be autocommitted. Open it now.
                raw = await conn.get_raw_connection()
                if not raw.driver_connection.in_transaction:  # type: ignore[union-attr]
                    await conn.exec_driver_sql("BEGIN")
            if layout.kind in (FileKind.MSSANTE, FileKind.OWN):
                tables = [STAGE_MAILBOX]
            elif layout.kind is FileKind.SAVOIR_FAIRE:
                tables = [STAGE_SF]
            else:
                tables = [STAGE_PRACTITIONER, STAGE_STRUCTURE, STAGE_ACTIVITY, STAGE_SF]
            for t in tables:
                await conn.execute(text(f"DROP TABLE IF EXISTS {t.name}"))
                await conn.run_sync(t.create)
            t0 = time.perf_counter(), time.process_time()
            used = [t for t in tables if t is not STAGE_SF or ActivityRows(layout).has_sf]
            direct: dict[str, str] = {}
            if not pg and self.direct_first_load and all([await self._is_empty(conn, LIVE[t.name]) for t in used]):
                direct = {t.name: _direct_sql(conn, t, layout.kind is FileKind.OWN, now) for t in used}
                known = Known()
            else:
                known = await self._load_known(conn, layout) if self.skip_unchanged else Known()
            tk = time.perf_counter(), time.process_time()
            if direct:
                await self._first_load(conn, src, layout, tables, used, report, direct)
            else:
                await self._diff_load(conn, src, layout, tables, report, known, now, pg, tk)
            if pg and report.inserted + report.updated + report.closed > 10_000:
                # fresh planner statistics after a big load, so FHIR/lookup plans use the indexes
                live = {"mssante": ["ann_mailbox"], "own": ["ann_mailbox"], "savoirfaire": ["ann_savoir_faire"]}
                for name in live.get(report.kind, ["ann_practitioner", "ann_structure", "ann_activity"]):
                    await conn.execute(text(f"ANALYZE {name}"))
            report.seconds = {"load": tk[0] - t0[0], **report.seconds}
            report.cpu_seconds = {"load": tk[1] - t0[1], **report.cpu_seconds}
            for name in [t.name for t in tables] + list(SCRATCH):
                await conn.execute(text(f"DROP TABLE IF EXISTS {name}"))
            if not pg:
                await conn.exec_driver_sql("PRAGMA cache_size=-2000")  # back to the default for the pool
            await conn.execute(insert(ImportRun).values(
                source=src.name[:300], kind=report.kind, at=now, rows=report.rows, bad_rows=report.bad_count,
                inserted=report.inserted, updated=report.updated, closed=report.closed))

    async def _is_empty(self, conn: AsyncConnection, live: str) -> bool:
        return (await conn.execute(text(f"SELECT 1 FROM {live} LIMIT 1"))).first() is None  # noqa: S608

    async def _first_load(self, conn: AsyncConnection, src: Source, layout: Layout, tables: list[Table],
                          used: list[Table], report: FileReport, direct: dict[str, str]) -> None:
        """SQLite, all target tables empty: straight into them, secondary indexes built once after."""
        t0 = time.perf_counter(), time.process_time()
        dropped: list[Index] = []
        for t in used:
            dropped += await self._drop_indexes_if_empty(conn, LIVE[t.name])
        writers = await self._stage(conn, src, layout, tables, report, Known(), direct)
        t1 = time.perf_counter(), time.process_time()
        await self._create_indexes(conn, dropped)
        t2 = time.perf_counter(), time.process_time()
        report.inserted = sum(w.inserted for w in writers.values())
        if layout.kind in (FileKind.MSSANTE, FileKind.OWN):  # duplicate addresses merged (first wins)
            w = writers[STAGE_MAILBOX.name]
            report.duplicates = w.written - w.inserted
        marks = {"stage": (t0, t1), "dedupe": (t1, t1), "merge": (t1, t2)}
        report.seconds = {k: b[0] - a[0] for k, (a, b) in marks.items()}
        report.cpu_seconds = {k: b[1] - a[1] for k, (a, b) in marks.items()}

    async def _diff_load(self, conn: AsyncConnection, src: Source, layout: Layout, tables: list[Table],
                         report: FileReport, known: Known, now: datetime, pg: bool,
                         tk: tuple[float, float]) -> None:
        await self._stage(conn, src, layout, tables, report, known)
        t1 = time.perf_counter(), time.process_time()
        for t in tables:
            report.duplicates += await self._dedupe(conn, t, pg)
        ka = known.activity
        if known.mailboxes is not None:
            report.duplicates += known.mailboxes.repeats + await self._drop_superseded(
                conn, STAGE_MAILBOX.name, "ann_mailbox", "address", known.mailboxes)
        if ka.practitioners is not None:
            await self._drop_superseded(conn, STAGE_PRACTITIONER.name, "ann_practitioner", "idnps",
                                        ka.practitioners)
        if ka.structures is not None:
            await self._drop_superseded(conn, STAGE_STRUCTURE.name, "ann_structure", "structure_id",
                                        ka.structures)
        t2 = time.perf_counter(), time.process_time()
        if layout.kind in (FileKind.MSSANTE, FileKind.OWN):
            await self._merge_mailboxes(conn, layout.kind, report, now, known.mailboxes)
        elif layout.kind is FileKind.SAVOIR_FAIRE:
            await self._merge_set(conn, "ann_savoir_faire", STAGE_SF.name, SF_DATA_COLUMNS, report, now,
                                  ka.savoir_faire)
        else:
            await self._merge_keyed(conn, "ann_practitioner", STAGE_PRACTITIONER.name, "idnps",
                                    PRACTITIONER_DATA_COLUMNS, report, now, flag="active",
                                    known=ka.practitioners)
            await self._merge_keyed(conn, "ann_structure", STAGE_STRUCTURE.name, "structure_id",
                                    STRUCTURE_DATA_COLUMNS, report, now, flag=None, known=ka.structures)
            await self._merge_set(conn, "ann_activity", STAGE_ACTIVITY.name, ACTIVITY_DATA_COLUMNS,
                                  report, now, ka.activities)
            if ActivityRows(layout).has_sf:
                await self._merge_set(conn, "ann_savoir_faire", STAGE_SF.name, SF_DATA_COLUMNS, report, now,
                                      ka.savoir_faire)
        t3 = time.perf_counter(), time.process_time()
        marks = {"stage": (tk, t1), "dedupe": (t1, t2), "merge": (t2, t3)}
        report.seconds = {k: b[0] - a[0] for k, (a, b) in marks.items()}
        report.cpu_seconds = {k: b[1] - a[1] for k, (a, b) in marks.items()}

    async def _load_known(self, conn: AsyncConnection, layout: Layout) -> Known:
        """Digests of the live rows this file could leave unchanged (empty tables: none, stage all)."""
        async def digests(sql: str, keyed: bool) -> Digests | None:
            d = await load_digests(conn, sql, keyed=keyed)
            return d if len(d) else None

        known = Known()
        if layout.kind is FileKind.MSSANTE:  # the operator file is small: always staged in full
            known.mailboxes = await digests("SELECT row_hash FROM ann_mailbox WHERE published = TRUE "
                                            "AND closed_at IS NULL ORDER BY row_hash", True)
        elif layout.kind in (FileKind.PERSONNE_ACTIVITE, FileKind.SAVOIR_FAIRE):
            ka = known.activity
            if layout.kind is FileKind.PERSONNE_ACTIVITE:
                ka.practitioners = await digests(
                    "SELECT row_hash FROM ann_practitioner WHERE active = TRUE ORDER BY row_hash", True)
                ka.structures = await digests("SELECT row_hash FROM ann_structure ORDER BY row_hash", True)
                ka.activities = await digests("SELECT row_hash FROM ann_activity ORDER BY row_hash", False)
            if ActivityRows(layout).has_sf:
                ka.savoir_faire = await digests("SELECT row_hash FROM ann_savoir_faire ORDER BY row_hash", False)
        return known

    async def _stage(self, conn: AsyncConnection, src: Source, layout: Layout, tables: list[Table],
                     report: FileReport, known: Known, direct: dict[str, str] | None = None) -> dict[str, _StageWriter]:
        pipe = _Pipe()
        writers = {t.name: _StageWriter(conn, t, self.batch * 5 if conn.dialect.name == "postgresql" else self.batch,
                                        pipe, (direct or {}).get(t.name)) for t in tables}
        try:
            await self._stage_rows(src, layout, report, known, writers)
        finally:  # never leave a bulk write running when the transaction rolls back
            await pipe.wait()
        return writers

    async def _stage_rows(self, src: Source, layout: Layout, report: FileReport, known: Known,
                          writers: dict[str, _StageWriter]) -> None:
        # (asyncpg's COPY introspects the table on every call: fewer, larger batches on PostgreSQL)

        def bad(err: RowError) -> None:
            report.bad_count += 1
            if len(report.bad) < MAX_REPORTED_ERRORS:
                report.bad.append(err)

        if layout.kind in (FileKind.MSSANTE, FileKind.OWN):
            mrows = MailboxRows(layout)
            w = writers[STAGE_MAILBOX.name]
            live = known.mailboxes
            fast = live is not None and mrows.canonical
            for line, raw in iter_lines(src):
                report.rows += 1
                if raw is None:
                    bad(RowError(line, TOO_LONG))
                    continue
                # unchanged row: the hash of its raw bytes is live (no decode, split or validation:
                # these very bytes were valid UTF-8 and passed validation when they were imported)
                if fast and live.hit(line_hash(raw), line):  # type: ignore[union-attr]
                    continue
                parsed = mrows.parse(line, decode_fields(src, line, raw))
                if isinstance(parsed, RowError):
                    bad(parsed)
                    continue
                if live is not None and live.hit(parsed[-2], line):  # type: ignore[arg-type]
                    continue  # unchanged once blanks are stripped
                w.rows.append(parsed)
                if len(w.rows) >= w.batch:
                    await w.flush()
                if self.progress and report.rows % 50_000 == 0:
                    self.progress(src.name, src.bytes_read, src.size)
        else:
            arows = ActivityRows(layout)
            arows.know(known.activity)
            wp = writers.get(STAGE_PRACTITIONER.name)
            ws = writers.get(STAGE_STRUCTURE.name)
            wa = writers.get(STAGE_ACTIVITY.name)
            wf = writers[STAGE_SF.name]
            # re-import: a line whose parts are all live is only marked seen, on its raw bytes
            unchanged = arows.unchanged
            progress = self.progress
            for line, raw in iter_lines(src):
                report.rows += 1
                if raw is None:
                    bad(RowError(line, TOO_LONG))
                    continue
                if unchanged is not None and unchanged(line, raw):
                    if progress and report.rows % 50_000 == 0:
                        progress(src.name, src.bytes_read, src.size)
                    continue
                parsed = arows.parse(line, decode_fields(src, line, raw))
                if isinstance(parsed, RowError):
                    bad(parsed)
                    continue
                prac, struct, act, sf = parsed
                if prac is not None and wp is not None:
                    await wp.add(prac)
                if struct is not None and ws is not None:
                    await ws.add(struct)
                if act is not None and wa is not None:
                    await wa.add(act)
                if sf is not None:
                    await wf.add(sf)
                if self.progress and report.rows % 50_000 == 0:
                    self.progress(src.name, src.bytes_read, src.size)
        for w in writers.values():
            await w.flush()
            await w.pipe.wait()
        report.staged = sum(w.written for w in writers.values())
        if self.progress:
            self.progress(src.name, src.size, src.size)

    async def _dedupe(self, conn: AsyncConnection, table: Table, pg: bool) -> int:
        keys = STAGE_KEYS[table.name]
        k = ", ".join(keys)
        await conn.execute(text(f"CREATE INDEX ix_{table.name}_key ON {table.name} ({k})"))
        if pg:
            await conn.execute(text(f"ANALYZE {table.name}"))
        # first occurrence wins; an anti-join on the key index (NOT IN over a big subquery degrades
        # to a quadratic plan on PostgreSQL once it no longer fits work_mem)
        match = " AND ".join(f"d.{c} = {table.name}.{c}" for c in keys)
        res: Any = await conn.execute(text(
            f"DELETE FROM {table.name} WHERE EXISTS (SELECT 1 FROM {table.name} d "  # noqa: S608
            f"WHERE {match} AND d.line < {table.name}.line)"))
        # consecutive repeats were already dropped while parsing (practitioners); only report mailboxes
        return int(res.rowcount or 0) if table is STAGE_MAILBOX else 0

    async def _drop_superseded(self, conn: AsyncConnection, stage: str, live: str, key: str, known: Digests) -> int:
        """First occurrence wins, also across the fast path: a staged row whose key also appeared
        unchanged (its live hash was seen) on an earlier line is dropped. Returns how many staged
        rows share their key with an unchanged line (duplicates merged)."""
        dup = 0
        drop: list[int] = []
        async for rows in stream_rows(conn, f"SELECT s.line, l.row_hash FROM {stage} s "  # noqa: S608 - code constants
                                      f"JOIN {live} l ON l.{key} = s.{key}"):
            for line, h in rows:
                first = known.first_line(h)
                if first is not None:
                    dup += 1
                    if first < line:
                        drop.append(line)
        if drop:
            await fill_values_table(conn, DROP, drop)
            await conn.execute(text(f"DELETE FROM {stage} WHERE line IN (SELECT v FROM {DROP})"))  # noqa: S608
        return dup

    async def _close_gone(self, conn: AsyncConnection, live: str, key: str, alive: str, gone: str,
                          what: str) -> int:
        """Materialise the keys of the live rows to close (``gone``) once, apply the mass-close guard;
        return how many there are. The callers then update ``WHERE key IN (SELECT key FROM GONE)``."""
        await conn.exec_driver_sql(f"DROP TABLE IF EXISTS {GONE}")
        await conn.exec_driver_sql(f"CREATE TEMPORARY TABLE {GONE} AS SELECT {key} FROM {live} WHERE {gone}")  # noqa: S608
        vanished = int((await conn.execute(text(f"SELECT COUNT(*) FROM {GONE}"))).scalar_one())  # noqa: S608
        if conn.dialect.name == "postgresql":
            await conn.exec_driver_sql(f"ANALYZE {GONE}")
        if self.max_vanished < 1.0 and vanished:
            total = int((await conn.execute(text(f"SELECT COUNT(*) FROM {live} WHERE {alive}"))).scalar_one())  # noqa: S608
            if total >= 100 and vanished > total * self.max_vanished:
                raise FormatError(f"refused: this file would close {vanished} of {total} {what} "
                                  f"(more than {self.max_vanished:.0%}); truncated extraction? "
                                  "re-run with --allow-mass-close if this is intended")
        return vanished

    async def _unseen(self, conn: AsyncConnection, known: Digests | None) -> str:
        """SQL restricting live rows to those no line matched unchanged ("" on a full staging)."""
        if known is None:
            return ""
        await fill_values_table(conn, UNSEEN, known.unseen())
        return f" AND row_hash IN (SELECT v FROM {UNSEEN})"  # noqa: S608 - a code constant

    async def _merge_keyed(self, conn: AsyncConnection, live: str, stage: str, key: str, cols: Sequence[str],
                           report: FileReport, now: datetime, *, flag: str | None, known: Digests | None) -> None:
        sets = ", ".join(f"{c} = s.{c}" for c in cols if c != key)
        cond = f"{live}.row_hash <> s.row_hash"
        if flag:
            sets += f", {flag} = TRUE"
            cond += f" OR {live}.{flag} = FALSE"
        res = await conn.execute(_T(
            f"UPDATE {live} SET {sets}, updated_at = :now FROM {stage} s "  # noqa: S608 - names are code constants, values bound
            f"WHERE s.{key} = {live}.{key} AND ({cond})"), {"now": now})
        report.updated += int(res.rowcount or 0)
        clist = ", ".join(cols)
        extra_c, extra_v = (f", {flag}", ", TRUE") if flag else ("", "")
        dropped = await self._drop_indexes_if_empty(conn, live)
        res = await conn.execute(_T(
            f"INSERT INTO {live} ({clist}{extra_c}, updated_at) SELECT {', '.join('s.' + c for c in cols)}"  # noqa: S608 - names are code constants, values bound
            f"{extra_v}, :now FROM {stage} s WHERE NOT EXISTS (SELECT 1 FROM {live} l WHERE l.{key} = s.{key})"),
            {"now": now})
        report.inserted += int(res.rowcount or 0)
        await self._create_indexes(conn, dropped)
        if flag:  # vanished: never deleted, only deactivated
            # on a re-import the candidates are the live rows no unchanged line matched
            gone = (f"{flag} = TRUE{await self._unseen(conn, known)} AND NOT EXISTS "  # noqa: S608
                    f"(SELECT 1 FROM {stage} s WHERE s.{key} = {live}.{key})")
            if await self._close_gone(conn, live, key, f"{flag} = TRUE", gone, live):
                res = await conn.execute(_T(
                    f"UPDATE {live} SET {flag} = FALSE, updated_at = :now WHERE {flag} = TRUE "  # noqa: S608 - names are code constants, values bound
                    f"AND {key} IN (SELECT {key} FROM {GONE})"), {"now": now})
                report.closed += int(res.rowcount or 0)

    async def _drop_indexes_if_empty(self, conn: AsyncConnection, live: str) -> list[Index]:
        """First load into an empty table: drop its secondary indexes and rebuild them after the
        INSERT (one sorted build per index instead of millions of random B-tree inserts).
        Transactional DDL on both backends: a failed import rolls this back too."""
        table = AnnuaireBase.metadata.tables[live]
        if (await conn.execute(text(f"SELECT 1 FROM {live} LIMIT 1"))).first() is not None:  # noqa: S608
            return []
        dropped = list(table.indexes)
        for ix in dropped:
            await conn.run_sync(ix.drop)
        return dropped

    async def _create_indexes(self, conn: AsyncConnection, dropped: list[Index]) -> None:
        for ix in dropped:
            await conn.run_sync(ix.create)

    async def _merge_set(self, conn: AsyncConnection, live: str, stage: str, cols: Sequence[str],
                         report: FileReport, now: datetime, known: Digests | None) -> None:
        """Rows identified by (idnps, row_hash): insert the new ones, delete those that vanished."""
        clist = ", ".join(cols)
        dropped = await self._drop_indexes_if_empty(conn, live)
        res = await conn.execute(_T(
            f"INSERT INTO {live} ({clist}, updated_at) SELECT {', '.join('s.' + c for c in cols)}, :now "  # noqa: S608 - names are code constants, values bound
            f"FROM {stage} s WHERE NOT EXISTS (SELECT 1 FROM {live} l "
            f"WHERE l.idnps = s.idnps AND l.row_hash = s.row_hash)"), {"now": now})
        report.inserted += int(res.rowcount or 0)
        await self._create_indexes(conn, dropped)
        if known is not None:  # re-import: what no line matched is gone (staged rows were not live)
            await fill_values_table(conn, UNSEEN, known.unseen())
            res = await conn.execute(text(f"DELETE FROM {live} WHERE row_hash IN (SELECT v FROM {UNSEEN})"))  # noqa: S608
        else:
            res = await conn.execute(text(
                f"DELETE FROM {live} WHERE NOT EXISTS (SELECT 1 FROM {stage} s "  # noqa: S608 - names are code constants, values bound
                f"WHERE s.idnps = {live}.idnps AND s.row_hash = {live}.row_hash)"))
        report.closed += int(res.rowcount or 0)

    async def _merge_mailboxes(self, conn: AsyncConnection, kind: FileKind, report: FileReport,
                               now: datetime, known: Digests | None) -> None:
        live, stage = "ann_mailbox", STAGE_MAILBOX.name
        own = kind is FileKind.OWN
        sets = _set(MAILBOX_DATA_COLUMNS)
        if own:
            sets += ", own = TRUE, liste_rouge = s.liste_rouge"
            cond = (f"{live}.row_hash <> s.row_hash OR {live}.own = FALSE OR {live}.closed_at IS NOT NULL "
                    f"OR {live}.liste_rouge <> s.liste_rouge")
        else:
            sets += ", published = TRUE"
            cond = f"{live}.row_hash <> s.row_hash OR {live}.published = FALSE OR {live}.closed_at IS NOT NULL"
        res = await conn.execute(_T(
            f"UPDATE {live} SET {sets}, closed_at = NULL, updated_at = :now FROM {stage} s "  # noqa: S608 - names are code constants, values bound
            f"WHERE s.address = {live}.address AND ({cond})"), {"now": now})
        report.updated += int(res.rowcount or 0)
        clist = ", ".join(MAILBOX_DATA_COLUMNS)
        dropped = await self._drop_indexes_if_empty(conn, live)
        res = await conn.execute(_T(
            f"INSERT INTO {live} ({clist}, published, own, liste_rouge, first_seen, updated_at) "  # noqa: S608 - names are code constants, values bound
            f"SELECT {', '.join('s.' + c for c in MAILBOX_DATA_COLUMNS)}, {'FALSE' if own else 'TRUE'}, "
            f"{'TRUE' if own else 'FALSE'}, {'s.liste_rouge' if own else 'FALSE'}, :now, :now FROM {stage} s "
            f"WHERE NOT EXISTS (SELECT 1 FROM {live} l WHERE l.address = s.address)"), {"now": now})
        report.inserted += int(res.rowcount or 0)
        await self._create_indexes(conn, dropped)
        mine, other = ("own", "published") if own else ("published", "own")
        # re-import: only live rows no unchanged line matched can be gone (the digests hold the open
        # published rows; a published row with a closed_at, if any, is always a candidate)
        unseen = await self._unseen(conn, known)
        if unseen:
            unseen = f" AND (closed_at IS NOT NULL OR row_hash IN (SELECT v FROM {UNSEEN}))"  # noqa: S608
        gone = (f"{mine} = TRUE{unseen} AND NOT EXISTS "  # noqa: S608
                f"(SELECT 1 FROM {stage} s WHERE s.address = {live}.address)")
        if not await self._close_gone(conn, live, "address", f"{mine} = TRUE", gone, "mailboxes"):
            return
        # SPECS.md §5 / issue 3: a vanished mailbox is closed with a date, never deleted.
        res = await conn.execute(_T(
            f"UPDATE {live} SET {mine} = FALSE, closed_at = :now, updated_at = :now "  # noqa: S608 - names are code constants, values bound
            f"WHERE {other} = FALSE AND address IN (SELECT address FROM {GONE})"), {"now": now})
        report.closed += int(res.rowcount or 0)
        extra = ", liste_rouge = FALSE" if own else ""
        await conn.execute(_T(f"UPDATE {live} SET {mine} = FALSE{extra}, updated_at = :now "  # noqa: S608 - names are code constants, values bound
                              f"WHERE {other} = TRUE AND address IN (SELECT address FROM {GONE})"), {"now": now})

