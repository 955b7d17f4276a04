"""The hot storage operations of mssante.imap.store.SqlStorage as plain SQL on a sqlite3
connection (run by mssante.imap.sqlite_fast.SqliteRunner on its threads).

Each function is the exact equivalent of the SQLAlchemy version in store.py (same rows, same
MODSEQ/UID bookkeeping, same StoreError before the first write); values are converted with the
SQLAlchemy column types' own processors so both paths read and write identical formats.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Sequence
from typing import Any, cast

from sqlalchemy import Table

from mssante.imap.memo import Memo
from mssante.imap.store_types import (
    Changes,
    FolderInfo,
    FolderStatus,
    MessageDetail,
    MessageMeta,
    StoreError,
    StoreResult,
    _FOLDER_SQL,
    _UTC,
    _finfo_row,
    _flags,
    _inbox_first,
    _metas,
    CHECK_FIRST_MAX,
    plan_flags,
    receipt_requests,
    row_detail,
    store_result,
    unchanged_result,
)
from mssante.store.models import AuditEvent, Message, utcnow

# Reads done on the event loop (SqliteRunner.read(inline=True)) stay below these bounds.
INLINE_ROWS = 1000  # SELECT: folders with at most this many messages (read with LIMIT INLINE_ROWS + 1)
INLINE_DETAILS = 100  # FETCH metadata of at most this many messages
INLINE_BYTES = 256 * 1024  # FETCH of raw messages totalling at most this size


def _ids(xs: Sequence[int]) -> str:
    """A list of integers as ONE bound parameter, expanded by `IN (SELECT value FROM json_each(?))`:
    constant SQL text (sqlite3 statement cache), nothing built from values."""
    return "[" + ",".join([str(int(x)) for x in xs]) + "]"  # the JSON of the list, without the encoder


_DETAIL_SQL = {
    (False, False): "SELECT m.uid, m.flags, m.modseq, m.internaldate, m.size, NULL, NULL, NULL FROM message m "
                    "WHERE m.folder_id = ? AND m.uid IN (SELECT value FROM json_each(?)) ORDER BY m.uid",
    (True, False): "SELECT m.uid, m.flags, m.modseq, m.internaldate, m.size, m.envelope, m.bodystructure, NULL "
                   "FROM message m WHERE m.folder_id = ? AND m.uid IN (SELECT value FROM json_each(?)) ORDER BY m.uid",
    (True, True): "SELECT m.uid, m.flags, m.modseq, m.internaldate, m.size, m.envelope, m.bodystructure, b.data "
                  "FROM message m JOIN blob b ON b.id = m.blob_id WHERE m.folder_id = ? AND m.uid "
                  "IN (SELECT value FROM json_each(?)) ORDER BY m.uid",
}


_MESSAGES_SQL = "SELECT uid, flags, modseq FROM message WHERE folder_id = ? ORDER BY uid"
_STORE_ROWS_SQL = ("SELECT id, uid, flags, modseq FROM message WHERE folder_id = ? "
                   "AND uid IN (SELECT value FROM json_each(?))")


def _processors(dialect: Any, table: Table, col: str) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    t = table.c[col].type.dialect_impl(dialect)
    bp = t.bind_processor(dialect) or (lambda v: v)
    rp = t.result_processor(dialect, None) or (lambda v: v)
    return bp, rp


class SqliteOps:
    """Plain functions f(conn, ...) for SqliteRunner.read / .write."""

    def __init__(self, dialect: Any) -> None:
        m = cast(Table, Message.__table__)
        a = cast(Table, AuditEvent.__table__)
        self._date_in, self._date_out = _processors(dialect, m, "internaldate")
        self._dates: Memo[Any, dt.datetime] = Memo(20_000)  # stored INTERNALDATE text -> datetime
        self._json_in, _ = _processors(dialect, m, "envelope")
        self._at_in, _ = _processors(dialect, a, "at")
        self._details_in, _ = _processors(dialect, a, "details")

    # --- reads ------------------------------------------------------------------------------------
    @staticmethod
    def folders(c: Any, mailbox_id: int) -> list[FolderInfo]:
        rows = c.execute(_FOLDER_SQL + " WHERE mailbox_id = ?", (mailbox_id,)).fetchall()
        return _inbox_first(_finfo_row(r) for r in rows)

    @staticmethod
    def folder(c: Any, mailbox_id: int, name: str) -> FolderInfo | None:
        r = c.execute(_FOLDER_SQL + " WHERE mailbox_id = ? AND name = ?", (mailbox_id, name)).fetchone()
        return None if r is None else _finfo_row(r)

    @staticmethod
    def highestmodseq(c: Any, folder_id: int) -> int | None:
        r = c.execute("SELECT highestmodseq FROM folder WHERE id = ?", (folder_id,)).fetchone()
        return None if r is None else int(r[0])

    @staticmethod
    def messages(c: Any, folder_id: int) -> list[MessageMeta]:
        return _metas(c.execute(_MESSAGES_SQL, (folder_id,)).fetchall())

    @staticmethod
    def open_folder_small(c: Any, mailbox_id: int, name: str, views: Any = None
                          ) -> tuple[FolderInfo, list[MessageMeta] | None] | None:
        """The folder row and its messages (SqlStorage.open_folder), with None for the messages when
        there may be more than INLINE_ROWS. `views` (SqlStorage._views) may answer the messages when
        the folder did not change since."""
        f = SqliteOps.folder(c, mailbox_id, name)
        if f is None:
            return None
        if views is not None:
            hit = views.get(mailbox_id, f)
            if hit is not None:
                return f, hit
        # Not uidnext - 1 as the bound: a mailbox that received more than INLINE_ROWS messages in
        # its life is usually small now, and its SELECT would go to a reader thread each time.
        rows = c.execute(_MESSAGES_SQL + " LIMIT ?", (f.id, INLINE_ROWS + 1)).fetchall()
        return f, (None if len(rows) > INLINE_ROWS else _metas(rows))

    @staticmethod
    def changes_since(c: Any, folder_id: int, modseq: int) -> Changes | None:
        r = c.execute(_FOLDER_SQL + " WHERE id = ?", (folder_id,)).fetchone()
        if r is None:
            return None
        out = Changes(_finfo_row(r))
        if out.folder.highestmodseq <= modseq:
            return out
        rows = c.execute("SELECT uid, flags, modseq FROM message WHERE folder_id = ? AND modseq > ? ORDER BY uid",
                         (folder_id, modseq)).fetchall()
        out.changed = _metas(rows)
        out.expunged = [u for (u,) in c.execute(
            "SELECT uid FROM expunged WHERE folder_id = ? AND modseq > ? ORDER BY uid", (folder_id, modseq))]
        return out

    def details(self, c: Any, folder_id: int, uids: Sequence[int], raw: bool, summary: bool) -> list[MessageDetail]:
        summary = summary or raw
        sql = _DETAIL_SQL[(summary, raw)]
        out: list[MessageDetail] = []
        dec = json.loads  # what the JSON column's result processor does with stored text, minus two calls
        date_out = self._date_out
        dates = self._dates
        rows = c.execute(sql, (folder_id, _ids(uids))).fetchall()
        for row in rows:
            d = dates.get(row[3])
            if d is None:
                d = date_out(row[3])
                d = dates.put(row[3], d if d.tzinfo else d.replace(tzinfo=_UTC))
            detail = row_detail(row, d, summary=summary, raw=raw, decode=dec)
            if detail is None:  # delivered without a summary: computed now from the blob
                got = c.execute("SELECT b.data FROM blob b JOIN message m ON m.blob_id = b.id "
                                "WHERE m.folder_id = ? AND m.uid = ?", (folder_id, row[0])).fetchone()
                blob = bytes(got[0]) if got is not None and got[0] is not None else b""
                detail = row_detail(row, d, summary=summary, raw=raw, decode=dec, blob=blob)
            out.append(cast(MessageDetail, detail))
        return out

    def details_small(self, c: Any, folder_id: int, uids: Sequence[int], raw: bool, summary: bool
                      ) -> list[MessageDetail] | None:
        """details, or None for more than INLINE_DETAILS messages or raw messages totalling more than
        INLINE_BYTES."""
        if len(uids) > INLINE_DETAILS:
            return None
        if raw:
            total = c.execute("SELECT coalesce(sum(size), 0) FROM message WHERE folder_id = ? AND uid IN "
                              "(SELECT value FROM json_each(?))", (folder_id, _ids(uids))).fetchone()[0]
            if total > INLINE_BYTES:
                return None
        return self.details(c, folder_id, uids, raw, summary)

    @staticmethod
    def login_row(c: Any, address: str) -> tuple[str | None, bool] | None:
        r = c.execute("SELECT password_hash, enabled FROM mailbox WHERE address = ?", (address,)).fetchone()
        return None if r is None else (r[0], bool(r[1]))

    @staticmethod
    def status(c: Any, folder_id: int) -> FolderStatus:
        # Flags are canonical, space-separated; keywords cannot contain a backslash (RFC 3501 atom).
        r = c.execute("SELECT count(*), "
                      "coalesce(sum(instr(' ' || flags || ' ', ' \\Seen ') = 0), 0), "
                      "coalesce(sum(instr(' ' || flags || ' ', ' \\Deleted ') > 0), 0), "
                      "coalesce(sum(size), 0) FROM message WHERE folder_id = ?", (folder_id,)).fetchone()
        return FolderStatus(int(r[0]), int(r[1]), int(r[2]), int(r[3]))

    # --- writes (inside the writer's transaction; StoreError only before the first write) ----------
    @staticmethod
    def _exists(c: Any, folder_id: int) -> None:
        if c.execute("SELECT 1 FROM folder WHERE id = ?", (folder_id,)).fetchone() is None:
            raise StoreError("mailbox no longer exists", "NONEXISTENT")

    @staticmethod
    def _bump(c: Any, folder_id: int) -> int:
        rows = c.execute("UPDATE folder SET highestmodseq = highestmodseq + 1 WHERE id = ? RETURNING highestmodseq",
                         (folder_id,)).fetchall()
        if not rows:
            raise StoreError("mailbox no longer exists", "NONEXISTENT")
        return int(rows[0][0])

    @staticmethod
    def store_unchanged(c: Any, folder_id: int, uids: Sequence[int], mode: str, want: frozenset[str],
                        unchangedsince: int | None) -> StoreResult | None:
        """A read on the loop (store_types.unchanged_result), else None and store_flags writes it."""
        if len(uids) > CHECK_FIRST_MAX:
            return None
        return unchanged_result(c.execute(_STORE_ROWS_SQL, (folder_id, _ids(uids))).fetchall(), mode, want,
                                unchangedsince)

    @staticmethod
    def store_flags(c: Any, folder_id: int, uids: Sequence[int], mode: str, want: frozenset[str],
                    unchangedsince: int | None) -> StoreResult:
        SqliteOps._exists(c, folder_id)
        rows = c.execute(_STORE_ROWS_SQL, (folder_id, _ids(uids))).fetchall()
        modified, todo = plan_flags(rows, mode, want, unchangedsince)
        modseq = SqliteOps._bump(c, folder_id) if todo else 0  # one new MODSEQ for this command
        if todo:
            c.executemany("UPDATE message SET flags = ?, modseq = ? WHERE id = ?",
                          [(" ".join(nf), modseq, mid) for mid, _uid, nf, _seen in todo])
        res = store_result(modified, todo, modseq)
        newly_seen = [uid for _mid, uid, _nf, seen in todo if seen]
        if newly_seen:
            res.first_seen = SqliteOps._receipts(c, folder_id, newly_seen)
        return res

    @staticmethod
    def _receipts(c: Any, folder_id: int, uids: list[int]) -> list[tuple[int, str | None, str]]:
        rows = c.execute("SELECT m.uid, m.message_id, substr(b.data, 1, 16384) FROM message m "
                         "JOIN blob b ON b.id = m.blob_id WHERE m.folder_id = ? AND m.uid IN (SELECT value FROM json_each(?))",
                         (folder_id, _ids(uids))).fetchall()
        return receipt_requests(rows)

    def append(self, c: Any, folder_id: int, raw: bytes, digest: str, flags: str, internaldate: dt.datetime,
               message_id: str | None, env: Any, bs: Any) -> tuple[int, int]:
        self._exists(c, folder_id)
        rows = c.execute("INSERT INTO blob (sha256, size, data) VALUES (?, ?, ?) ON CONFLICT (sha256) DO NOTHING "
                         "RETURNING id", (digest, len(raw), raw)).fetchall()
        if rows:
            blob_id = rows[0][0]
        else:  # content-addressed: the same message is stored once
            blob_id = c.execute("SELECT id FROM blob WHERE sha256 = ?", (digest,)).fetchone()[0]
        uidnext, modseq = c.execute("UPDATE folder SET uidnext = uidnext + 1, highestmodseq = highestmodseq + 1 "
                                    "WHERE id = ? RETURNING uidnext, highestmodseq", (folder_id,)).fetchall()[0]
        uid = uidnext - 1
        c.execute("INSERT INTO message (folder_id, uid, blob_id, flags, modseq, internaldate, size, message_id, "
                  "envelope, bodystructure) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                  (folder_id, uid, blob_id, flags, modseq, self._date_in(internaldate), len(raw), message_id,
                   self._json_in(env), self._json_in(bs)))
        return uid, modseq

    def expunge(self, c: Any, folder_id: int, uids: Sequence[int] | None, events: Any) -> tuple[list[int], int]:
        self._exists(c, folder_id)
        rows = c.execute("SELECT id, uid, flags FROM message WHERE folder_id = ? AND flags LIKE '%Deleted%'",
                         (folder_id,)).fetchall()
        allowed = None if uids is None else set(uids)
        gone = [(i, u) for i, u, f in rows if "\\Deleted" in _flags(f) and (allowed is None or u in allowed)]
        if not gone:
            return [], 0
        modseq = self._bump(c, folder_id)
        c.execute("DELETE FROM message WHERE id IN (SELECT value FROM json_each(?))", (_ids([i for i, _u in gone]),))
        c.executemany("INSERT INTO expunged (folder_id, uid, modseq) VALUES (?, ?, ?)",
                      [(folder_id, u, modseq) for _i, u in gone])
        done = sorted(u for _i, u in gone)
        if events is not None:
            self.add_events(c, list(events(done)))
        return done, modseq

    def add_events(self, c: Any, events: Sequence[Any]) -> None:
        """Audit events (AuditRow or AuditEvent: the same attributes), inserted as plain rows."""
        c.executemany("INSERT INTO audit_event (at, action, actor, outcome, details) VALUES (?, ?, ?, ?, ?)",
                      [(self._at_in(ev.at or utcnow()), ev.action, ev.actor if ev.actor is not None else "",
                        ev.outcome if ev.outcome is not None else "ok", self._details_in(ev.details))
                       for ev in events])


__all__ = ["SqliteOps"]
