"""Command handlers for the any / not-authenticated / authenticated states, and the dispatch table.

Each handler is `async def h(session, cmd) -> None` and writes its responses through the session.
The selected-state commands live in mssante.imap.handlers_selected. `HANDLERS` maps every
command name of parser.ARGUMENTS to its handler (a test checks the two tables agree).
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Awaitable, Callable
from typing import Any

from mssante.auth import sasl
from mssante.imap import response
from mssante.imap.handlers_selected import (
    cmd_check,
    cmd_close,
    cmd_copy,
    cmd_expunge,
    cmd_fetch,
    cmd_search,
    cmd_sort,
    cmd_store,
    cmd_thread,
    cmd_unselect,
)
from mssante.imap.parser import Command
from mssante.imap.selected import SelectedMailbox
from mssante.imap.session import WAKE, Logout, Session
from mssante.imap.state import State
from mssante.imap.store_types import DELIMITER, FolderInfo, StoreError, norm_flags

Handler = Callable[[Session, Command], Awaitable[None]]



# --- any state (RFC 9051 §6.1) ----------------------------------------------------------------------
# Command: RFC 9051 §6.1.1
async def cmd_capability(s: Session, cmd: Command) -> None:
    s.untagged("CAPABILITY " + s.capabilities())
    s.ok(cmd.tag, "CAPABILITY completed")


# Command: RFC 9051 §6.1.2 (a poll: new mail, flag changes, expunges)
async def cmd_noop(s: Session, cmd: Command) -> None:
    await s.flush_updates(allow_expunge=not cmd.uid)
    s.ok(cmd.tag, "NOOP completed")


# Command: RFC 9051 §6.1.3
async def cmd_logout(s: Session, cmd: Command) -> None:
    s.untagged("BYE logging out")
    s.ok(cmd.tag, "LOGOUT completed")
    s.state = State.LOGOUT
    raise Logout()


# Command: RFC 2971 ID
async def cmd_id(s: Session, cmd: Command) -> None:
    s.untagged('ID ("name" "mssante" "vendor" "mssante")')
    s.ok(cmd.tag, "ID completed")


# --- not authenticated (RFC 9051 §6.2) ----------------------------------------------------------------
# Command: RFC 9051 §6.2.1 STARTTLS
async def cmd_starttls(s: Session, cmd: Command) -> None:
    if s.conn.tls or not s.ctx.starttls:
        s.bad_response(cmd.tag, "TLS already active or not offered")
        return
    s.ok(cmd.tag, "begin TLS negotiation now")
    await s.conn.drain()
    if not await s.conn.start_tls():
        raise Logout()


def _tls_required(s: Session) -> bool:
    return not s.conn.tls and s.ctx.starttls


async def _login_done(s: Session, cmd: Command, result: Any, method: str, login: str) -> None:
    if not result.ok or result.identity is None:
        await s.audit("imap.login", "failure", login=login, method=method, reason=str(result.reason))
        if s.ctx.metrics is not None:
            s.ctx.metrics.auth_failures.labels("imap").inc()
        await asyncio.sleep(s.ctx.settings.auth_failure_delay)  # slows guessing; the limiter blocks
        code = "UNAVAILABLE" if getattr(result, "temporary", False) else "AUTHENTICATIONFAILED"
        s.no(cmd.tag, "authentication failed", code)
        return
    ident = result.identity
    boxes = dict(ident.mailboxes)
    addr = ident.primary if ident.primary in boxes else (next(iter(boxes)) if boxes else None)
    if addr is None:
        await s.audit("imap.login", "failure", login=login, method=method, reason="no mailbox")
        s.no(cmd.tag, "no mailbox for this identity", "AUTHORIZATIONFAILED")
        return
    s.identity = ident
    s.address = addr
    s.mailbox_id = boxes[addr]
    s.state = State.AUTHENTICATED
    await s.audit("imap.login", "ok", method=method)
    s.ok(cmd.tag, f"{method} authentication successful", "CAPABILITY " + s.capabilities())


# Command: RFC 9051 §6.2.3 LOGIN
async def cmd_login(s: Session, cmd: Command) -> None:
    if _tls_required(s):
        s.no(cmd.tag, "LOGIN needs TLS first (STARTTLS)", "PRIVACYREQUIRED")
        return
    user = cmd.args["user"]
    r = await s.ctx.authenticator.password(user, cmd.args["password"], remote=s.conn.peer)
    await _login_done(s, cmd, r, "LOGIN", user)


async def _sasl_step(s: Session, challenge: bytes) -> bytes | None:
    """Send a continuation and read the client's line; None when the client cancels with '*'."""
    s.send(b"+ " + challenge + b"\r\n")
    await s.conn.drain()
    line = await s.conn.next_line(60.0)
    if line is None or line is WAKE:
        raise Logout()
    assert isinstance(line, bytes)
    text = line.rstrip(b"\r\n")
    if text == b"*":  # RFC 9051 §6.2.2: the client cancels
        return None
    return text


# Command: RFC 9051 §6.2.2 AUTHENTICATE (RFC 4959 SASL-IR)
async def cmd_authenticate(s: Session, cmd: Command) -> None:
    mech = cmd.args["mechanism"]
    initial = cmd.args["initial"]
    auth = s.ctx.authenticator
    if mech not in getattr(auth, "mechanisms", ("PLAIN", "LOGIN")) or (mech != "EXTERNAL" and _tls_required(s)):
        s.no(cmd.tag, f"mechanism {mech} not available", "CANNOT" if mech == "EXTERNAL" else "PRIVACYREQUIRED"
             if _tls_required(s) else None)
        return
    try:
        if mech == "PLAIN":
            msg = initial if initial is not None else await _sasl_step(s, b"")
            if msg is None:
                s.bad_response(cmd.tag, "authentication cancelled")
                return
            creds = sasl.parse_plain(sasl.decode_b64(msg))
            r = await auth.password(creds.username, creds.password, remote=s.conn.peer, authzid=creds.authzid)
            await _login_done(s, cmd, r, "PLAIN", creds.username)
        elif mech == "LOGIN":
            u = await _sasl_step(s, base64.b64encode(b"Username:"))
            if u is None:
                s.bad_response(cmd.tag, "authentication cancelled")
                return
            user = sasl.parse_login_field(sasl.decode_b64(u), "user name")
            p = await _sasl_step(s, base64.b64encode(b"Password:"))
            if p is None:
                s.bad_response(cmd.tag, "authentication cancelled")
                return
            pw = sasl.parse_login_field(sasl.decode_b64(p), "password")
            r = await auth.password(user, pw, remote=s.conn.peer)
            await _login_done(s, cmd, r, "LOGIN", user)
        elif mech in ("XOAUTH2", "OAUTHBEARER"):
            msg = initial if initial is not None else await _sasl_step(s, b"")
            if msg is None:
                s.bad_response(cmd.tag, "authentication cancelled")
                return
            raw = sasl.decode_b64(msg)
            bearer = sasl.parse_xoauth2(raw) if mech == "XOAUTH2" else sasl.parse_oauthbearer(raw)
            r = await auth.token(bearer.token, username=bearer.username, remote=s.conn.peer)
            if not r.ok:
                # RFC 7628 §3.2.2: an error challenge, the client answers with a dummy response.
                await _sasl_step(s, sasl.oauth_error_challenge().encode())
            await _login_done(s, cmd, r, mech, bearer.username or "token")
        elif mech == "EXTERNAL":
            msg = initial if initial is not None else await _sasl_step(s, b"")
            if msg is None:
                s.bad_response(cmd.tag, "authentication cancelled")
                return
            authzid = sasl.parse_external(sasl.decode_b64(msg))
            r = await auth.certificate(s.conn.peer_certificate(), authzid=authzid, remote=s.conn.peer)
            await _login_done(s, cmd, r, "EXTERNAL", authzid or "certificate")
    except sasl.SaslError as e:
        s.bad_response(cmd.tag, str(e))


# --- authenticated (RFC 9051 §6.3) ----------------------------------------------------------------------
ENABLEABLE = {"CONDSTORE", "QRESYNC", "IMAP4REV2"}


# Command: RFC 5161 ENABLE
async def cmd_enable(s: Session, cmd: Command) -> None:
    done: list[str] = []
    for c in cmd.args["caps"]:
        if c not in ENABLEABLE:
            continue
        if c == "CONDSTORE":
            s.condstore = True
        elif c == "QRESYNC":  # RFC 7162 §3.2.3: QRESYNC implies CONDSTORE
            s.qresync = s.condstore = True
        elif c == "IMAP4REV2":
            s.rev2 = True
        done.append("IMAP4rev2" if c == "IMAP4REV2" else c)
    s.untagged("ENABLED" + "".join(" " + d for d in done))
    s.ok(cmd.tag, "ENABLE completed")


async def _folder(s: Session, name: str) -> FolderInfo:
    f = await s.ctx.storage.folder(s.mailbox_id, name)
    if f is None:
        raise StoreError("no such mailbox", "NONEXISTENT")
    return f


# Command: RFC 9051 §6.3.2 SELECT, §6.3.3 EXAMINE; RFC 7162 §3.2.5 QRESYNC
async def cmd_select(s: Session, cmd: Command) -> None:
    readonly = cmd.name == "EXAMINE"
    if s.selected is not None:
        s.unselect()
        if s.qresync or s.rev2:
            s.untagged("OK [CLOSED] previous mailbox closed")  # RFC 7162 §3.2.11
    if cmd.args["condstore"]:
        s.condstore = True
    qres = cmd.args["qresync"]
    if qres is not None and not s.qresync:
        s.bad_response(cmd.tag, "QRESYNC parameter needs ENABLE QRESYNC first")
        return
    opened = await s.ctx.storage.open_folder(s.mailbox_id, cmd.args["mailbox"])
    if opened is None:
        raise StoreError("no such mailbox", "NONEXISTENT")
    folder, msgs = opened
    # Subscribing marks the view dirty: the next sync asks the store for anything that changed
    # since folder.highestmodseq, including what raced with the two reads (idempotently).
    s.subscribe_folder(folder.id)
    sel = SelectedMailbox(folder, msgs, readonly=readonly)
    s.selected = sel
    s.state = State.SELECTED
    kw = sorted(sel.keywords)
    system = "\\Answered \\Flagged \\Deleted \\Seen \\Draft"
    s.untagged(f"{sel.exists} EXISTS")
    if not s.rev2:
        s.untagged("0 RECENT")
    s.untagged(f"FLAGS ({' '.join([system] + kw)})")
    s.untagged(f"OK [PERMANENTFLAGS ({system} \\*)] flags permitted" if not readonly
               else "OK [PERMANENTFLAGS ()] read-only")
    if not s.rev2:
        unseen = sel.first_unseen()
        if unseen is not None:
            s.untagged(f"OK [UNSEEN {unseen}] first unseen")
    s.untagged(f"OK [UIDVALIDITY {folder.uidvalidity}] UIDs valid")
    s.untagged(f"OK [UIDNEXT {folder.uidnext}] predicted next UID")
    s.untagged(f"OK [HIGHESTMODSEQ {sel.highestmodseq}] highest modseq")  # RFC 7162 §3.1.2.1
    if s.rev2:
        s.untagged(b"LIST () \"/\" " + response.mailbox(folder.name))
    if qres is not None:
        await _qresync(s, qres)
    s.ok(cmd.tag, f"{cmd.name} completed", "READ-ONLY" if readonly else "READ-WRITE")


async def _qresync(s: Session, qres: tuple[Any, ...]) -> None:
    """RFC 7162 §3.2.5.2: VANISHED (EARLIER) and FETCH for what changed since the client's MODSEQ."""
    from mssante.imap.fetch import render
    from mssante.imap.parser import FetchAtt

    sel = s.selected
    assert sel is not None
    uidvalidity, modseq, known, _match = qres
    if uidvalidity != sel.folder.uidvalidity:
        return
    changes = await s.ctx.storage.changes_since(sel.folder.id, modseq)
    if changes is None:
        return
    top = sel.last_uid
    gone = [u for u in changes.expunged if known is None or known.contains(u, top)]
    if gone:
        s.untagged(b"VANISHED (EARLIER) " + response.seqset(gone))
    uids = [m.uid for m in changes.changed if sel.has(m.uid)]
    if uids:
        details = await s.ctx.storage.details(sel.folder.id, uids, raw=False, summary=False)
        for d in details:
            n = sel.msn(d.uid)
            if n is not None:
                s.send(render(n, d, [FetchAtt("FLAGS")], add_uid=True, add_modseq=True, flags=sel.flags_at(n)))


# Command: RFC 9051 §6.3.4 CREATE (RFC 6154 §3 USE)
async def cmd_create(s: Session, cmd: Command) -> None:
    name = cmd.args["mailbox"].rstrip(DELIMITER)  # RFC 3501 §6.3.3: a trailing delimiter is dropped
    use = cmd.args.get("use") or []
    special = None
    if use:
        allowed_uses = {"\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash"}
        if len(use) > 1 or use[0] not in allowed_uses:
            s.no(cmd.tag, "unsupported special use", "USEATTR")
            return
        special = use[0]
    await s.ctx.storage.create(s.mailbox_id, name, special)
    s.ok(cmd.tag, "CREATE completed")


# Command: RFC 9051 §6.3.5 DELETE
async def cmd_delete(s: Session, cmd: Command) -> None:
    name = cmd.args["mailbox"]
    if s.selected is not None and s.selected.folder.name == name:
        s.unselect()
    await s.ctx.storage.delete(s.mailbox_id, name)
    await s.audit("imap.delete_mailbox", folder=name)
    s.ok(cmd.tag, "DELETE completed")


# Command: RFC 9051 §6.3.6 RENAME
async def cmd_rename(s: Session, cmd: Command) -> None:
    await s.ctx.storage.rename(s.mailbox_id, cmd.args["old"], cmd.args["new"])
    s.ok(cmd.tag, "RENAME completed")


# Command: RFC 9051 §6.3.7 SUBSCRIBE, §6.3.8 UNSUBSCRIBE
async def cmd_subscribe(s: Session, cmd: Command) -> None:
    await s.ctx.storage.subscribe(s.mailbox_id, cmd.args["mailbox"], cmd.name == "SUBSCRIBE")
    s.ok(cmd.tag, f"{cmd.name} completed")


def _pattern(reference: str, pattern: str) -> re.Pattern[str]:
    """RFC 3501 §6.3.8: '*' matches anything, '%' anything but the hierarchy delimiter."""
    full = pattern if pattern.startswith(DELIMITER) or not reference else (
        reference + ("" if reference.endswith(DELIMITER) else "") + pattern)
    out = []
    for ch in full:
        out.append(".*" if ch == "*" else "[^/]*" if ch == "%" else re.escape(ch))
    rx = "".join(out)
    if full.upper().startswith("INBOX"):
        rx = "(?i:INBOX)" + "".join(out[5:])
    return re.compile(rx, re.DOTALL)


# Command: RFC 9051 §6.3.9 LIST (RFC 5258 LIST-EXTENDED, RFC 5819 LIST-STATUS, RFC 6154 SPECIAL-USE); LSUB
async def cmd_list(s: Session, cmd: Command) -> None:
    a = cmd.args
    lsub = a.get("lsub", False)
    patterns = a["patterns"]
    if not lsub and patterns == [""]:
        # RFC 3501 §6.3.8: the hierarchy delimiter and root name.
        s.untagged('LIST (\\Noselect) "/" ""')
        s.ok(cmd.tag, "LIST completed")
        return
    sel_opts = set(a["select"])
    ret = a["return"]
    folders = await s.ctx.storage.folders(s.mailbox_id)
    names = {f.name for f in folders}
    rxs = [_pattern(a["reference"], p) for p in patterns]
    subscribed_only = "SUBSCRIBED" in sel_opts
    special_only = "SPECIAL-USE" in sel_opts
    for f in folders:
        if not any(r.fullmatch(f.name) for r in rxs):
            continue
        if subscribed_only and not f.subscribed:
            continue
        if special_only and not f.special_use:
            continue
        attrs: list[str] = []
        if not lsub:
            has_children = any(n.startswith(f.name + DELIMITER) for n in names)
            attrs.append("\\HasChildren" if has_children else "\\HasNoChildren")  # RFC 3348 CHILDREN
            if f.special_use:  # RFC 6154 §2: returned in LIST by default
                attrs.append(f.special_use)
            if f.subscribed and (subscribed_only or "SUBSCRIBED" in ret):
                attrs.append("\\Subscribed")
        kind = "LSUB" if lsub else "LIST"
        s.send(b"* " + kind.encode() + b" (" + " ".join(attrs).encode() + b') "/" ' + response.mailbox(f.name)
               + b"\r\n")
        if "STATUS" in ret:
            await _status_response(s, f, ret["STATUS"])
    s.ok(cmd.tag, f"{'LSUB' if lsub else 'LIST'} completed")


# Command: RFC 2342 NAMESPACE
async def cmd_namespace(s: Session, cmd: Command) -> None:
    s.untagged('NAMESPACE (("" "/")) NIL NIL')
    s.ok(cmd.tag, "NAMESPACE completed")


async def _status_response(s: Session, f: FolderInfo, items: list[str]) -> None:
    st = await s.ctx.storage.status(f.id)
    vals = {
        "MESSAGES": st.messages, "RECENT": 0, "UIDNEXT": f.uidnext, "UIDVALIDITY": f.uidvalidity,
        "UNSEEN": st.unseen, "HIGHESTMODSEQ": f.highestmodseq, "SIZE": st.size, "DELETED": st.deleted,
        "APPENDLIMIT": s.ctx.settings.append_limit,
    }
    body = " ".join(f"{i} {vals[i]}" for i in items)
    s.send(b"* STATUS " + response.mailbox(f.name) + b" (" + body.encode() + b")\r\n")


# Command: RFC 9051 §6.3.11 STATUS (RFC 8438 STATUS=SIZE, RFC 7162 HIGHESTMODSEQ)
async def cmd_status(s: Session, cmd: Command) -> None:
    f = await _folder(s, cmd.args["mailbox"])
    if "HIGHESTMODSEQ" in cmd.args["items"]:
        s.condstore = True
    await _status_response(s, f, cmd.args["items"])
    s.ok(cmd.tag, "STATUS completed")


# Command: RFC 9051 §6.3.12 APPEND (RFC 3502 MULTIAPPEND, RFC 4315 APPENDUID)
async def cmd_append(s: Session, cmd: Command) -> None:
    name = cmd.args["mailbox"]
    f = await s.ctx.storage.folder(s.mailbox_id, name)
    if f is None:
        s.no(cmd.tag, "no such mailbox", "TRYCREATE")
        return
    uids: list[int] = []
    sel = s.selected if s.selected is not None and s.selected.folder.id == f.id else None
    own = sel is not None and len(cmd.args["messages"]) == 1
    for flags, date, data in cmd.args["messages"]:
        if len(data) > s.ctx.settings.append_limit:
            s.no(cmd.tag, "message exceeds APPENDLIMIT", "TOOBIG")
            return
        if not data:
            s.no(cmd.tag, "empty message")
            return
        notes = s.notes
        uid, modseq = await s.ctx.storage.append(f.id, data, flags, date or s.ctx.now())
        uids.append(uid)
        if own and sel is not None and sel.add_own(uid, norm_flags(flags), modseq) and s.notes == notes + 1:
            s.own_change(notes, modseq)  # the view already has it: no need to ask the store again
    await s.audit("imap.append", folder=name, count=len(uids), size=sum(len(m[2]) for m in cmd.args["messages"]))
    if sel is not None:
        await s.flush_updates(allow_expunge=True)
    s.ok(cmd.tag, "APPEND completed", f"APPENDUID {f.uidvalidity} {response.seqset(uids).decode()}")


# Command: RFC 9051 §6.3.13 IDLE (RFC 2177)
async def cmd_idle(s: Session, cmd: Command) -> None:
    s.send(b"+ idling\r\n")
    await s.flush_updates(allow_expunge=True)
    await s.conn.drain()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + s.ctx.settings.idle_timeout
    while True:
        left = deadline - loop.time()
        got = await s.conn.next_line(max(0.0, min(left, s.ctx.settings.idle_poll_interval)), wakeable=True)
        if got is None and not s.conn.closed and loop.time() < deadline:
            got = WAKE  # a periodic look for changes made by writers that do not notify
        if got is None:
            s.untagged("BYE idle timeout")
            raise Logout()
        if got is WAKE:
            await s.flush_updates(allow_expunge=True)
            await s.conn.drain()
            continue
        assert isinstance(got, bytes)
        if got.rstrip(b"\r\n").upper() == b"DONE":
            s.ok(cmd.tag, "IDLE terminated")
            return
        s.bad_response(cmd.tag, "expected DONE")
        return


HANDLERS: dict[str, Callable[[Session, Command], Awaitable[None]]] = {
    "CAPABILITY": cmd_capability, "NOOP": cmd_noop, "LOGOUT": cmd_logout, "ID": cmd_id,
    "STARTTLS": cmd_starttls, "LOGIN": cmd_login, "AUTHENTICATE": cmd_authenticate,
    "ENABLE": cmd_enable, "SELECT": cmd_select, "EXAMINE": cmd_select, "CREATE": cmd_create,
    "DELETE": cmd_delete, "RENAME": cmd_rename, "SUBSCRIBE": cmd_subscribe, "UNSUBSCRIBE": cmd_subscribe,
    "LIST": cmd_list, "LSUB": cmd_list, "NAMESPACE": cmd_namespace, "STATUS": cmd_status,
    "APPEND": cmd_append, "IDLE": cmd_idle,
    "CHECK": cmd_check, "CLOSE": cmd_close, "UNSELECT": cmd_unselect, "EXPUNGE": cmd_expunge,
    "SEARCH": cmd_search, "FETCH": cmd_fetch, "STORE": cmd_store, "COPY": cmd_copy, "MOVE": cmd_copy,
    "SORT": cmd_sort, "THREAD": cmd_thread,
}
