"""The selected mailbox as this session sees it: message sequence numbers, UIDs, flags and MODSEQs.

No I/O: `apply(changes, ...)` takes what the store reports and returns the untagged responses
that bring the client up to date, keeping MSN/UID bookkeeping exact:
- EXPUNGE responses are sent only when allowed (RFC 3501 §7.4.1: not during FETCH, STORE or
  SEARCH; RFC 9051 §7.5.1), otherwise they are held back and the message keeps its number;
- with QRESYNC enabled, VANISHED (UID set) replaces EXPUNGE (RFC 7162 §3.2.10);
- new messages give "* n EXISTS"; flag changes give "* n FETCH (UID u FLAGS (...) [MODSEQ (m)])".

Memory: every session holds its folder's view (a 20,000-message INBOX, several sessions per
user, thousands of users), so the view is three parallel arrays indexed by MSN - 1 — UIDs and
MODSEQs as machine integers, flags as a 2-byte code into a process-wide table of flag tuples —
about 18 bytes per message instead of ~70 with a list and two dicts (plus the int objects).
"""

from __future__ import annotations

import bisect
import threading
from array import array
from collections.abc import Iterable, Iterator

from mssante.imap import response
from mssante.imap.store_types import Changes, FolderInfo, MessageMeta

# --- Flag tuples <-> 2-byte codes, shared by every view of the process ---------------------------
# Distinct flag combinations are few (system flags x a handful of keywords), but a client may set
# arbitrary keyword combinations, so the table is bounded and never shrinks: at most _MAX_CODES
# entries and about _MAX_BYTES of tuples and strings. A combination that does not fit gets the
# code _OVERFLOW and is kept by the view itself (`_rare`, uid -> tuple): that costs only the
# messages concerned (as much as before this table), and answers stay the same.
_OVERFLOW = 0xFFFF
_MAX_CODES = _OVERFLOW  # codes 0 .. 0xFFFE
_MAX_BYTES = 8 << 20
_tuples: list[tuple[str, ...]] = [()]  # code -> flags
_codes: dict[tuple[str, ...], int] = {(): 0}  # flags -> code
_bytes = 0
_lock = threading.Lock()  # views live on the event loop; this only guards odd callers in threads


def flag_code(flags: tuple[str, ...]) -> int:
    """The shared code of a flag tuple, or _OVERFLOW when the table is full."""
    c = _codes.get(flags)
    return c if c is not None else _new_code(flags)


def _new_code(flags: tuple[str, ...]) -> int:
    global _bytes
    cost = 160 + sum(56 + len(f) for f in flags)  # dict slot + list slot + tuple, and its strings
    with _lock:
        c = _codes.get(flags)
        if c is not None:
            return c
        if len(_tuples) >= _MAX_CODES or _bytes + cost > _MAX_BYTES:
            return _OVERFLOW
        c = len(_tuples)
        _tuples.append(flags)
        _codes[flags] = c
        _bytes += cost
        return c


def _keywords(flags: Iterable[str]) -> Iterator[str]:
    return (f for f in flags if not f.startswith("\\"))


class SelectedMailbox:
    """`uids` (read-only for callers) is ascending, index = MSN - 1. Flags and MODSEQs are read
    with `flags_at(msn)` / `modseq_at(msn)` (or `flags_of(uid)` / `modseq_of(uid)`, a binary
    search) and changed with `set_flags(uid, flags, modseq)`."""

    def __init__(self, folder: FolderInfo, messages: list[MessageMeta], *, readonly: bool) -> None:
        self.folder = folder
        self.readonly = readonly
        self.uids = array("q", [m.uid for m in messages])  # index = MSN - 1, ascending
        self._modseqs = array("q", [m.modseq for m in messages])
        self._fcodes = array("H", [flag_code(m.flags) for m in messages])
        self._rare: dict[int, tuple[str, ...]] = {}  # uid -> flags whose code is _OVERFLOW
        if _OVERFLOW in self._fcodes:
            self._rare = {m.uid: m.flags for m, c in zip(messages, self._fcodes, strict=True) if c == _OVERFLOW}
        self.highestmodseq = folder.highestmodseq  # what the client has been told about
        self.uidnext = folder.uidnext
        self.pending_expunge: set[int] = set()  # expunged in the store, not yet announced
        self.saved: list[int] = []  # RFC 5182 SEARCHRES "$" (UIDs)
        self.keywords: set[str] = set()
        for c in set(self._fcodes):
            if c != _OVERFLOW:
                self.keywords.update(_keywords(_tuples[c]))
        for fl in self._rare.values():
            self.keywords.update(_keywords(fl))
        self.announce_exists = False  # an own APPEND added a message: say EXISTS at the next sync

    # --- lookups ---------------------------------------------------------------------------------
    @property
    def exists(self) -> int:
        return len(self.uids)

    @property
    def last_uid(self) -> int:
        """The highest UID in the view, 0 when empty."""
        return self.uids[-1] if self.uids else 0

    def msn(self, uid: int) -> int | None:
        i = bisect.bisect_left(self.uids, uid)
        return i + 1 if i < len(self.uids) and self.uids[i] == uid else None

    def uid_at(self, msn: int) -> int:
        return self.uids[msn - 1]

    def has(self, uid: int) -> bool:
        """In the view, held-back expunges included."""
        return self.msn(uid) is not None

    def live(self, uid: int) -> bool:
        return uid not in self.pending_expunge and self.msn(uid) is not None

    def flags_at(self, msn: int) -> tuple[str, ...]:
        c = self._fcodes[msn - 1]
        return _tuples[c] if c != _OVERFLOW else self._rare[self.uids[msn - 1]]

    def modseq_at(self, msn: int) -> int:
        return self._modseqs[msn - 1]

    def flags_of(self, uid: int, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        n = self.msn(uid)
        return default if n is None else self.flags_at(n)

    def modseq_of(self, uid: int, default: int = 0) -> int:
        n = self.msn(uid)
        return default if n is None else self._modseqs[n - 1]

    def entries(self) -> Iterator[tuple[int, int, tuple[str, ...], int]]:
        """(msn, uid, flags, modseq) of every message, in MSN order."""
        rare, tuples = self._rare, _tuples
        for i, (u, c, ms) in enumerate(zip(self.uids, self._fcodes, self._modseqs, strict=True)):
            yield i + 1, u, (tuples[c] if c != _OVERFLOW else rare[u]), ms

    def first_unseen(self) -> int | None:
        """The MSN of the first message without \\Seen (RFC 3501 UNSEEN response code)."""
        unseen = {c for c in set(self._fcodes) if c == _OVERFLOW or "\\Seen" not in _tuples[c]}
        for i, c in enumerate(self._fcodes):
            if c in unseen and "\\Seen" not in self.flags_at(i + 1):
                return i + 1
        return None

    # --- changes ---------------------------------------------------------------------------------
    def _put(self, i: int, uid: int, flags: tuple[str, ...], modseq: int) -> None:
        c = flag_code(flags)
        if c == _OVERFLOW:
            self._rare[uid] = flags
        elif self._fcodes[i] == _OVERFLOW:
            del self._rare[uid]
        self._fcodes[i] = c
        self._modseqs[i] = modseq

    def _append(self, uid: int, flags: tuple[str, ...], modseq: int) -> None:
        c = flag_code(flags)
        if c == _OVERFLOW:
            self._rare[uid] = flags
        self.uids.append(uid)
        self._fcodes.append(c)
        self._modseqs.append(modseq)

    def set_flags(self, uid: int, flags: tuple[str, ...], modseq: int) -> int | None:
        """New flags and MODSEQ of a message of the view (its MSN); a UID not in the view: None."""
        n = self.msn(uid)
        if n is not None:
            self._put(n - 1, uid, flags, modseq)
        return n

    def _delete(self, idx: list[int]) -> None:
        """Remove the messages at these (ascending, distinct) indexes."""
        for i in idx:
            if self._fcodes[i] == _OVERFLOW:
                del self._rare[self.uids[i]]
        if len(idx) <= 16:
            for i in reversed(idx):
                del self.uids[i], self._modseqs[i], self._fcodes[i]
            return
        for name in ("uids", "_modseqs", "_fcodes"):  # one pass instead of len(idx) shifts
            old: array[int] = getattr(self, name)
            new = array(old.typecode)
            prev = 0
            for i in idx:
                new.extend(old[prev:i])
                prev = i + 1
            new.extend(old[prev:])
            setattr(self, name, new)

    def add_own(self, uid: int, flags: tuple[str, ...], modseq: int) -> bool:
        """Our own APPEND to this mailbox, when it directly follows what we know (else: sync)."""
        if (self.uids and uid <= self.uids[-1]) or modseq != self.highestmodseq + 1 or self.pending_expunge:
            return False
        self._append(uid, flags, modseq)
        self.keywords.update(_keywords(flags))
        self.uidnext = max(self.uidnext, uid + 1)
        self.announce_exists = True
        return True

    def expunge_now(self, uids: Iterable[int], qresync: bool) -> list[bytes]:
        """Remove messages and return EXPUNGE (descending-safe MSNs) or one VANISHED response."""
        found = sorted((n - 1, u) for u in set(uids) if (n := self.msn(u)) is not None)
        if not found:
            return []
        self._delete([i for i, _ in found])
        if qresync:
            return [response.untagged(b"VANISHED " + response.seqset([u for _, u in found]))]
        # Highest first: earlier numbers stay valid while the client applies them, so each
        # message's number is its number before the removal.
        return [response.untagged(b"%d EXPUNGE" % (i + 1)) for i, _ in reversed(found)]

    def apply(self, changes: Changes, *, allow_expunge: bool, condstore: bool, qresync: bool) -> list[bytes]:
        out: list[bytes] = []
        self.folder = changes.folder
        self.pending_expunge.update(u for u in changes.expunged if self.has(u))
        if allow_expunge and self.pending_expunge:
            out += self.expunge_now(self.pending_expunge, qresync)
            self.pending_expunge.clear()
        new: list[MessageMeta] = []
        for m in changes.changed:
            if m.uid in self.pending_expunge:
                continue
            n = self.msn(m.uid)
            if n is not None:
                if self._modseqs[n - 1] == m.modseq and self.flags_at(n) == m.flags:
                    continue  # our own change, already reported
                self._put(n - 1, m.uid, m.flags, m.modseq)
                self.keywords.update(_keywords(m.flags))
                line = b"%d FETCH (UID %d FLAGS %s" % (n, m.uid, response.flags(m.flags))
                if condstore:
                    line += b" MODSEQ (%d)" % m.modseq
                out.append(response.untagged(line + b")"))
            elif not self.uids or m.uid > self.uids[-1]:
                new.append(m)
        if new:
            for m in new:
                self._append(m.uid, m.flags, m.modseq)
                self.keywords.update(_keywords(m.flags))
            out.append(response.untagged(b"%d EXISTS" % len(self.uids)))
        self.uidnext = max(self.uidnext, changes.folder.uidnext)
        if not self.pending_expunge:
            self.highestmodseq = changes.folder.highestmodseq
        return out

    def resolve(self, seqset: object, uid: bool, *, star_when_empty: bool = False) -> list[int]:
        """A sequence set to the UIDs it names in this view (RFC 3501 §9 seq-number)."""
        from mssante.imap.parser import SeqSet

        assert isinstance(seqset, SeqSet)
        if seqset.saved:
            live = set(self.uids)
            return [u for u in self.saved if u in live]
        if not self.uids:
            return []
        if uid:
            # RFC 9051 §6.4.9: "*" is the highest UID; ranges need not exist. Cap huge ranges cheaply.
            star = self.uids[-1]
            out: set[int] = set()
            for lo, hi in seqset.ranges:
                a = star if lo is None else lo
                b = star if hi is None else hi
                if a > b:
                    a, b = b, a
                i = bisect.bisect_left(self.uids, a)
                j = bisect.bisect_right(self.uids, b)
                out.update(self.uids[i:j])
            return sorted(out)
        star = len(self.uids)
        nums: set[int] = set()
        for lo, hi in seqset.ranges:
            a = star if lo is None else lo
            b = star if hi is None else hi
            if a > b:
                a, b = b, a
            if b > star:
                raise IndexError("message sequence number out of range")
            nums.update(range(a, b + 1))
        return [self.uids[n - 1] for n in sorted(nums)]
