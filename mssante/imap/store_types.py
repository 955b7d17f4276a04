"""The values IMAP and its stores exchange, and the pure helpers every backend shares
(mssante.imap.store's SQLAlchemy path, store_sqlite, store_pg): folder and message records,
flag normalisation and interning, the STORE plan, read-receipt detection, the Storage protocol.

No I/O and no SQLAlchemy here.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from mssante.imap.mime import summarize

SYSTEM_FLAGS = ("\\Answered", "\\Deleted", "\\Draft", "\\Flagged", "\\Seen")
DELIMITER = "/"
MAX_NAME = 500  # Folder.name column size
_DNT = re.compile(rb"^disposition-notification-to:[ \t]*(.*)$", re.IGNORECASE | re.MULTILINE)


def receipt_requests(rows: Any) -> list[tuple[int, str | None, str]]:
    """(uid, Message-ID, notify-to) for the rows (uid, message_id, head of the raw message) whose header
    carries Disposition-Notification-To (RFC 8098 §2.1)."""
    out: list[tuple[int, str | None, str]] = []
    for uid, mid, head in rows:
        h = bytes(head or b"")
        end = h.find(b"\r\n\r\n")
        h = h if end < 0 else h[:end]
        m = _DNT.search(h.replace(b"\r\n", b"\n"))
        if m:
            out.append((int(uid), mid, m.group(1).strip().decode("utf-8", "replace")))
    return out


class StoreError(Exception):
    """A refused operation; `code` is the IMAP response code (RFC 5530) for the NO."""

    def __init__(self, msg: str, code: str | None = None) -> None:
        super().__init__(msg)
        self.code = code


@dataclass(frozen=True)
class FolderInfo:
    id: int
    name: str
    special_use: str | None
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    subscribed: bool


@dataclass(frozen=True)
class MessageMeta:
    uid: int
    flags: tuple[str, ...]
    modseq: int


class MessageDetail:
    """What FETCH/SEARCH/SORT need of one message. With `decode`, `envelope` and `bodystructure`
    are given as their stored JSON text and decoded on first use: a FETCH ENVELOPE answered from
    fetch.py's rendering cache (keyed by that text) decodes neither, BODY[] no BODYSTRUCTURE."""

    __slots__ = ("uid", "flags", "modseq", "internaldate", "size", "raw", "envelope_key", "_env", "_bs", "_decode")

    def __init__(self, uid: int, flags: tuple[str, ...], modseq: int, internaldate: dt.datetime, size: int,
                 envelope: Any, bodystructure: Any, raw: bytes | None = None, envelope_key: str | None = None,
                 decode: Any = None) -> None:
        self.uid, self.flags, self.modseq, self.internaldate, self.size = uid, flags, modseq, internaldate, size
        self.raw = raw
        self.envelope_key = envelope_key  # the stored ENVELOPE JSON text: key of fetch.py's rendering cache
        self._env, self._bs, self._decode = envelope, bodystructure, decode

    @property
    def envelope(self) -> Any:
        if self._decode is not None and isinstance(self._env, str):
            self._env = self._decode(self._env)
        return self._env

    @property
    def bodystructure(self) -> Any:
        if self._decode is not None and isinstance(self._bs, str):
            self._bs = self._decode(self._bs)
        return self._bs


def row_detail(row: Sequence[Any], when: dt.datetime, *, summary: bool, raw: bool, decode: Any,
               blob: bytes | None = None) -> MessageDetail | None:
    """A MessageDetail from a details row (uid, flags, modseq, internaldate, size, envelope JSON,
    bodystructure JSON, raw data), shared by store_sqlite and store_pg. None when the message was
    stored without its ENVELOPE/BODYSTRUCTURE and its raw data was not read: call again with `blob`."""
    uid, fl, ms, _when, size, env, bs, data = row
    key = env if summary and isinstance(env, str) and env != "null" else None
    if summary:  # JSON text, decoded on first use (MessageDetail)
        env = None if env is None or env == "null" else env
        bs = None if bs is None or bs == "null" else bs
    if data is not None:
        data = bytes(data)
    if summary and (env is None or bs is None):  # delivered without one: compute it now
        source = data if data is not None else blob
        if source is None:
            return None
        env, bs = summarize(source)
        key = None
        if not raw:
            data = None
    return MessageDetail(int(uid), _flags(fl), int(ms), when, int(size), env, bs, data, key, decode=decode)


@dataclass
class Changes:
    folder: FolderInfo
    changed: list[MessageMeta] = field(default_factory=list)  # new or re-flagged, uid order
    expunged: list[int] = field(default_factory=list)


@dataclass
class StoreResult:
    changed: list[MessageMeta]
    modified: list[int]  # RFC 7162 UNCHANGEDSINCE failures
    first_seen: list[tuple[int, str | None, str]]  # (uid, message-id, Disposition-Notification-To)


@dataclass(frozen=True)
class FolderStatus:
    messages: int
    unseen: int
    deleted: int
    size: int


def norm_flags(flags: Iterable[str]) -> tuple[str, ...]:
    """Canonical flags: system flags capitalised, keywords as given, unique, sorted; \\Recent dropped."""
    out = set()
    for f in flags:
        if f.startswith("\\"):
            cap = "\\" + f[1:].capitalize()
            if cap in SYSTEM_FLAGS:
                out.add(cap)
        elif f:
            out.add(f)
    return tuple(sorted(out))


_FLAG_TUPLES: dict[str, tuple[str, ...]] = {}


def _flags(s: str | None) -> tuple[str, ...]:
    """Stored flags to a tuple, interned: every session's view of every message with the same
    flags shares one tuple (10,000 IDLE sessions each hold their folder's flags)."""
    if not s:
        return ()
    t = _FLAG_TUPLES.get(s)
    if t is None:
        t = tuple(s.split())
        if len(_FLAG_TUPLES) < 4096:  # distinct flag combinations are few; keywords could be many
            _FLAG_TUPLES[s] = t
    return t


# What a STORE changes: (message id, uid, new flags, newly \\Seen) per message.
FlagChange = tuple[int, int, tuple[str, ...], bool]


def plan_flags(rows: Iterable[Sequence[Any]], mode: str, want: frozenset[str] | set[str], unchangedsince: int | None
               ) -> tuple[list[int], list[FlagChange]]:
    """A STORE on (id, uid, flags, modseq) rows, shared by every backend: the uids that fail
    UNCHANGEDSINCE (RFC 7162 §3.1.3) and the messages whose flags change."""
    modified: list[int] = []
    todo: list[FlagChange] = []
    for mid, uid, fl, ms in rows:
        if unchangedsince is not None and int(ms) > unchangedsince:
            modified.append(int(uid))
            continue
        old = set(_flags(fl))
        new = old | want if mode == "+" else old - want if mode == "-" else set(want)
        if new != old:
            todo.append((mid, int(uid), tuple(sorted(new)), "\\Seen" in new and "\\Seen" not in old))
    return modified, todo


# A STORE on at most this many messages is first tried as a read (the stores' store_unchanged).
CHECK_FIRST_MAX = 100


def unchanged_result(rows: Sequence[Sequence[Any]], mode: str, want: frozenset[str], unchangedsince: int | None
                     ) -> StoreResult | None:
    """The answer of a STORE that changes no flag of these rows, read without a write transaction
    (linearised at that read, where it is a no-op); None when it changes something, or when no row
    was found (the write path then answers, with its checks)."""
    modified, todo = plan_flags(rows, mode, want, unchangedsince)
    return None if todo or not rows else store_result(modified, todo, 0)


def store_result(modified: list[int], todo: Sequence[FlagChange], modseq: int) -> StoreResult:
    """The StoreResult of planned changes written with `modseq` (first_seen is filled by the caller)."""
    changed = sorted((MessageMeta(uid, nf, modseq) for _mid, uid, nf, _seen in todo), key=lambda m: m.uid)
    return StoreResult(changed, sorted(modified), [])


# The same columns as plain SQL, and such a row (a tuple or an asyncpg Record) to FolderInfo, for
# the fast paths (store_sqlite, store_pg).
_FOLDER_SQL = "SELECT id, name, special_use, uidvalidity, uidnext, highestmodseq, subscribed FROM folder"
_UTC = dt.timezone.utc


def _finfo_row(r: Sequence[Any]) -> FolderInfo:
    return FolderInfo(int(r[0]), r[1], r[2], int(r[3]), int(r[4]), int(r[5]), bool(r[6]))


def _inbox_first(folders: Iterable[FolderInfo]) -> list[FolderInfo]:
    """SqlStorage.folders' order: INBOX first, then the others by name."""
    return sorted(folders, key=lambda f: (f.name != "INBOX", f.name))


def _metas(rows: Iterable[Sequence[Any]]) -> list[MessageMeta]:
    """Rows (uid, flags, modseq) to MessageMeta; uid and modseq are BIGINT columns, already Python
    ints from sqlite3, asyncpg and SQLAlchemy alike."""
    return [MessageMeta(u, _flags(f), m) for u, f, m in rows]


class Storage(Protocol):
    """The operations IMAP sessions perform on one mailbox's folders."""

    async def folders(self, mailbox_id: int) -> list[FolderInfo]: ...
    async def folder(self, mailbox_id: int, name: str) -> FolderInfo | None: ...
    async def highestmodseq(self, folder_id: int) -> int | None: ...
    async def messages(self, folder_id: int) -> list[MessageMeta]: ...
    async def open_folder(self, mailbox_id: int, name: str) -> tuple[FolderInfo, list[MessageMeta]] | None: ...
    async def changes_since(self, folder_id: int, modseq: int) -> Changes | None: ...
    async def details(self, folder_id: int, uids: Sequence[int], *, raw: bool, summary: bool = True
                      ) -> list[MessageDetail]: ...
    async def store_flags(self, folder_id: int, uids: Sequence[int], mode: str, flags: Sequence[str],
                          unchangedsince: int | None, *, check_first: bool = True) -> StoreResult: ...
    async def copy(self, folder_id: int, uids: Sequence[int], dest_id: int, *, move: bool
                   ) -> list[tuple[int, int]]: ...
    async def append(self, folder_id: int, raw: bytes, flags: Sequence[str], internaldate: dt.datetime
                     ) -> tuple[int, int]: ...
    async def expunge(self, folder_id: int, uids: Sequence[int] | None, events: Any = None
                      ) -> tuple[list[int], int]: ...
    async def add_events(self, events: Sequence[Any]) -> None: ...
    async def create(self, mailbox_id: int, name: str, special_use: str | None = None) -> FolderInfo: ...
    async def delete(self, mailbox_id: int, name: str) -> None: ...
    async def rename(self, mailbox_id: int, old: str, new: str) -> None: ...
    async def subscribe(self, mailbox_id: int, name: str, subscribed: bool) -> None: ...
    async def status(self, folder_id: int) -> FolderStatus: ...
