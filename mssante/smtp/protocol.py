"""The SMTP connection: aiosmtpd's `SMTP` subclassed for what the gateway needs.

aiosmtpd gives the command loop, STARTTLS (with the RFC 3207 §4.2 reset and the discarding of plaintext
pipelined after STARTTLS) and the command line limits. This subclass adds:
- ENHANCEDSTATUSCODES (RFC 2034) on every reply, PIPELINING (RFC 2920), DSN (RFC 3461), SIZE (RFC 1870),
  8BITMIME (RFC 6152) in EHLO; MAIL/RCPT parameters parsed by mssante.smtp.envelope;
- a DATA reader that refuses bare CR / bare LF (SMTP smuggling, RFC 5321 §2.3.8), enforces the
  message size (RFC 1870), the line length (RFC 5321 §4.5.3.1.6) and the header size, under its own timeout;
- a bad-command budget, per-peer connection limits, a 421 on timeout;
- SASL PLAIN, LOGIN, XOAUTH2, OAUTHBEARER, EXTERNAL through mssante.auth (RFC 4954), over TLS only;
- exceptions become "451 4.3.0 ... reference <id>": exception text never reaches the peer.

Policy (who may send what to whom) is not here: `SmtpPolicy` objects (inbound.py, submission.py) decide.
"""

from __future__ import annotations

import asyncio
import collections
from asyncio import sslproto
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aiosmtpd.smtp import SMTP, Session, TLSSetupException

from mssante.auth import sasl
from mssante.auth.service import AuthResult, Identity
from mssante.smtp import replies
from mssante.smtp.envelope import Transaction, parse_mail, parse_rcpt
from mssante.smtp.replies import SmtpReply, with_enhanced

log = logging.getLogger("mssante.smtp")


@dataclass(frozen=True)
class Limits:
    max_message_size: int = 25 * 1024 * 1024
    max_recipients: int = 100
    max_line_length: int = 1000  # with CRLF, before dot-stuffing
    max_header_size: int = 256 * 1024
    bad_command_limit: int = 20
    command_timeout: float = 300.0
    data_timeout: float = 600.0
    max_auth_line: int = 16 * 1024

    @classmethod
    def from_config(cls, smtp: Any) -> Limits:
        return cls(smtp.max_message_size, smtp.max_recipients, smtp.max_line_length, smtp.max_header_size,
                   smtp.bad_command_limit, smtp.command_timeout, smtp.data_timeout)


_DATA_CHUNK = 64 * 1024  # StreamReader bound while reading DATA (it pauses the transport at twice that)


class _DataLines:
    """The DATA rules, line by line (the reference the fast path of _read_data falls back on)."""

    def __init__(self, limits: Limits) -> None:
        self.max_line = limits.max_line_length + 1  # the transparency dot (RFC 5321 §4.5.2)
        self.max_size = limits.max_message_size
        self.max_header = limits.max_header_size
        self.parts: list[bytes] = []
        self.size = 0
        self.header_size = 0
        self.in_header = True
        self.problem: str | None = None

    def feed(self, data: bytes) -> bytes:
        """Every complete line of `data` (not the end-of-data line); returns the incomplete rest."""
        lines = data.split(b"\n")
        for line in lines[:-1]:
            self.line(line + b"\n")
        return lines[-1]

    def too_long(self) -> None:
        self.problem = self.problem or replies.LINE_TOO_LONG
        self.parts = []

    def line(self, line: bytes) -> None:
        # RFC 5321 §2.3.8: CR and LF only as CRLF. A bare LF or CR can hide a second end-of-data
        # for a downstream server ("SMTP smuggling"): refuse the whole message.
        problem = self.problem
        if len(line) < 2 or line[-2] != 13 or b"\r" in line[:-2]:
            problem = problem or replies.BARE_CR_LF
        if len(line) > self.max_line:
            problem = problem or replies.LINE_TOO_LONG
        if line[:1] == b".":
            line = line[1:]
        self.size += len(line)
        if self.in_header:
            if line == b"\r\n":
                self.in_header = False
            else:
                self.header_size += len(line)
                if self.header_size > self.max_header:
                    problem = problem or replies.HEADER_TOO_BIG
        if self.size > self.max_size:
            problem = problem or replies.TOO_BIG
        self.problem = problem
        if problem is None:
            self.parts.append(line)
        elif self.parts:
            self.parts = []


class PeerTracker:
    """Per-address connection concurrency and rate (pure: `now` in seconds is a parameter)."""

    def __init__(self, max_concurrent: int, max_per_minute: int) -> None:
        self.max_concurrent = max_concurrent
        self.max_per_minute = max_per_minute
        self._open: dict[str, int] = {}
        self._recent: dict[str, collections.deque[float]] = {}

    def acquire(self, ip: str, now: float) -> bool:
        if self.max_concurrent and self._open.get(ip, 0) >= self.max_concurrent:
            return False
        if self.max_per_minute:
            q = self._recent.setdefault(ip, collections.deque())
            while q and q[0] <= now - 60.0:
                q.popleft()
            if len(q) >= self.max_per_minute:
                return False
            q.append(now)
            if len(self._recent) > 50_000:
                self._recent = {k: v for k, v in self._recent.items() if v and v[-1] > now - 60.0}
        self._open[ip] = self._open.get(ip, 0) + 1
        return True

    def release(self, ip: str) -> None:
        n = self._open.get(ip, 0) - 1
        if n <= 0:
            self._open.pop(ip, None)
        else:
            self._open[ip] = n


class CompactSSLProtocol(sslproto.SSLProtocol):
    """asyncio's TLS protocol with a 16 KiB read buffer instead of 256 KiB (Python 3.11 allocates and zeroes
    `max_size` per connection): idle TLS connections cost tens of KiB, not hundreds. 32 KiB still holds two
    full TLS records (16 KiB each, RFC 8446 §5.1)."""

    max_size = 4 * 1024


class GatewaySession(Session):
    """Per connection (recreated after STARTTLS, RFC 3207 §4.2)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.tls_version: str | None = None
        self.tls_cipher: str | None = None
        self.peer_cert: Any = None  # cryptography x509.Certificate
        self.cert_decision: Any = None  # pki.validation.Decision (MTA)
        self.peer_dn: str | None = None  # the peer certificate's subject (RFC 4514), once computed
        self.identity: Identity | None = None  # submission, after AUTH


class SmtpPolicy(Protocol):
    listener: str  # "mta" | "submission" (metrics, audit)
    protocol_name: str  # Received "with" value: ESMTPS / ESMTPSA

    def tls_established(self, conn: GatewaySMTP) -> None: ...

    async def mail(self, conn: GatewaySMTP, tx: Transaction) -> str: ...

    async def rcpt(self, conn: GatewaySMTP, tx: Transaction, index: int) -> str: ...

    async def data(self, conn: GatewaySMTP, tx: Transaction, raw: bytes) -> str: ...


_COMMANDS: dict[type, tuple[str, ...]] = {}


def _command_names(cls: type) -> tuple[str, ...]:
    names = _COMMANDS.get(cls)
    if names is None:
        names = tuple(sorted(n[5:] for n in dir(cls) if n.startswith("smtp_")))
        _COMMANDS[cls] = names
    return names


class _NoHooks:
    """aiosmtpd looks handler hooks up by name; ours are explicit methods on the policy instead."""


class GatewaySMTP(SMTP):
    def __init__(
        self,
        policy: SmtpPolicy,
        *,
        limits: Limits,
        hostname: str,
        tls_context: Any,
        implicit_tls: bool = False,
        peers: PeerTracker | None = None,
        authenticator: Any = None,
        auth_mechanisms: tuple[str, ...] = (),
        on_open: Callable[[GatewaySMTP], None] | None = None,
        on_close: Callable[[GatewaySMTP], None] | None = None,
        metrics: Any = None,
    ) -> None:
        # The StreamReader limit bounds every line read (commands, DATA lines, AUTH responses).
        self.line_length_limit = max(limits.max_line_length + 1, limits.max_auth_line if authenticator else 0, 1024)
        self._init_base(hostname, None if implicit_tls else tls_context, limits)
        self.policy = policy
        self.limits = limits
        self.implicit_tls = implicit_tls
        self.peers = peers
        self.authenticator = authenticator
        self.auth_mechanisms = auth_mechanisms
        self.metrics = metrics
        self._on_open = on_open
        self._on_close = on_close
        self.tx: Transaction | None = None
        self._errors = 0
        self._in_ehlo = False
        self._peer_ip = ""
        self._tracked = False
        # Instance-level limits (aiosmtpd's are a class-level dict shared by every connection).
        self.command_size_limits = collections.defaultdict(
            lambda: 512, {"MAIL": 1024, "RCPT": 1024, "AUTH": limits.max_auth_line}
        )

    def _init_base(self, hostname: str, tls_context: Any, limits: Limits) -> None:
        """What aiosmtpd's SMTP.__init__ sets up, without its per-connection introspection.

        SMTP.__init__ runs inspect.getmembers() over the protocol and the handler on every connection
        (slow, and it evaluates properties); the command table here is computed once per class.
        """
        self.__ident__ = "mssante"
        self.loop = asyncio.get_running_loop()
        asyncio.StreamReaderProtocol.__init__(
            self, asyncio.StreamReader(loop=self.loop, limit=self.line_length_limit),
            client_connected_cb=self._cb_client_connected, loop=self.loop,
        )
        self.event_handler = _NoHooks()
        self.data_size_limit = limits.max_message_size
        self.enable_SMTPUTF8 = False  # not advertised: not handled end to end (IMAP, relay)
        self._decode_data = False
        self.hostname = hostname
        self.tls_context = tls_context
        self.require_starttls = bool(tls_context)  # RFC 3207 §4: MSSanté requires TLS (SPECS.md §1, §2)
        self._timeout_duration = limits.command_timeout
        self._timeout_handle = None
        self._tls_handshake_okay = True
        self._tls_protocol = None
        self._original_transport = None
        self.session = None
        self.envelope = None
        self.transport = None
        self._handler_coroutine = None
        self._auth_require_tls = True
        self._proxy_timeout = None
        self._authenticator = None
        self._auth_callback = None
        self._auth_required = False
        self._auth_methods = {}
        self._handle_hooks = {}
        self._ehlo_hook_ver = None
        self._smtp_methods = {name: getattr(self, f"smtp_{name}") for name in _command_names(type(self))}
        self._enforce_call_limit = False

    # --- connection lifecycle ----------------------------------------------------------------------
    def _create_session(self) -> Session:
        return GatewaySession(self.loop)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        after_starttls = self.transport is not None and self._original_transport is not None
        super().connection_made(transport)
        session = self.session
        assert isinstance(session, GatewaySession)
        if not after_starttls:
            peer = transport.get_extra_info("peername")
            self._peer_ip = str(peer[0]) if peer else ""
            if self._on_open is not None:
                self._on_open(self)
        if after_starttls or self.implicit_tls:
            if self.implicit_tls:
                session.ssl = {}  # marks TLS for aiosmtpd's eof handling
            self._tls_ready(transport)

    def _tls_ready(self, transport: asyncio.BaseTransport) -> None:
        from pki.tls import peer_certificate

        session = self.session
        assert isinstance(session, GatewaySession)
        obj = transport.get_extra_info("ssl_object")
        if obj is not None:
            session.tls_version = obj.version()
            c = obj.cipher()
            session.tls_cipher = c[0] if c else None
            try:
                session.peer_cert = peer_certificate(obj)
            except ValueError:
                session.peer_cert = None
        self.policy.tls_established(self)

    def connection_lost(self, error: Exception | None) -> None:
        if self._tracked and self.peers is not None:
            self.peers.release(self._peer_ip)
            self._tracked = False
        if self._on_close is not None:
            self._on_close(self)
            self._on_close = None
        super().connection_lost(error)

    async def _handle_client(self) -> None:
        if self.peers is not None:
            if not self.peers.acquire(self._peer_ip, time.monotonic()):
                await self.push(replies.TOO_MANY_CONNECTIONS)
                assert self.transport is not None
                self.transport.close()
                return
            self._tracked = True
        await super()._handle_client()

    def _timeout_cb(self) -> None:
        # RFC 5321 §4.5.3.2: the server may close after its timeout; say so first.
        if self.transport is not None and not self.transport.is_closing():
            try:
                self.transport.write(replies.TIMEOUT.encode() + b"\r\n")  # type: ignore[attr-defined]
            except Exception as e:  # the transport may be half torn down
                log.debug("could not send the timeout reply: %s", type(e).__name__)
        super()._timeout_cb()  # type: ignore[no-untyped-call]

    @property
    def tls_active(self) -> bool:
        return self.implicit_tls or self._tls_protocol is not None

    @property
    def peer_ip(self) -> str:
        return self._peer_ip

    @property
    def gsession(self) -> GatewaySession:
        assert isinstance(self.session, GatewaySession)
        return self.session

    # --- replies ---------------------------------------------------------------------------------------
    async def push(self, status: Any) -> None:
        if isinstance(status, bytes):
            status = status.decode("utf-8", "replace")
        if not self._in_ehlo and not status.startswith("220 "):
            status = with_enhanced(status)
        status = status.encode("ascii", "replace").decode("ascii")
        await super().push(status)
        if status[:1] == "5":
            self._errors += 1
            if self.limits.bad_command_limit and self._errors >= self.limits.bad_command_limit:
                await super().push(replies.TOO_MANY_ERRORS)
                if self.transport is not None:
                    self.transport.close()

    async def handle_exception(self, error: Exception) -> str:
        ref = secrets.token_hex(4)
        if isinstance(error, TLSSetupException):
            log.info("smtp %s TLS handshake failed from %s: %s", self.policy.listener, self._peer_ip,
                     type(error.__cause__).__name__)
            return "454 4.7.0 TLS not available due to temporary reason"
        log.error("smtp %s internal error ref=%s: %s", self.policy.listener, ref, type(error).__name__, exc_info=error)
        return replies.TEMPFAIL.format(ref=ref)

    def _set_rset_state(self) -> None:
        super()._set_rset_state()  # type: ignore[no-untyped-call]
        self.tx = None

    def _set_post_data_state(self) -> None:
        super()._set_post_data_state()  # type: ignore[no-untyped-call]
        self.tx = None

    # --- commands ----------------------------------------------------------------------------------------
    async def smtp_EHLO(self, hostname: str) -> None:  # noqa: N802 (aiosmtpd dispatch)
        if not hostname:
            await self.push("501 5.5.4 Syntax: EHLO hostname")
            return
        self._set_rset_state()
        session = self.gsession
        session.extended_smtp = True
        session.host_name = hostname
        lines = [self.hostname, "PIPELINING", f"SIZE {self.limits.max_message_size}", "8BITMIME",
                 "ENHANCEDSTATUSCODES", "DSN"]
        if not self.tls_active:
            lines.append("STARTTLS")
        elif self.authenticator is not None and self.auth_mechanisms:
            mechs = [m for m in self.auth_mechanisms if m != "EXTERNAL" or session.peer_cert is not None]
            lines.append("AUTH " + " ".join(mechs))
        # One write for the whole multi-line reply: one TLS record and one send() instead of seven.
        reply = "\r\n".join(f"250{'-' if i < len(lines) - 1 else ' '}{line}" for i, line in enumerate(lines))
        self._in_ehlo = True
        try:
            await self.push(reply)
        finally:
            self._in_ehlo = False

    async def smtp_HELO(self, hostname: str) -> None:  # noqa: N802 (aiosmtpd dispatch)
        if not hostname:
            await self.push("501 5.5.4 Syntax: HELO hostname")
            return
        self._set_rset_state()
        self.gsession.extended_smtp = False
        self.gsession.host_name = hostname
        self._in_ehlo = True
        try:
            await self.push(f"250 {self.hostname}")
        finally:
            self._in_ehlo = False

    async def smtp_STARTTLS(self, arg: str) -> None:  # noqa: N802 (aiosmtpd dispatch)
        """RFC 3207: as aiosmtpd's, with the compact TLS protocol (see CompactSSLProtocol)."""
        if arg:
            await self.push("501 5.5.4 Syntax: STARTTLS")
            return
        if not self.tls_context or self._tls_protocol is not None:
            await self.push("454 4.7.0 TLS not available")
            return
        await self.push("220 2.0.0 Ready to start TLS")
        waiter = self.loop.create_future()
        self._tls_protocol = CompactSSLProtocol(self.loop, self, self.tls_context, waiter, server_side=True)
        self._original_transport = self.transport
        assert self._original_transport is not None
        self._original_transport.set_protocol(self._tls_protocol)
        self.transport = self._tls_protocol._app_transport
        # RFC 3207 §4.2 / STARTTLS injection: connection_made() (aiosmtpd) clears the plaintext read buffer
        # and resets the session once the handshake completes.
        self._tls_protocol.connection_made(self._original_transport)
        try:
            await waiter
        except asyncio.CancelledError:
            raise
        except Exception as error:
            raise TLSSetupException() from error

    async def smtp_VRFY(self, arg: str) -> None:  # noqa: N802 (aiosmtpd dispatch)
        # RFC 5321 §3.5.3 allows 252; never confirm an address (no enumeration).
        await self.push("252 2.5.0 Cannot VRFY user, but will accept message for local recipients")

    async def smtp_HELP(self, arg: str) -> None:  # noqa: N802 (aiosmtpd dispatch)
        await self.push("214 2.0.0 See RFC 5321")

    async def _check_ready(self) -> bool:
        if not self.tls_active:  # RFC 3207 §4
            await self.push(replies.STARTTLS_FIRST)
            return False
        if not self.gsession.host_name:
            await self.push("503 5.5.1 Send EHLO first")
            return False
        return True

    async def smtp_MAIL(self, arg: str | None) -> None:  # noqa: N802 (aiosmtpd dispatch)
        if not await self._check_ready():
            return
        if self.tx is not None:
            await self.push("503 5.5.1 Nested MAIL command")
            return
        try:
            mp = parse_mail(arg or "", max_size=self.limits.max_message_size, dsn=self.gsession.extended_smtp)
            tx = Transaction(mp)
            reply = await self.policy.mail(self, tx)
        except SmtpReply as e:
            await self.push(e.reply)
            return
        self.tx = tx
        await self.push(reply)

    async def smtp_RCPT(self, arg: str | None) -> None:  # noqa: N802 (aiosmtpd dispatch)
        if not await self._check_ready():
            return
        tx = self.tx
        if tx is None:
            await self.push("503 5.5.1 Need MAIL command")
            return
        if len(tx.recipients) >= self.limits.max_recipients:
            await self.push(replies.TOO_MANY_RCPTS)
            return
        try:
            rp = parse_rcpt(arg or "", dsn=self.gsession.extended_smtp)
            if any(r.address.lower() == rp.address.lower() for r in tx.recipients):
                await self.push(replies.RCPT_OK)  # a duplicate recipient gets one copy
                return
            tx.recipients.append(rp)
            try:
                reply = await self.policy.rcpt(self, tx, len(tx.recipients) - 1)
            except BaseException:
                tx.recipients.pop()
                raise
        except SmtpReply as e:
            await self.push(e.reply)
            return
        await self.push(reply)

    async def smtp_DATA(self, arg: str) -> None:  # noqa: N802 (aiosmtpd dispatch)
        if not await self._check_ready():
            return
        tx = self.tx
        if tx is None:
            await self.push("503 5.5.1 Need MAIL command")
            return
        if not tx.recipients:
            await self.push("503 5.5.1 Need RCPT command")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        await self.push(replies.START_DATA)
        self._reset_timeout(self.limits.data_timeout)  # the whole DATA phase has its own budget
        raw, problem = await self._read_data()
        self._reset_timeout()
        if problem is not None:
            self._set_post_data_state()
            await self.push(problem)
            return
        try:
            reply = await self.policy.data(self, tx, raw)
        except SmtpReply as e:
            reply = e.reply
        finally:
            self._set_post_data_state()
        if reply.startswith("250"):
            self._errors = 0  # the error budget counts errors since the last accepted message
        await self.push(reply)

    async def _read_data(self) -> tuple[bytes, str | None]:
        """Read up to CRLF.CRLF; returns (message, None) or (b"", refusal) once the terminator is read.

        Fast path: the data is read in chunks ending at ".CRLF" (not line by line) and checked as a whole
        (bare CR/LF, line length, header size, size: bytes.count/split/find, in C); whenever it finds a
        problem, or the data grows past the size limit, the line-by-line `_DataLines` (the reference
        rules) decides, so the reply is exactly the one the line reader gives. End of data is a line
        "." alone, i.e. ".CRLF" at the start of the data or after an LF, as for the line reader.
        """
        reader: Any = self._reader  # its private `_limit` is raised while in DATA
        limits = self.limits
        max_size = limits.max_message_size
        saved_limit = reader._limit  # noqa: SLF001 (the StreamReader's buffer bound; restored below)
        reader._limit = max(saved_limit, _DATA_CHUNK)  # noqa: SLF001
        chunks: list[bytes] = []
        total = 0
        at_line_start = True
        try:
            while True:
                try:
                    chunk = await reader.readuntil(b".\r\n")
                except asyncio.LimitOverrunError as e:
                    chunk = await reader.readexactly(e.consumed)  # holds no ".CRLF" (or ends just before it)
                    ending = False
                except asyncio.IncompleteReadError:
                    raise ConnectionResetError("connection closed during DATA") from None
                else:
                    ending = (len(chunk) == 3 and at_line_start) or chunk[-4:-3] == b"\n"
                chunks.append(chunk)
                total += len(chunk)
                if ending:
                    break
                at_line_start = chunk[-1:] == b"\n"
                if total > max_size:
                    # Too big for the fast path (and probably for us): the line reader takes over.
                    reader._limit = saved_limit  # noqa: SLF001
                    return await self._read_data_lines(b"".join(chunks))
        finally:
            reader._limit = saved_limit  # noqa: SLF001
        blob = b"".join(chunks)[:-3]  # without the final ".CRLF"
        nl = blob.count(b"\n")
        crlf = blob.count(b"\r\n")
        ok = nl == crlf and blob.count(b"\r") == crlf
        if ok and blob:
            ok = max(map(len, blob.split(b"\n"))) + 1 <= limits.max_line_length + 1
        data = blob.replace(b"\r\n.", b"\r\n")
        if data[:1] == b".":
            data = data[1:]
        if ok:
            if data[:2] == b"\r\n":
                header_size = 0
            else:
                i = data.find(b"\n\r\n")
                header_size = i + 1 if i >= 0 else len(data)
            ok = header_size <= limits.max_header_size and len(data) <= max_size
        if ok:
            return data, None
        state = _DataLines(limits)
        state.feed(blob)
        return b"", state.problem or replies.TEMPFAIL.format(ref="data")

    async def _read_data_lines(self, head: bytes) -> tuple[bytes, str | None]:
        """The line-by-line DATA reader, after `head` (already read, not yet at the end of data)."""
        state = _DataLines(self.limits)
        pending = state.feed(head)  # an incomplete last line of `head`
        reader = self._reader
        while True:
            try:
                line = pending + await reader.readuntil(b"\n")
            except asyncio.LimitOverrunError as e:
                await reader.readexactly(e.consumed)
                state.too_long()
                pending = b""
                continue
            except asyncio.IncompleteReadError:
                raise ConnectionResetError("connection closed during DATA") from None
            pending = b""
            if line == b".\r\n":
                break
            state.line(line)
        if state.problem is not None:
            return b"", state.problem
        return b"".join(state.parts), None

    async def smtp_AUTH(self, arg: str) -> None:  # noqa: N802 (aiosmtpd dispatch)
        session = self.gsession
        if not self.tls_active:
            await self.push(replies.STARTTLS_FIRST)
            return
        if self.authenticator is None or not self.auth_mechanisms:
            await self.push("502 5.5.1 AUTH not available on this listener")
            return
        if not session.extended_smtp:
            await self.push("503 5.5.1 Send EHLO first")
            return
        if session.identity is not None:
            await self.push("503 5.5.1 Already authenticated")
            return
        if self.tx is not None:  # RFC 4954 §4: not during a mail transaction
            await self.push("503 5.5.1 AUTH not permitted during a mail transaction")
            return
        words = (arg or "").split()
        if not words or len(words) > 2:
            await self.push("501 5.5.4 Syntax: AUTH mechanism [initial-response]")
            return
        mech = words[0].upper()
        if mech not in self.auth_mechanisms:
            await self.push("504 5.5.4 Unrecognized authentication type")
            return
        initial = words[1] if len(words) == 2 else None
        try:
            result, login = await self._auth_exchange(mech, initial)
        except sasl.SaslError:
            await self.push("501 5.5.2 Cannot decode SASL response")
            return
        except _Cancelled:
            await self.push(replies.AUTH_CANCELLED)
            return
        await self._auth_done(mech, login, result)

    async def _auth_line(self, challenge: str) -> bytes:
        await self.push(f"334 {challenge}")
        try:
            line = await self._reader.readuntil(b"\n")
        except asyncio.LimitOverrunError:
            raise sasl.SaslError("SASL response too long") from None
        except asyncio.IncompleteReadError:
            raise ConnectionResetError("connection closed during AUTH") from None
        text = line.strip()
        if text == b"*":  # RFC 4954 §4: the client cancels
            raise _Cancelled()
        return sasl.decode_b64(text)

    async def _auth_exchange(self, mech: str, initial: str | None) -> tuple[AuthResult, str]:
        auth = self.authenticator
        remote = self._peer_ip
        first = sasl.decode_b64(initial) if initial is not None else None
        if mech == "PLAIN":
            creds = sasl.parse_plain(first if first is not None else await self._auth_line(""))
            return await auth.password(creds.username, creds.password, remote=remote, authzid=creds.authzid), creds.username
        if mech == "LOGIN":
            user = sasl.parse_login_field(first if first is not None else await self._auth_line("VXNlcm5hbWU6"), "user name")
            pw = sasl.parse_login_field(await self._auth_line("UGFzc3dvcmQ6"), "password")
            return await auth.password(user, pw, remote=remote), user
        if mech in ("XOAUTH2", "OAUTHBEARER"):
            msg = first if first is not None else await self._auth_line("")
            bearer = sasl.parse_xoauth2(msg) if mech == "XOAUTH2" else sasl.parse_oauthbearer(msg)
            result = await auth.token(bearer.token, username=bearer.username, remote=remote)
            if not result.ok:
                # RFC 7628 §3.2.2: an error challenge, the client answers (^A or empty), then the failure.
                try:
                    await self._auth_line(sasl.oauth_error_challenge())
                except (sasl.SaslError, _Cancelled):
                    pass
            return result, bearer.username or "(token)"
        if mech == "EXTERNAL":
            msg = first if first is not None else await self._auth_line("")
            authzid = sasl.parse_external(msg)
            return await auth.certificate(self.gsession.peer_cert, authzid=authzid, remote=remote), authzid or "(certificate)"
        raise sasl.SaslError("mechanism not implemented")

    async def _auth_done(self, mech: str, login: str, result: AuthResult) -> None:
        session = self.gsession
        audit = getattr(self.policy, "audit", None)
        if result.ok and result.identity is not None:
            session.identity = result.identity
            session.authenticated = True
            await self.push(replies.AUTH_OK)
            return
        if self.metrics is not None:
            self.metrics.auth_failures.labels("smtp").inc()
        if audit is not None:
            await audit.record("auth.login", login[:320], "failure", protocol="smtp", mechanism=mech,
                               reason=str(result.reason), remote=self._peer_ip)
        await self.push(replies.AUTH_TEMPFAIL if result.temporary else replies.AUTH_INVALID)


class _Cancelled(Exception):
    pass
