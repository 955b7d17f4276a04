"""One IMAP session: state, authentication, the selected-mailbox view and the command loop.

The session never touches a socket: it talks to a `Conn` (mssante.imap.server provides the
real one over asyncio + TLS; tests provide an in-memory one) and to a `Storage`. Commands are
looked up in `handlers.HANDLERS` (a table) after `state.allowed()` (a table) says yes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from mssante.imap import framing, response
from mssante.imap.parser import Command, ParseError, parse_command, parse_tag
from mssante.imap.selected import SelectedMailbox
from mssante.imap.state import State, allowed
from mssante.imap.store_types import Storage, StoreError

log = logging.getLogger("mssante.imap")

WAKE = object()  # Conn.next_* returns it when wakeup() was called (folder changed)


@dataclass
class ImapSettings:
    hostname: str = "localhost"
    append_limit: int = 25 * 1024 * 1024  # RFC 7889 APPENDLIMIT (SPECS.md §2: 25 MB messages)
    idle_timeout: float = 1800.0  # RFC 9051 §5.4: autologout timer at least 30 minutes
    command_timeout: float = 1800.0
    bad_command_limit: int = 20
    max_line: int = 64 * 1024
    max_literal: int = 64 * 1024  # literals other than APPEND's (LOGIN, SEARCH strings)
    max_command: int = 1024 * 1024
    output_limit: int = 256 * 1024  # bytes queued to a client before we wait for it to read
    write_timeout: float = 60.0  # a client that reads nothing this long is disconnected
    auth_failure_delay: float = 1.0
    fetch_chunk: int = 200
    # Without a notification, a selected session still looks for changes this often (seconds):
    # writers that do not publish to the notifier (another process on SQLite) are seen this late.
    poll_interval: float = 2.0
    idle_poll_interval: float = 60.0  # the same while in IDLE (10,000 idlers: ~170 cheap queries/s)
    # A successful password login is remembered this long (mssante.imap.authcache; 0: never).
    login_cache_seconds: float = 60.0


@dataclass(frozen=True)
class ReadReceipt:
    """The first \\Seen on a message asking for a read receipt (RFC 8098 Disposition-Notification-To).
    The MDN itself is left to the client (RFC 8098 §2.1: sending needs the user's consent)."""

    mailbox: str
    folder: str
    uid: int
    message_id: str | None
    notify_to: str
    at: dt.datetime


ReceiptHook = Callable[[ReadReceipt], Awaitable[None] | None]


@dataclass
class ServerContext:
    storage: Storage
    authenticator: Any  # mssante.auth.service.Authenticator
    notifier: Any  # mssante.store.notify.FolderNotifier
    settings: ImapSettings = field(default_factory=ImapSettings)
    audit: Any = None  # mssante.observability.audit.Audit
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc)
    on_read_receipt: ReceiptHook | None = None
    metrics: Any = None
    starttls: bool = False  # the listener offers STARTTLS (and LOGINDISABLED before it)
    audit_batch: AuditBatcher | None = None


class AuditBatcher:
    """Audit events of reads (logins, body fetches, appends) written in batches: one transaction per
    `delay` seconds instead of one per command. Deletions are not batched: their events commit in
    the expunge's own transaction (SqlStorage.expunge(events=...)). Never content (Audit refuses it)."""

    def __init__(self, storage: Storage, audit: Any, *, delay: float = 0.2, max_batch: int = 500) -> None:
        self.storage = storage
        self.audit = audit
        self.delay = delay
        self.max_batch = max_batch
        self._pending: list[Any] = []
        self._handle: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def record(self, action: str, actor: str, outcome: str, **fields: Any) -> None:
        self._pending.append(self.audit.row(action, actor, outcome, **fields))
        if len(self._pending) >= self.max_batch:
            self._kick()
        elif self._handle is None:
            self._handle = asyncio.get_running_loop().call_later(self.delay, self._kick)

    def _kick(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        t = asyncio.get_running_loop().create_task(self.flush())
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def flush(self) -> None:
        events, self._pending = self._pending, []
        if not events:
            return
        try:
            await self.storage.add_events(events)
        except Exception:
            log.exception("writing %d audit events failed", len(events))

    async def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.flush()


class Conn(Protocol):
    tls: bool
    peer: str

    @property
    def closed(self) -> bool: ...

    def write(self, data: bytes) -> None: ...
    async def drain(self) -> None: ...
    async def next_event(self, timeout: float) -> framing.Event | object | None: ...
    async def next_line(self, timeout: float, *, wakeable: bool = False) -> bytes | object | None: ...
    def wakeup(self) -> None: ...
    async def start_tls(self) -> bool: ...
    def peer_certificate(self) -> Any: ...
    def close(self) -> None: ...


class Logout(Exception):
    """End the session after the responses already written."""


class Session:
    def __init__(self, ctx: ServerContext, conn: Conn) -> None:
        self.ctx = ctx
        self.conn = conn
        self.state = State.NOT_AUTHENTICATED
        self.identity: Any = None
        self.address = ""
        self.mailbox_id = 0
        self.selected: SelectedMailbox | None = None
        self.condstore = False
        self.qresync = False
        self.rev2 = False
        self.bad = 0
        self._subscribed_folder: int | None = None
        self.correlation = uuid.uuid4().hex[:12]
        # Change tracking: the store is asked only when a notification says the folder changed,
        # or when `poll_interval` passed since the last look (a writer that did not publish).
        self._dirty = True
        self._last_poll = 0.0
        self.notes = 0  # notifications received for the selected folder

    # --- output -------------------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        self.conn.write(data)

    def untagged(self, line: bytes | str) -> None:
        self.conn.write(response.untagged(line))

    def ok(self, tag: str, text: str, code: str | None = None) -> None:
        self.conn.write(response.tagged(tag, "OK", text, code))

    def no(self, tag: str, text: str, code: str | None = None) -> None:
        self.conn.write(response.tagged(tag, "NO", text, code))

    def bad_response(self, tag: str, text: str, code: str | None = None) -> None:
        self.bad += 1
        self.conn.write(response.tagged(tag, "BAD", text, code))

    # --- capabilities (RFC 9051 §7.2.2) ----------------------------------------------------------
    def capabilities(self) -> str:
        caps = ["IMAP4rev1", "IMAP4rev2", "LITERAL+", "SASL-IR", "ID", "ENABLE"]
        if self.state == State.NOT_AUTHENTICATED:
            if not self.conn.tls and self.ctx.starttls:
                # RFC 9051 §6.2.3 / RFC 3501 §6.2.3: no LOGIN or AUTH=PLAIN before TLS.
                return " ".join(caps + ["STARTTLS", "LOGINDISABLED"])
            mechs = list(getattr(self.ctx.authenticator, "mechanisms", ("PLAIN", "LOGIN")))
            if "EXTERNAL" in mechs and self.conn.peer_certificate() is None:
                mechs.remove("EXTERNAL")
            return " ".join(caps + [f"AUTH={m}" for m in mechs])
        caps += ["IDLE", "UIDPLUS", "MOVE", "SPECIAL-USE", "CREATE-SPECIAL-USE", "NAMESPACE", "UNSELECT",
                 "CHILDREN", "CONDSTORE", "QRESYNC", "ESEARCH", "SEARCHRES", "LIST-EXTENDED", "LIST-STATUS",
                 "STATUS=SIZE", f"APPENDLIMIT={self.ctx.settings.append_limit}", "BINARY", "MULTIAPPEND",
                 "SORT", "THREAD=ORDEREDSUBJECT", "WITHIN"]
        return " ".join(caps)

    # --- the command loop -------------------------------------------------------------------------
    async def run(self) -> None:
        s = self.ctx.settings
        self.untagged(f"OK [CAPABILITY {self.capabilities()}] {s.hostname} MSSante IMAP ready")
        try:
            await self.conn.drain()
            while self.state != State.LOGOUT:
                ev = await self.conn.next_event(s.idle_timeout if self.state != State.NOT_AUTHENTICATED
                                                else min(60.0, s.command_timeout))
                if ev is None:
                    self.untagged("BYE autologout, idle too long")  # RFC 9051 §5.4
                    await self._drain_quietly()
                    break
                if ev is WAKE:
                    continue
                if isinstance(ev, framing.Continue):
                    self.send(b"+ Ready for literal data\r\n")
                elif isinstance(ev, framing.Refuse):
                    self.bad += 1
                    self.send(ev.tag.encode() + b" " + ev.response + b"\r\n")
                elif isinstance(ev, framing.Fatal):
                    self.untagged(f"BYE {ev.reason}")
                    break
                elif isinstance(ev, framing.CommandBytes):
                    await self.execute(ev.data)
                if self.bad > s.bad_command_limit:
                    self.untagged("BYE too many bad commands")
                    break
                await self.conn.drain()
        except Logout:
            pass
        except (ConnectionError, asyncio.TimeoutError):
            pass
        finally:
            self._unsubscribe()
            await self._drain_quietly()
            self.conn.close()

    async def _drain_quietly(self) -> None:
        try:
            await self.conn.drain()
        except (ConnectionError, asyncio.TimeoutError):
            pass

    async def execute(self, data: bytes) -> None:
        from mssante.imap.handlers import HANDLERS

        if data.strip() == b"":
            return
        try:
            cmd = parse_command(data)
        except ParseError as e:
            self.bad_response(e.tag if e.tag != "*" else parse_tag(data), str(e), e.code)
            return
        if not allowed(self.state, cmd.name):
            if cmd.name in ("LOGIN", "AUTHENTICATE") and self.state != State.NOT_AUTHENTICATED:
                self.bad_response(cmd.tag, "already authenticated")
            else:
                self.bad_response(cmd.tag, f"{cmd.name} not allowed now")
            return
        handler = HANDLERS[cmd.name]
        try:
            await handler(self, cmd)
        except Logout:
            raise
        except ParseError as e:
            self.bad_response(cmd.tag, str(e), e.code)
            return
        except StoreError as e:
            self.no(cmd.tag, str(e), e.code)
        except (ConnectionError, asyncio.TimeoutError):
            raise
        except Exception:
            # A server fault: logged with a correlation id, never its text to the client.
            ref = uuid.uuid4().hex[:12]
            log.exception("IMAP %s failed ref=%s", cmd.name, ref)
            self.no(cmd.tag, f"internal error, reference {ref}", "SERVERBUG")
            return

    # --- selected mailbox bookkeeping ---------------------------------------------------------------
    def _on_folder_change(self, _folder_id: int, modseq: int | None = None) -> None:
        sel = self.selected
        if modseq is not None and sel is not None and modseq <= sel.highestmodseq:
            return  # a change we already know (typically our own, echoed back by LISTEN)
        self.notes += 1
        self._dirty = True
        self.conn.wakeup()

    def own_change(self, notes_before: int, new_modseq: int) -> None:
        """After our own STORE: when our notification is the only one and our MODSEQ directly follows
        what the client knows, the view is already exact and the store need not be asked again."""
        sel = self.selected
        if (sel is not None and self.notes == notes_before + 1 and new_modseq == sel.highestmodseq + 1
                and not sel.pending_expunge):
            sel.highestmodseq = new_modseq
            self._dirty = False

    def subscribe_folder(self, folder_id: int) -> None:
        self._unsubscribe()
        self._dirty = True
        if self.ctx.notifier is not None:
            self.ctx.notifier.subscribe(folder_id, self._on_folder_change)
            self._subscribed_folder = folder_id

    def _unsubscribe(self) -> None:
        if self._subscribed_folder is not None and self.ctx.notifier is not None:
            self.ctx.notifier.unsubscribe(self._subscribed_folder, self._on_folder_change)
        self._subscribed_folder = None

    def unselect(self) -> None:
        self._unsubscribe()
        self.selected = None
        if self.state == State.SELECTED:
            self.state = State.AUTHENTICATED

    async def sync(self, *, allow_expunge: bool) -> list[bytes]:
        """Untagged updates for the selected mailbox (new mail, flag changes, expunges)."""
        sel = self.selected
        if sel is None:
            return []
        pre: list[bytes] = []
        if sel.announce_exists:  # our own APPEND, already in the view
            sel.announce_exists = False
            pre.append(response.untagged(b"%d EXISTS" % sel.exists))
        now = asyncio.get_running_loop().time()
        if (not self._dirty and now - self._last_poll < self.ctx.settings.poll_interval
                and not (allow_expunge and sel.pending_expunge)):
            return pre
        self._dirty = False
        self._last_poll = now
        changes = await self.ctx.storage.changes_since(sel.folder.id, sel.highestmodseq)
        if changes is None:
            # The folder was deleted by another session.
            self.untagged("BYE selected mailbox no longer exists")
            raise Logout()
        if not changes.changed and not changes.expunged and not (allow_expunge and sel.pending_expunge):
            return pre
        return pre + sel.apply(changes, allow_expunge=allow_expunge, condstore=self.condstore, qresync=self.qresync)

    async def flush_updates(self, *, allow_expunge: bool) -> None:
        for line in await self.sync(allow_expunge=allow_expunge):
            self.send(line)

    # --- audit and receipts -----------------------------------------------------------------------------
    async def audit(self, action: str, outcome: str = "ok", **fields: Any) -> None:
        if self.ctx.audit is None:
            return
        actor = self.address or fields.pop("login", "")
        fields.pop("login", None)
        try:
            if self.ctx.audit_batch is not None:
                self.ctx.audit_batch.record(action, actor, outcome, remote=self.conn.peer, session=self.correlation,
                                            **fields)
                return
            await self.ctx.audit.record(action, actor, outcome, remote=self.conn.peer, session=self.correlation,
                                        **fields)
        except Exception:  # the audit trail must not take the session down; it is logged loudly
            log.exception("audit record failed for %s", action)

    def expunge_events(self, folder: str) -> Any:
        """Audit events committed in the expunge's own transaction (SPECS.md §2: trace deletions)."""
        audit = self.ctx.audit
        if audit is None:
            return None
        from mssante.imap import response as resp

        return lambda uids: [audit.row("imap.expunge", self.address, "ok", folder=folder, count=len(uids),
                                         uids=resp.seqset(uids).decode()[:2000], remote=self.conn.peer,
                                         session=self.correlation)]

    async def read_receipts(self, folder: str, first_seen: list[tuple[int, str | None, str]]) -> None:
        for uid, mid, to in first_seen:
            await self.audit("imap.read_receipt_requested", folder=folder, uid=uid, message_id=mid or "")
            hook = self.ctx.on_read_receipt
            if hook is None:
                continue
            ev = ReadReceipt(self.address, folder, uid, mid, to, self.ctx.now())
            try:
                r = hook(ev)
                if asyncio.iscoroutine(r):
                    await r
            except Exception:
                log.exception("read receipt hook failed")


def command_name(cmd: Command) -> str:
    return ("UID " if cmd.uid else "") + cmd.name
