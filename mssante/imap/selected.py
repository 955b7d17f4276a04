"""The selected mailbox as this session sees it: message sequence numbers, UIDs, flags and MODSEQs.

No I/O: `apply(changes, ...)` takes what the store reports and returns the untagged responses
that bring the client up to date, keeping MSN/UID bookkeeping exact:
- EXPUNGE responses are sent only when allowed (RFC 3501 §7.4.1: not during FETCH, STORE or
  SEARCH; RFC 9051 §7.5.1), otherwise they are held back and the message keeps its number;
- with QRESYNC enabled, VANISHED (UID set) replaces EXPUNGE (RFC 7162 §3.2.10);
- new messages give "* n EXISTS"; flag changes give "* n FETCH (UID u FLAGS (...) [MODSEQ (m)])".
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

from mssante.imap import response
from mssante.imap.store import Changes, FolderInfo, MessageMeta


class SelectedMailbox:
    def __init__(self, folder: FolderInfo, messages: list[MessageMeta], *, readonly: bool) -> None:
        self.folder = folder
        self.readonly = readonly
        self.uids: list[int] = [m.uid for m in messages]  # index = MSN - 1, ascending
        self.flags: dict[int, tuple[str, ...]] = {m.uid: m.flags for m in messages}
        self.modseqs: dict[int, int] = {m.uid: m.modseq for m in messages}
        self.highestmodseq = folder.highestmodseq  # what the client has been told about
        self.uidnext = folder.uidnext
        self.pending_expunge: set[int] = set()  # expunged in the store, not yet announced
        self.saved: list[int] = []  # RFC 5182 SEARCHRES "$" (UIDs)
        self.keywords: set[str] = {f for m in messages for f in m.flags if not f.startswith("\\")}
        self.announce_exists = False  # an own APPEND added a message: say EXISTS at the next sync

    @property
    def exists(self) -> int:
        return len(self.uids)

    def msn(self, uid: int) -> int | None:
        i = bisect.bisect_left(self.uids, uid)
        return i + 1 if i < len(self.uids) and self.uids[i] == uid else None

    def uid_at(self, msn: int) -> int:
        return self.uids[msn - 1]

    def live(self, uid: int) -> bool:
        return uid in self.flags and uid not in self.pending_expunge

    def _remove(self, uid: int) -> int | None:
        n = self.msn(uid)
        if n is None:
            return None
        del self.uids[n - 1]
        self.flags.pop(uid, None)
        self.modseqs.pop(uid, None)
        return n

    def add_own(self, uid: int, flags: tuple[str, ...], modseq: int) -> bool:
        """Our own APPEND to this mailbox, when it directly follows what we know (else: sync)."""
        if (self.uids and uid <= self.uids[-1]) or modseq != self.highestmodseq + 1 or self.pending_expunge:
            return False
        self.uids.append(uid)
        self.flags[uid] = flags
        self.modseqs[uid] = modseq
        self.keywords.update(f for f in flags if not f.startswith("\\"))
        self.uidnext = max(self.uidnext, uid + 1)
        self.announce_exists = True
        return True

    def expunge_now(self, uids: Iterable[int], qresync: bool) -> list[bytes]:
        """Remove messages and return EXPUNGE (descending-safe MSNs) or one VANISHED response."""
        gone = sorted(u for u in set(uids) if self.msn(u) is not None)
        if not gone:
            return []
        if qresync:
            for u in gone:
                self._remove(u)
            return [response.untagged(b"VANISHED " + response.seqset(gone))]
        out = []
        for u in reversed(gone):  # highest first: earlier numbers stay valid while sending
            n = self._remove(u)
            assert n is not None
            out.append(response.untagged(b"%d EXPUNGE" % n))
        return out

    def apply(self, changes: Changes, *, allow_expunge: bool, condstore: bool, qresync: bool) -> list[bytes]:
        out: list[bytes] = []
        self.folder = changes.folder
        self.pending_expunge.update(u for u in changes.expunged if u in self.flags)
        if allow_expunge and self.pending_expunge:
            out += self.expunge_now(self.pending_expunge, qresync)
            self.pending_expunge.clear()
        new: list[MessageMeta] = []
        for m in changes.changed:
            if m.uid in self.pending_expunge:
                continue
            if m.uid in self.flags:
                if self.modseqs.get(m.uid) == m.modseq and self.flags[m.uid] == m.flags:
                    continue  # our own change, already reported
                self.flags[m.uid] = m.flags
                self.modseqs[m.uid] = m.modseq
                self.keywords.update(f for f in m.flags if not f.startswith("\\"))
                n = self.msn(m.uid)
                assert n is not None
                line = b"%d FETCH (UID %d FLAGS %s" % (n, m.uid, response.flags(m.flags))
                if condstore:
                    line += b" MODSEQ (%d)" % m.modseq
                out.append(response.untagged(line + b")"))
            elif not self.uids or m.uid > self.uids[-1]:
                new.append(m)
        if new:
            for m in new:
                self.uids.append(m.uid)
                self.flags[m.uid] = m.flags
                self.modseqs[m.uid] = m.modseq
                self.keywords.update(f for f in m.flags if not f.startswith("\\"))
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
            live = set(self.flags)
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
