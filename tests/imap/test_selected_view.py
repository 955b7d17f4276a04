"""The compact SelectedMailbox (parallel arrays + shared flag-tuple table) against a plain
reference view (a list and two dicts, as the view was written before), driven by the same
operations from a small simulated store: new messages, flag changes from other sessions and our
own, expunges held back then released, own APPENDs, EXPUNGE/MOVE removals and every lookup. Both
must give the same answers and the same untagged responses, byte for byte — also when the shared
flag table is full and combinations overflow into the view's own dict."""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Sequence

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from mssante.imap import response, selected
from mssante.imap.parser import SeqSet
from mssante.imap.selected import SelectedMailbox
from mssante.imap.store_types import Changes, FolderInfo, MessageMeta, norm_flags


class RefView:
    """The reference: the obvious structures, the obvious code."""

    def __init__(self, folder: FolderInfo, messages: list[MessageMeta]) -> None:
        self.uids = [m.uid for m in messages]
        self.flags = {m.uid: m.flags for m in messages}
        self.modseqs = {m.uid: m.modseq for m in messages}
        self.highestmodseq = folder.highestmodseq
        self.uidnext = folder.uidnext
        self.pending: set[int] = set()
        self.saved: list[int] = []
        self.keywords = {f for m in messages for f in m.flags if not f.startswith("\\")}
        self.announce_exists = False

    def msn(self, uid: int) -> int | None:
        return self.uids.index(uid) + 1 if uid in self.flags else None

    def live(self, uid: int) -> bool:
        return uid in self.flags and uid not in self.pending

    def first_unseen(self) -> int | None:
        return next((i + 1 for i, u in enumerate(self.uids) if "\\Seen" not in self.flags[u]), None)

    def set_flags(self, uid: int, flags: tuple[str, ...], modseq: int) -> int | None:
        if uid not in self.flags:
            return None
        self.flags[uid], self.modseqs[uid] = flags, modseq
        return self.msn(uid)

    def add_own(self, uid: int, flags: tuple[str, ...], modseq: int) -> bool:
        if (self.uids and uid <= self.uids[-1]) or modseq != self.highestmodseq + 1 or self.pending:
            return False
        self.uids.append(uid)
        self.flags[uid], self.modseqs[uid] = flags, modseq
        self.keywords.update(f for f in flags if not f.startswith("\\"))
        self.uidnext = max(self.uidnext, uid + 1)
        self.announce_exists = True
        return True

    def expunge_now(self, uids: Iterable[int], qresync: bool) -> list[bytes]:
        gone = sorted(u for u in set(uids) if u in self.flags)
        if not gone:
            return []
        out = []
        for u in reversed(gone):
            out.append(response.untagged(b"%d EXPUNGE" % (self.uids.index(u) + 1)))
            self.uids.remove(u)
            del self.flags[u], self.modseqs[u]
        return [response.untagged(b"VANISHED " + response.seqset(gone))] if qresync else out

    def apply(self, changes: Changes, *, allow_expunge: bool, condstore: bool, qresync: bool) -> list[bytes]:
        out: list[bytes] = []
        self.pending.update(u for u in changes.expunged if u in self.flags)
        if allow_expunge and self.pending:
            out += self.expunge_now(self.pending, qresync)
            self.pending.clear()
        new = []
        for m in changes.changed:
            if m.uid in self.pending:
                continue
            if m.uid in self.flags:
                if (self.flags[m.uid], self.modseqs[m.uid]) == (m.flags, m.modseq):
                    continue
                self.flags[m.uid], self.modseqs[m.uid] = m.flags, m.modseq
                self.keywords.update(f for f in m.flags if not f.startswith("\\"))
                line = b"%d FETCH (UID %d FLAGS %s" % (self.uids.index(m.uid) + 1, m.uid, response.flags(m.flags))
                if condstore:
                    line += b" MODSEQ (%d)" % m.modseq
                out.append(response.untagged(line + b")"))
            elif not self.uids or m.uid > self.uids[-1]:
                new.append(m)
        for m in new:
            self.uids.append(m.uid)
            self.flags[m.uid], self.modseqs[m.uid] = m.flags, m.modseq
            self.keywords.update(f for f in m.flags if not f.startswith("\\"))
        if new:
            out.append(response.untagged(b"%d EXISTS" % len(self.uids)))
        self.uidnext = max(self.uidnext, changes.folder.uidnext)
        if not self.pending:
            self.highestmodseq = changes.folder.highestmodseq
        return out

    def resolve(self, seqset: SeqSet, uid: bool) -> list[int]:
        if seqset.saved:
            return [u for u in self.saved if u in self.flags]
        if not self.uids:
            return []
        star = self.uids[-1] if uid else len(self.uids)
        picked: set[int] = set()
        for lo, hi in seqset.ranges:
            a, b = sorted((star if lo is None else lo, star if hi is None else hi))
            if uid:
                picked.update(u for u in self.uids if a <= u <= b)
            else:
                if b > star:
                    raise IndexError("out of range")
                picked.update(self.uids[n - 1] for n in range(a, b + 1))
        return sorted(picked)


class FakeStore:
    """One folder: messages (uid -> flags, modseq) and expunged (uid -> modseq)."""

    def __init__(self, n: int, flags: list[tuple[str, ...]]) -> None:
        self.modseq = 5000
        self.uidnext = 1000
        self.msgs: dict[int, tuple[tuple[str, ...], int]] = {}
        self.expunged: dict[int, int] = {}
        for i in range(n):
            self.append(flags[i % len(flags)] if flags else ())

    def folder(self) -> FolderInfo:
        return FolderInfo(1, "INBOX", None, 7, self.uidnext, self.modseq, True)

    def append(self, flags: tuple[str, ...]) -> tuple[int, int]:
        self.modseq += 1
        uid, self.uidnext = self.uidnext, self.uidnext + 1
        self.msgs[uid] = (flags, self.modseq)
        return uid, self.modseq

    def set_flags(self, uid: int, flags: tuple[str, ...]) -> MessageMeta:
        self.modseq += 1
        self.msgs[uid] = (flags, self.modseq)
        return MessageMeta(uid, flags, self.modseq)

    def expunge(self, uids: Iterable[int]) -> None:
        for u in uids:
            if u in self.msgs:
                self.modseq += 1
                del self.msgs[u]
                self.expunged[u] = self.modseq

    def messages(self) -> list[MessageMeta]:
        return [MessageMeta(u, f, m) for u, (f, m) in sorted(self.msgs.items())]

    def changes_since(self, modseq: int) -> Changes:
        return Changes(self.folder(),
                       [MessageMeta(u, f, m) for u, (f, m) in sorted(self.msgs.items()) if m > modseq],
                       sorted(u for u, m in self.expunged.items() if m > modseq))


_FLAG_POOL = ["\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft", "$Forwarded", "$MDNSent", "$label1",
              "Urgent", "k\u00e9"]
FLAGS = st.lists(st.sampled_from(_FLAG_POOL), max_size=4).map(norm_flags)
RANGE_END = st.one_of(st.none(), st.integers(1, 40), st.integers(995, 1100))
SEQSET = st.lists(st.tuples(RANGE_END, RANGE_END), min_size=1, max_size=4).map(lambda r: SeqSet(tuple(r)))


class ViewMachine(RuleBasedStateMachine):
    tight = False  # True: the shared flag table is full after three combinations

    def __init__(self) -> None:
        super().__init__()
        # A fresh shared table per run (deterministic codes); put back at teardown.
        self._table = (selected._tuples, selected._codes, selected._bytes, selected._MAX_CODES)
        selected._tuples, selected._codes, selected._bytes = [()], {(): 0}, 0
        if self.tight:
            selected._MAX_CODES = 4  # (), then three combinations; the others overflow
        self.store: FakeStore | None = None

    def teardown(self) -> None:
        selected._tuples, selected._codes, selected._bytes, selected._MAX_CODES = self._table

    # --- set-up ----------------------------------------------------------------------------------
    @precondition(lambda self: self.store is None)
    @rule(n=st.integers(0, 40), flags=st.lists(FLAGS, max_size=6), readonly=st.booleans())
    def select(self, n: int, flags: list[tuple[str, ...]], readonly: bool) -> None:
        self.store = FakeStore(n, flags)
        msgs = self.store.messages()
        self.view = SelectedMailbox(self.store.folder(), msgs, readonly=readonly)
        self.ref = RefView(self.store.folder(), msgs)

    def _uid(self, data: st.DataObject) -> int:
        """A UID of the view, of the store, expunged, or next to them."""
        assert self.store is not None
        known = sorted(set(self.ref.uids) | set(self.store.msgs) | set(self.store.expunged)) or [1000]
        return data.draw(st.one_of(st.sampled_from(known), st.integers(known[0] - 2, known[-1] + 2)))

    # --- the store changes (other sessions) ------------------------------------------------------
    @precondition(lambda self: self.store is not None)
    @rule(flags=st.lists(FLAGS, min_size=1, max_size=25))
    def deliver(self, flags: list[tuple[str, ...]]) -> None:
        assert self.store is not None
        for f in flags:
            self.store.append(f)

    @precondition(lambda self: self.store is not None and self.store.msgs)
    @rule(data=st.data(), flags=FLAGS)
    def other_session_flags(self, data: st.DataObject, flags: tuple[str, ...]) -> None:
        assert self.store is not None
        self.store.set_flags(data.draw(st.sampled_from(sorted(self.store.msgs))), flags)

    @precondition(lambda self: self.store is not None and self.store.msgs)
    @rule(data=st.data())
    def other_session_expunges(self, data: st.DataObject) -> None:
        assert self.store is not None
        self.store.expunge(data.draw(st.lists(st.sampled_from(sorted(self.store.msgs)), max_size=30)))

    # --- this session ----------------------------------------------------------------------------
    @precondition(lambda self: self.store is not None)
    @rule(allow_expunge=st.booleans(), condstore=st.booleans(), qresync=st.booleans())
    def sync(self, allow_expunge: bool, condstore: bool, qresync: bool) -> None:
        assert self.store is not None
        assert self.view.highestmodseq == self.ref.highestmodseq
        changes = self.store.changes_since(self.view.highestmodseq)
        kw = {"allow_expunge": allow_expunge, "condstore": condstore, "qresync": qresync}
        assert self.view.apply(changes, **kw) == self.ref.apply(changes, **kw)

    @precondition(lambda self: self.store is not None and self.store.msgs)
    @rule(data=st.data(), flags=FLAGS)
    def own_store(self, data: st.DataObject, flags: tuple[str, ...]) -> None:
        """STORE / FETCH BODY[] setting \\Seen: the store's answer goes straight into the view."""
        assert self.store is not None
        for u in data.draw(st.lists(st.sampled_from(sorted(self.store.msgs)), min_size=1, max_size=5)):
            m = self.store.set_flags(u, flags)
            assert self.view.set_flags(m.uid, m.flags, m.modseq) == self.ref.set_flags(m.uid, m.flags, m.modseq)

    @precondition(lambda self: self.store is not None)
    @rule(flags=FLAGS, tell=st.booleans())
    def own_append(self, flags: tuple[str, ...], tell: bool) -> None:
        assert self.store is not None
        if tell:  # what Session.own_change does when nothing else happened in between
            self.view.highestmodseq = self.ref.highestmodseq = self.store.modseq
        uid, modseq = self.store.append(flags)
        assert self.view.add_own(uid, flags, modseq) == self.ref.add_own(uid, flags, modseq)

    @precondition(lambda self: self.store is not None)
    @rule(data=st.data(), qresync=st.booleans())
    def own_expunge(self, data: st.DataObject, qresync: bool) -> None:
        """EXPUNGE / UID EXPUNGE / MOVE: removed in the store, then at once from the view."""
        assert self.store is not None
        pool = sorted(set(self.ref.uids) | {1, 5000})
        uids = data.draw(st.lists(st.sampled_from(pool), max_size=40))
        self.store.expunge(uids)
        assert self.view.expunge_now(uids, qresync) == self.ref.expunge_now(uids, qresync)

    @precondition(lambda self: self.store is not None)
    @rule(data=st.data())
    def search_save(self, data: st.DataObject) -> None:
        assert self.store is not None
        pool = sorted(set(self.ref.uids) | set(self.store.expunged) | {1})
        self.view.saved = self.ref.saved = data.draw(st.lists(st.sampled_from(pool), max_size=10, unique=True))

    # --- lookups ---------------------------------------------------------------------------------
    @precondition(lambda self: self.store is not None)
    @rule(data=st.data())
    def lookup_uid(self, data: st.DataObject) -> None:
        u = self._uid(data)
        v, r = self.view, self.ref
        assert v.msn(u) == r.msn(u)
        assert v.has(u) == (u in r.flags)
        assert v.live(u) == r.live(u)
        assert v.flags_of(u) == r.flags.get(u, ())
        assert v.flags_of(u, ("x",)) == r.flags.get(u, ("x",))
        assert v.modseq_of(u) == r.modseqs.get(u, 0)

    @precondition(lambda self: self.store is not None and self.ref.uids)
    @rule(data=st.data())
    def lookup_msn(self, data: st.DataObject) -> None:
        n = data.draw(st.integers(1, len(self.ref.uids)))
        u = self.ref.uids[n - 1]
        assert self.view.uid_at(n) == u
        assert self.view.flags_at(n) == self.ref.flags[u]
        assert self.view.modseq_at(n) == self.ref.modseqs[u]

    @precondition(lambda self: self.store is not None)
    @rule(seqset=SEQSET, uid=st.booleans(), saved=st.booleans())
    def resolve(self, seqset: SeqSet, uid: bool, saved: bool) -> None:
        if saved:
            seqset = SeqSet(saved=True)
        try:
            want: list[int] | type[IndexError] = self.ref.resolve(seqset, uid)
        except IndexError:
            want = IndexError
        if want is IndexError:
            with pytest.raises(IndexError):
                self.view.resolve(seqset, uid)
        else:
            assert self.view.resolve(seqset, uid) == want

    @invariant()
    def same_view(self) -> None:
        if self.store is None:
            return
        v, r = self.view, self.ref
        assert list(v.uids) == r.uids
        assert v.exists == len(r.uids)
        assert v.last_uid == (r.uids[-1] if r.uids else 0)
        assert list(v.entries()) == [(i + 1, u, r.flags[u], r.modseqs[u]) for i, u in enumerate(r.uids)]
        assert v.first_unseen() == r.first_unseen()
        assert (v.highestmodseq, v.uidnext, v.pending_expunge, v.keywords, v.announce_exists) == (
            r.highestmodseq, r.uidnext, r.pending, r.keywords, r.announce_exists)
        assert set(v._rare) <= set(r.uids)  # no leftovers of removed messages
        assert len(selected._tuples) <= selected._MAX_CODES
        assert isinstance(v.uids, array) and isinstance(v._modseqs, array) and isinstance(v._fcodes, array)


class TightViewMachine(ViewMachine):
    tight = True


_SETTINGS = settings(max_examples=150, stateful_step_count=40, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
TestView = ViewMachine.TestCase
TestView.settings = _SETTINGS
TestViewTableFull = TightViewMachine.TestCase
TestViewTableFull.settings = _SETTINGS


def _messages(n: int, combos: Sequence[tuple[str, ...]]) -> list[MessageMeta]:
    return [MessageMeta(1000 + i, combos[i % len(combos)], 5000 + i) for i in range(n)]


def test_view_is_parallel_arrays() -> None:
    """What makes the view compact: no per-message Python object and no per-message dict entry,
    at most 8 + 8 + 2 bytes of array storage per message."""
    n = 10_000
    combos = [(), ("\\Seen",), ("\\Answered", "\\Seen"), ("$Forwarded", "\\Seen")]
    v = SelectedMailbox(FolderInfo(1, "INBOX", None, 7, 1000 + n, 5000 + n, True), _messages(n, combos),
                        readonly=False)
    arrays = [v.uids, v._modseqs, v._fcodes]
    assert all(isinstance(a, array) and len(a) == n for a in arrays)
    assert sum(a.itemsize for a in arrays) <= 18
    assert v._rare == {}
    big = [k for k, x in vars(v).items() if hasattr(x, "__len__") and len(x) >= n and not isinstance(x, array)]
    assert big == []
    assert v.flags_at(3) is selected._tuples[selected._codes[("\\Answered", "\\Seen")]]  # shared, not copied


def test_flag_table_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Many distinct keyword combinations: the shared table stops growing at its bound and the
    view keeps the extra combinations itself, answering the same."""
    monkeypatch.setattr(selected, "_MAX_CODES", len(selected._tuples) + 5)
    combos = [("\\Seen", f"kw{i}-bounded") for i in range(50)]
    v = SelectedMailbox(FolderInfo(1, "INBOX", None, 7, 1050, 5050, True), _messages(50, combos), readonly=False)
    assert len(selected._tuples) == selected._MAX_CODES
    assert len(v._rare) == 45
    assert [v.flags_at(i + 1) for i in range(50)] == combos
    assert v.keywords == {f"kw{i}-bounded" for i in range(50)}
    # A message leaving the overflow for a shared combination, and back.
    assert v.set_flags(1049, ("\\Seen",), 6000) == 50
    assert 1049 not in v._rare and v.flags_at(50) == ("\\Seen",)
    assert v.set_flags(1049, ("\\Seen", "kw99-bounded"), 6001) == 50
    assert v._rare[1049] == ("\\Seen", "kw99-bounded")
    assert v.set_flags(4242, ("\\Seen",), 6002) is None  # not in the view: nothing changes
    v.expunge_now(range(1000, 1050, 2), qresync=True)
    assert set(v._rare) == {u for u in range(1001, 1050, 2) if u >= 1005}


def test_flag_table_bytes_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(selected, "_bytes", selected._MAX_BYTES - 10)
    long = ("k" * 1000 + "-bytes",)
    assert selected.flag_code(long) == selected._OVERFLOW
    assert long not in selected._codes
