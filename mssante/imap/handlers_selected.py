"""Command handlers of the selected state (RFC 9051 §6.4): FETCH, STORE, SEARCH, SORT, COPY/MOVE,
EXPUNGE, CLOSE, UNSELECT, CHECK."""

from __future__ import annotations

import datetime as dt
import email.utils
import re
from typing import TYPE_CHECKING, Any

from mssante.imap import fetch as fetchmod
from mssante.imap import response
from mssante.imap import search as searchmod
from mssante.imap.parser import Command, FetchAtt, ParseError
from mssante.imap.selected import SelectedMailbox
from mssante.imap.store_types import CHECK_FIRST_MAX, StoreError

if TYPE_CHECKING:
    from mssante.imap.session import Session


def _sel(s: Session) -> SelectedMailbox:
    assert s.selected is not None
    return s.selected


def _resolve(s: Session, cmd: Command, key: str = "set") -> list[int]:
    try:
        return _sel(s).resolve(cmd.args[key], cmd.uid)
    except IndexError as e:
        # RFC 9051 §6.4.5 / mox: a message sequence number beyond EXISTS is a client error.
        raise ParseError("invalid message sequence number", cmd.tag) from e


def _numbers(sel: SelectedMailbox, uids: list[int], uid: bool) -> bytes:
    if uid:
        return response.seqset(uids)
    return response.seqset([n for n in (sel.msn(u) for u in uids) if n is not None])


# Command: RFC 3501 §6.4.1 CHECK (a no-op here: every change is committed when made)
async def cmd_check(s: Session, cmd: Command) -> None:
    await s.flush_updates(allow_expunge=True)
    s.ok(cmd.tag, "CHECK completed")


# Command: RFC 9051 §6.4.1 CLOSE: silent expunge of \Deleted, then unselect
async def cmd_close(s: Session, cmd: Command) -> None:
    sel = _sel(s)
    if not sel.readonly:
        await s.ctx.storage.expunge(sel.folder.id, None, events=s.expunge_events(sel.folder.name))
    s.unselect()
    s.ok(cmd.tag, "CLOSE completed")


# Command: RFC 3691 UNSELECT
async def cmd_unselect(s: Session, cmd: Command) -> None:
    s.unselect()
    s.ok(cmd.tag, "UNSELECT completed")


# Command: RFC 9051 §6.4.3 EXPUNGE, RFC 4315 §2.1 UID EXPUNGE
async def cmd_expunge(s: Session, cmd: Command) -> None:
    sel = _sel(s)
    if sel.readonly:
        s.no(cmd.tag, "mailbox is read-only", "READ-ONLY")
        return
    only = _resolve(s, cmd) if cmd.uid else None
    notes = s.notes
    gone, modseq = await s.ctx.storage.expunge(sel.folder.id, only, events=s.expunge_events(sel.folder.name))
    # Our own expunges first, then whatever else changed (also held-back expunges).
    for line in sel.expunge_now(gone, s.qresync):
        s.send(line)
    if gone:
        s.own_change(notes, modseq)
    await s.flush_updates(allow_expunge=True)
    hm = sel.highestmodseq
    s.ok(cmd.tag, "EXPUNGE completed", f"HIGHESTMODSEQ {hm}" if s.condstore and gone else None)


# Command: RFC 9051 §6.4.5 FETCH, §6.4.9 UID FETCH; RFC 7162 §3.1.4 CHANGEDSINCE, §3.2.6 VANISHED
async def cmd_fetch(s: Session, cmd: Command) -> None:
    sel = _sel(s)
    atts: list[FetchAtt] = cmd.args["atts"]
    mods = cmd.args["modifiers"]
    changedsince = mods.get("CHANGEDSINCE")
    if mods.get("VANISHED") and (not cmd.uid or not s.qresync or changedsince is None):
        s.bad_response(cmd.tag, "VANISHED needs UID FETCH, QRESYNC and CHANGEDSINCE")  # RFC 7162 §3.2.6
        return
    if changedsince is not None or any(a.name == "MODSEQ" for a in atts):
        s.condstore = True  # RFC 7162 §3.1: a CONDSTORE-enabling command
    uids = _resolve(s, cmd)
    if mods.get("VANISHED"):
        changes = await s.ctx.storage.changes_since(sel.folder.id, changedsince)
        if changes is not None:
            top = max(uids[-1] if uids else 0, max(changes.expunged, default=0))
            gone = [u for u in changes.expunged if cmd.args["set"].contains(u, top) and not sel.has(u)]
            if gone:
                s.untagged(b"VANISHED (EARLIER) " + response.seqset(gone))
    uids = [u for u in uids if u not in sel.pending_expunge]
    if changedsince is not None:
        uids = [u for u in uids if sel.modseq_of(u) > changedsince]
    need_raw = fetchmod.needs_raw(atts)
    need_summary = need_raw or any(a.name in ("ENVELOPE", "BODYSTRUCTURE", "BODY") for a in atts)
    if all(a.name in ("UID", "FLAGS", "MODSEQ") for a in atts):
        # Answered from the session's view (kept exact by sync): no store round trip. This is
        # what synchronising clients (mbsync, Thunderbird) send most.
        for u in uids:
            n = sel.msn(u)
            if n is None:
                continue
            items = []
            if cmd.uid or any(a.name == "UID" for a in atts):
                items.append(b"UID %d" % u)
            if any(a.name == "FLAGS" for a in atts):
                items.append(b"FLAGS " + response.flags(sel.flags_at(n)))
            if any(a.name == "MODSEQ" for a in atts) or (s.condstore and changedsince is not None):
                items.append(b"MODSEQ (%d)" % sel.modseq_at(n))
            s.send(b"* %d FETCH (" % n + b" ".join(items) + b")\r\n")
        await s.conn.drain()
        await s.flush_updates(allow_expunge=cmd.uid)
        s.ok(cmd.tag, f"{'UID ' if cmd.uid else ''}FETCH completed")
        return
    seen_now: set[int] = set()
    if fetchmod.sets_seen(atts) and not sel.readonly:
        unseen = [u for u in uids if "\\Seen" not in sel.flags_of(u)]
        if unseen:
            notes = s.notes
            res = await s.ctx.storage.store_flags(sel.folder.id, unseen, "+", ["\\Seen"], None, check_first=False)
            for m in res.changed:
                sel.set_flags(m.uid, m.flags, m.modseq)
                seen_now.add(m.uid)
            if res.changed:
                s.own_change(notes, res.changed[0].modseq)
            await s.read_receipts(sel.folder.name, res.first_seen)
    add_modseq = s.condstore and changedsince is not None
    chunk = s.ctx.settings.fetch_chunk
    body_count = 0
    for i in range(0, len(uids), chunk):
        part = uids[i : i + chunk]
        details = await s.ctx.storage.details(sel.folder.id, part, raw=need_raw, summary=need_summary)
        for d in details:
            n = sel.msn(d.uid)
            if n is None:
                continue
            its = atts if d.uid not in seen_now or any(a.name == "FLAGS" for a in atts) else atts + [FetchAtt("FLAGS")]
            try:
                s.send(fetchmod.render(n, d, its, add_uid=cmd.uid, add_modseq=add_modseq,
                                       flags=sel.flags_at(n)))
            except fetchmod.FetchError as e:
                s.no(cmd.tag, str(e), e.code)
                return
            if need_raw:
                body_count += 1
        await s.conn.drain()
    if body_count:
        # Ségur traceability: who read which messages (identifiers only, never content).
        await s.audit("imap.fetch_body", folder=sel.folder.name, count=body_count,
                      uids=response.seqset(uids).decode()[:2000])
    await s.flush_updates(allow_expunge=cmd.uid)
    s.ok(cmd.tag, f"{'UID ' if cmd.uid else ''}FETCH completed")


# Command: RFC 9051 §6.4.6 STORE; RFC 7162 §3.1.3 UNCHANGEDSINCE
def _maybe_unchanged(sel: SelectedMailbox, uids: list[int], mode: str, flags: list[str]) -> bool:
    if len(uids) > CHECK_FIRST_MAX:
        return False
    want = set(flags)
    for u in uids:
        have = set(sel.flags_of(u))
        if (not want <= have) if mode == "+" else (want & have) if mode == "-" else want != have:
            return False
    return True


async def cmd_store(s: Session, cmd: Command) -> None:
    sel = _sel(s)
    if sel.readonly:
        s.no(cmd.tag, "mailbox is read-only", "READ-ONLY")
        return
    a = cmd.args
    if a["unchangedsince"] is not None:
        s.condstore = True
    uids = [u for u in _resolve(s, cmd) if u not in sel.pending_expunge]
    notes = s.notes
    # Only when the view says the STORE may change nothing is that read first (the answer never
    # comes from the view: another session may have changed the flags since).
    res = await s.ctx.storage.store_flags(sel.folder.id, uids, a["mode"], a["flags"], a["unchangedsince"],
                                          check_first=_maybe_unchanged(sel, uids, a["mode"], a["flags"]))
    changed = {m.uid: m for m in res.changed}
    for m in res.changed:
        sel.set_flags(m.uid, m.flags, m.modseq)
        sel.keywords.update(f for f in m.flags if not f.startswith("\\"))
    if res.changed:
        s.own_change(notes, res.changed[0].modseq)
    modified = set(res.modified)
    for u in uids:
        if u in modified:
            continue
        if a["silent"] and not (s.condstore and u in changed):
            continue
        n = sel.msn(u)
        if n is None:
            continue
        items = []
        if not a["silent"]:
            items.append(b"FLAGS " + response.flags(sel.flags_at(n)))
        if cmd.uid:
            items.append(b"UID %d" % u)
        if s.condstore:
            items.append(b"MODSEQ (%d)" % sel.modseq_at(n))
        s.send(b"* %d FETCH (" % n + b" ".join(items) + b")\r\n")
    await s.read_receipts(sel.folder.name, res.first_seen)
    await s.flush_updates(allow_expunge=cmd.uid)
    code = f"MODIFIED {_numbers(sel, res.modified, cmd.uid).decode()}" if res.modified else None
    s.ok(cmd.tag, f"{'UID ' if cmd.uid else ''}STORE completed", code)


# Command: RFC 9051 §6.4.7 COPY, RFC 6851 MOVE; RFC 4315 COPYUID
async def cmd_copy(s: Session, cmd: Command) -> None:
    sel = _sel(s)
    move = cmd.name == "MOVE"
    if move and sel.readonly:
        s.no(cmd.tag, "mailbox is read-only", "READ-ONLY")
        return
    dest = await s.ctx.storage.folder(s.mailbox_id, cmd.args["mailbox"])
    if dest is None:
        s.no(cmd.tag, "no such mailbox", "TRYCREATE")
        return
    uids = [u for u in _resolve(s, cmd) if u not in sel.pending_expunge]
    if not uids:
        s.ok(cmd.tag, f"{cmd.name} completed (nothing to do)")
        return
    pairs = await s.ctx.storage.copy(sel.folder.id, uids, dest.id, move=move)
    code = None
    if pairs:
        code = (f"COPYUID {dest.uidvalidity} {response.seqset([p[0] for p in pairs]).decode()} "
                f"{response.seqset([p[1] for p in pairs]).decode()}")
        if len(pairs) > 1 and [p[1] for p in pairs] != sorted(p[1] for p in pairs):
            code = None
    if move:
        await s.audit("imap.move", folder=sel.folder.name, to=dest.name, count=len(pairs))
        if code:
            s.untagged(f"OK [{code}] moved")  # RFC 6851 §4.3: COPYUID before the expunges
        for line in sel.expunge_now([p[0] for p in pairs], s.qresync):
            s.send(line)
        await s.flush_updates(allow_expunge=True)
        s.ok(cmd.tag, "MOVE completed")
        return
    await s.flush_updates(allow_expunge=cmd.uid)
    s.ok(cmd.tag, "COPY completed", code)


async def _candidates(s: Session, key: tuple[Any, ...]) -> tuple[list[searchmod.Candidate], dict[int, Any]]:
    sel = _sel(s)
    need = searchmod.plan(key)
    cands = [searchmod.Candidate(u, n, fl, ms) for n, u, fl, ms in sel.entries()]
    if need >= searchmod.SUMMARY and cands:
        by_uid = {c.uid: c for c in cands}
        chunk = 500
        all_uids = [c.uid for c in cands]
        for i in range(0, len(all_uids), chunk):
            for d in await s.ctx.storage.details(sel.folder.id, all_uids[i : i + chunk],
                                                 raw=need >= searchmod.RAW):
                by_uid[d.uid].detail = d
    return cands, {}


def _search_ctx(s: Session) -> searchmod.Context:
    sel = _sel(s)
    return searchmod.Context(now=s.ctx.now(), max_uid=sel.last_uid, max_msn=sel.exists,
                             saved=sel.saved)


# Command: RFC 9051 §6.4.4 SEARCH (RFC 4731 ESEARCH, RFC 5182 SEARCHRES, RFC 7162 MODSEQ)
async def cmd_search(s: Session, cmd: Command) -> None:
    sel = _sel(s)
    key = cmd.args["key"]
    if searchmod.uses_modseq(key):
        s.condstore = True
    cands, lazy = await _candidates(s, key)
    ctx = _search_ctx(s)
    hits = [c for c in cands if searchmod.matches(key, c, ctx, lazy)]
    uids = [c.uid for c in hits]
    ret = cmd.args["return"]
    if ret is None and s.rev2:
        ret = []  # IMAP4rev2 answers SEARCH with ESEARCH (RFC 9051 §7.3.4)
    nums = uids if cmd.uid else [c.msn for c in hits]
    max_modseq = max((c.modseq for c in hits), default=0)
    if ret is None:
        line = b"SEARCH" + b"".join(b" %d" % n for n in nums)
        if searchmod.uses_modseq(key) and hits:
            line += b" (MODSEQ %d)" % max_modseq
        s.untagged(line)
    else:
        opts = ret or ["ALL"]
        if "SAVE" in opts:
            sel.saved = uids
            opts = [o for o in opts if o != "SAVE"]
        parts = [b'(TAG "' + cmd.tag.encode() + b'")']
        if cmd.uid:
            parts.append(b"UID")
        if nums:
            if "MIN" in opts:
                parts.append(b"MIN %d" % min(nums))
            if "MAX" in opts:
                parts.append(b"MAX %d" % max(nums))
            if "ALL" in opts:
                parts.append(b"ALL " + response.seqset(nums))
        if "COUNT" in opts:
            parts.append(b"COUNT %d" % len(nums))
        if searchmod.uses_modseq(key) and hits:
            parts.append(b"MODSEQ %d" % max_modseq)
        if opts or not ret:
            s.untagged(b"ESEARCH " + b" ".join(parts))
    await s.flush_updates(allow_expunge=cmd.uid)
    s.ok(cmd.tag, f"{'UID ' if cmd.uid else ''}SEARCH completed")


_RE_PREFIX = re.compile(r"^\s*((re|fwd?|tr)\s*(\[\d+\])?\s*:\s*)+", re.IGNORECASE)


def _base_subject(v: str | None) -> str:
    """RFC 5256 §2.1 base subject, simplified: leading Re:/Fw:/Fwd: and trailing (fwd) removed."""
    subject = searchmod._decode_header((v or "").encode()).strip()
    subject = _RE_PREFIX.sub("", subject)
    subject = re.sub(r"\s*\(fwd\)\s*$", "", subject, flags=re.IGNORECASE)
    return subject.strip().casefold()


def _addr_key(addrs: Any, display: bool) -> str:
    if not addrs:
        return ""
    a = addrs[0]
    if display and a[0]:
        return searchmod._decode_header(a[0].encode()).casefold()
    return (a[2] or "").casefold()


def _sort_key(crit: list[tuple[bool, str]], c: searchmod.Candidate) -> list[Any]:
    d = c.detail
    assert d is not None
    out: list[Any] = []
    for rev, k in crit:
        if k == "ARRIVAL":
            v: Any = d.internaldate.timestamp()
        elif k == "DATE":
            try:
                sent = email.utils.parsedate_to_datetime(d.envelope[0]) if d.envelope[0] else None
            except (TypeError, ValueError, IndexError):
                sent = None
            base = sent or d.internaldate
            if base.tzinfo is None:
                base = base.replace(tzinfo=dt.timezone.utc)
            v = base.timestamp()
        elif k == "SIZE":
            v = d.size
        elif k == "SUBJECT":
            v = _base_subject(d.envelope[1])
        elif k in ("FROM", "DISPLAYFROM"):
            v = _addr_key(d.envelope[2], k == "DISPLAYFROM")
        elif k in ("TO", "DISPLAYTO"):
            v = _addr_key(d.envelope[5], k == "DISPLAYTO")
        else:
            v = _addr_key(d.envelope[6], False)
        out.append(_Rev(v) if rev else v)
    out.append(c.uid)  # RFC 5256 §3: ties broken by sequence order
    return out


class _Rev:
    __slots__ = ("v",)

    def __init__(self, v: Any) -> None:
        self.v = v

    def __lt__(self, other: _Rev) -> bool:
        return bool(other.v < self.v)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Rev) and self.v == other.v


# Command: RFC 5256 SORT
async def cmd_sort(s: Session, cmd: Command) -> None:
    key = cmd.args["key"]
    cands, lazy = await _candidates(s, ("AND", (key, ("LARGER", -1))))
    ctx = _search_ctx(s)
    hits = [c for c in cands if c.detail is not None and searchmod.matches(key, c, ctx, lazy)]
    hits.sort(key=lambda c: _sort_key(cmd.args["criteria"], c))
    nums = [c.uid if cmd.uid else c.msn for c in hits]
    s.untagged(b"SORT" + b"".join(b" %d" % n for n in nums))
    await s.flush_updates(allow_expunge=cmd.uid)
    s.ok(cmd.tag, f"{'UID ' if cmd.uid else ''}SORT completed")


# Command: RFC 5256 §3 THREAD=ORDEREDSUBJECT
async def cmd_thread(s: Session, cmd: Command) -> None:
    key = cmd.args["key"]
    cands, lazy = await _candidates(s, ("AND", (key, ("LARGER", -1))))
    ctx = _search_ctx(s)
    hits = [c for c in cands if c.detail is not None and searchmod.matches(key, c, ctx, lazy)]
    # Group by base subject, sort each group by sent date (then sequence), order the threads by
    # the date of their first message; the first message is the parent of all the others.
    groups: dict[str, list[searchmod.Candidate]] = {}
    for c in hits:
        assert c.detail is not None
        groups.setdefault(_base_subject(c.detail.envelope[1]), []).append(c)
    threads = [sorted(g, key=lambda c: _sort_key([(False, "DATE")], c)) for g in groups.values()]
    threads.sort(key=lambda t: _sort_key([(False, "DATE")], t[0]))
    # RFC 5256 §4 grammar: thread lists are adjacent; one child is "(1 2)", several "(1 (2)(3))".
    lists = []
    for t in threads:
        nums = [c.uid if cmd.uid else c.msn for c in t]
        if len(nums) == 1:
            lists.append(b"(%d)" % nums[0])
        elif len(nums) == 2:
            lists.append(b"(%d %d)" % (nums[0], nums[1]))
        else:
            lists.append(b"(%d " % nums[0] + b"".join(b"(%d)" % n for n in nums[1:]) + b")")
    s.untagged(b"THREAD" + (b" " + b"".join(lists) if lists else b""))
    await s.flush_updates(allow_expunge=cmd.uid)
    s.ok(cmd.tag, f"{'UID ' if cmd.uid else ''}THREAD completed")


__all__ = ["cmd_thread", "cmd_check", "cmd_close", "cmd_copy", "cmd_expunge", "cmd_fetch", "cmd_search", "cmd_sort",
           "cmd_store", "cmd_unselect", "StoreError"]
