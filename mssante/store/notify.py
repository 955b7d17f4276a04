"""Folder change notifications: who wants to know that a folder changed (IMAP IDLE, issue 6).

- In-process: `publish(folder_id)` calls every callback subscribed to that folder, synchronously
  and cheaply (a callback per IMAP session: no task, no queue per subscriber). Writers in this
  process call it after their commit (SQLite is single-process, so this is the whole story there).
- Across processes (PostgreSQL): writers run `pg_notify('mssante_folder', folder_id)` in their
  transaction (mssante.store.mail.deliver, mssante.imap.store); `PgFolderNotifier` holds ONE
  dedicated asyncpg connection per process that LISTENs on the channel and re-publishes
  in-process. It reconnects with a back-off when the connection drops, and then publishes a
  "everything may have changed" signal (folder id 0 to every subscriber's `on_resync`).

- Across processes (SQLite, several IMAP processes: `imap.processes`): SQLite has no NOTIFY.
  `SqlitePollNotifier` asks SQLite every `interval` (25 ms) whether the file changed since its last
  look (`PRAGMA data_version`, one call on a dedicated read-only connection: any other connection's
  commit changes it), and only then reads the HIGHESTMODSEQ of the folders someone here is
  subscribed to, and publishes those that moved. A delivery made by another process reaches an
  IDLE session here within about one interval (25 ms).

The payload is a folder id, optionally ":modseq" (the MODSEQ the change produced): subscribers
re-read the folder's changes unless they already know that MODSEQ.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import make_url

from mssante.store.mail import NOTIFY_CHANNEL

log = logging.getLogger("mssante.store.notify")

# (folder_id, modseq or None): the MODSEQ the change produced, when the writer said so.
Callback = Callable[[int, "int | None"], None]


class FolderNotifier:
    """In-process pub/sub keyed by folder id."""

    def __init__(self) -> None:
        self._subs: dict[int, set[Callback]] = {}
        self.published = 0

    def subscribe(self, folder_id: int, callback: Callback) -> None:
        self._subs.setdefault(folder_id, set()).add(callback)

    def unsubscribe(self, folder_id: int, callback: Callback) -> None:
        subs = self._subs.get(folder_id)
        if subs is not None:
            subs.discard(callback)
            if not subs:
                del self._subs[folder_id]

    def subscribers(self, folder_id: int) -> int:
        return len(self._subs.get(folder_id, ()))

    def publish(self, folder_id: int, modseq: int | None = None) -> None:
        self.published += 1
        for cb in list(self._subs.get(folder_id, ())):
            try:
                cb(folder_id, modseq)
            except Exception:  # a subscriber's bug must not stop the others
                log.exception("folder notification callback failed")

    def publish_all(self) -> None:
        for fid in list(self._subs):
            self.publish(fid)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


class PgFolderNotifier(FolderNotifier):
    """LISTEN on 'mssante_folder' over one dedicated asyncpg connection (several processes)."""

    def __init__(self, url: str, *, reconnect_delay: float = 1.0) -> None:
        super().__init__()
        u = make_url(url)
        self._dsn: dict[str, Any] = {
            "host": u.host, "port": u.port, "user": u.username, "password": u.password, "database": u.database,
        }
        self._conn: Any = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._ready = asyncio.Event()
        self._delay = reconnect_delay

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        # "folder_id" (mssante.store.mail.deliver) or "folder_id:modseq" (mssante.imap.store).
        head, _, tail = payload.partition(":")
        try:
            fid = int(head)
            modseq = int(tail) if tail else None
        except ValueError:
            return
        self.publish(fid, modseq)

    async def _connect(self) -> None:
        import asyncpg

        self._conn = await asyncpg.connect(**{k: v for k, v in self._dsn.items() if v is not None})
        await self._conn.add_listener(NOTIFY_CHANNEL, self._on_notify)
        self._conn.add_termination_listener(lambda _c: None)

    async def _run(self) -> None:
        first = True
        while not self._stopping:
            try:
                await self._connect()
                if not first:
                    self.publish_all()  # changes may have been missed while disconnected
                first = False
                self._ready.set()
                while not self._stopping and self._conn is not None and not self._conn.is_closed():
                    await asyncio.sleep(self._delay)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - reconnect on any connection failure
                log.warning("LISTEN connection failed (%s); retrying", type(e).__name__)
            self._ready.clear()
            if self._conn is not None:
                try:
                    await self._conn.close()
                except Exception as e:  # noqa: BLE001 - already broken; log and reconnect
                    log.debug("closing the LISTEN connection failed: %s", type(e).__name__)
                self._conn = None
            if not self._stopping:
                await asyncio.sleep(self._delay)

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())
        await asyncio.wait_for(self._ready.wait(), timeout=30)

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._conn is not None:
            await self._conn.close()
            self._conn = None


class SqlitePollNotifier(FolderNotifier):
    """Cross-process wake-ups on SQLite: poll `PRAGMA data_version`, then the subscribed folders' MODSEQs."""

    INLINE_IDS = 500  # up to this many watched folders the query runs on the loop (well under 1 ms)

    def __init__(self, path: str, *, interval: float = 0.025) -> None:
        super().__init__()
        self._path = path
        self._interval = interval
        self._conn: sqlite3.Connection | None = None
        self._version: int | None = None
        self._known: dict[int, int] = {}  # folder id -> the HIGHESTMODSEQ last published or seen
        self._task: asyncio.Task[None] | None = None
        self.polls = 0
        self.failing = False

    def _connect(self) -> sqlite3.Connection:
        c = sqlite3.connect(f"file:{self._path}?mode=ro", uri=True, timeout=0, isolation_level=None,
                            check_same_thread=False)
        c.execute("PRAGMA busy_timeout=0")  # on the loop: never wait; a busy file is looked at next round
        return c

    def _changed(self) -> bool:
        """Whether any connection committed since the last look (microseconds: run on the loop)."""
        if self._conn is None:
            self._conn = self._connect()
        (version,) = self._conn.execute("PRAGMA data_version").fetchone()
        if version == self._version:
            return False
        self._version = version
        return True

    def _query(self, ids: list[int]) -> dict[int, int]:
        """The current HIGHESTMODSEQ of each folder in `ids` that still exists."""
        assert self._conn is not None
        # One prepared statement whatever the number of folders: the ids travel as one JSON array.
        return dict(self._conn.execute(
            "SELECT id, highestmodseq FROM folder WHERE id IN (SELECT value FROM json_each(?))",
            (json.dumps(ids),)).fetchall())

    def _moved(self, ids: list[int], seen: dict[int, int]) -> list[tuple[int, int | None]]:
        """(folder id, new MODSEQ or None when the folder is gone) for the folders that moved."""
        moved: list[tuple[int, int | None]] = []
        for fid in ids:
            m = seen.get(fid)
            if m is None:
                moved.append((fid, None))  # deleted: its sessions find out and say BYE
            elif self._known.get(fid) != m:
                # Also on first sight: a session that already knows this MODSEQ ignores it cheaply,
                # one that subscribed just before a change made elsewhere learns of it now.
                moved.append((fid, m))
                self._known[fid] = m
        if len(self._known) > 2 * len(ids) + 1024:
            self._known = {fid: m for fid, m in self._known.items() if fid in self._subs}
        return moved

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            self.polls += 1
            ids = list(self._subs)
            try:
                if not self._changed():
                    continue
                if len(ids) <= self.INLINE_IDS:
                    seen = self._query(ids)
                else:  # 10,000 IDLE sessions: a few ms, off the loop
                    seen = await asyncio.to_thread(self._query, ids)
            except sqlite3.Error as e:  # a busy or recovering file: look again next round
                if not self.failing:  # once per outage, not 40 times a second
                    log.warning("SQLite change poll failed (%s); retrying", type(e).__name__)
                self.failing = True
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None
                self._version = None
                continue
            if self.failing:
                log.info("SQLite change poll works again")
                self.failing = False
            for fid, modseq in self._moved(ids, seen):
                self.publish(fid, modseq)

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def make_notifier(db_url: str, *, cross_process: bool = False) -> FolderNotifier:
    """The notifier for a database URL: LISTEN/NOTIFY on PostgreSQL; on SQLite in-process, or polled
    across processes when several processes serve IMAP on the same file (`cross_process`)."""
    u = make_url(db_url)
    if u.get_backend_name() == "postgresql":
        return PgFolderNotifier(db_url)
    if cross_process and u.database and u.database != ":memory:":
        return SqlitePollNotifier(u.database)
    return FolderNotifier()
