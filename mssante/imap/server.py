"""The one thin asyncio layer: sockets, TLS, timeouts and back-pressure around `Session`.

Per connection: one asyncio.Protocol object, one task running the session, one
`framing.CommandReader` buffer and (with TLS) one `ssl.SSLObject` over two MemoryBIOs. TLS is
done here over memory BIOs instead of asyncio's SSLProtocol, which preallocates a 256 KiB
buffer per connection: with 10,000 idle clients in IDLE that alone would be 2.5 GiB.

- STARTTLS (RFC 9051 §6.2.1): plaintext buffered before the handshake is discarded, so that
  commands injected before TLS are never executed (CVE-2011-0411 class).
- Output is bounded: once more than `output_limit` bytes are queued, the session waits for the
  client to read; a client that reads nothing for `write_timeout` seconds is disconnected.
- Input is bounded by the CommandReader's limits; reading pauses while a full command waits.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass
from typing import Any

from mssante.imap import framing
from mssante.imap.session import WAKE, AuditBatcher, ImapSettings, ServerContext, Session
from mssante.imap.store import SqlStorage

log = logging.getLogger("mssante.imap.server")

_READ_PAUSE = 256 * 1024  # unconsumed input beyond what a pending literal needs
_OUT_FLUSH = 64 * 1024  # buffered output written at once beyond this


class ImapConnection(asyncio.Protocol):
    def __init__(self, listener: ImapListener) -> None:
        self.listener = listener
        self.ctx = listener.ctx
        s = self.ctx.settings
        self.reader = framing.CommandReader(max_line=s.max_line, max_literal=s.max_literal,
                                            append_limit=s.append_limit, max_command=s.max_command)
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.tls = False
        self._ssl: ssl.SSLObject | None = None
        self._in: ssl.MemoryBIO | None = None
        self._out: ssl.MemoryBIO | None = None
        self._handshake: asyncio.Future[bool] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._woken = False
        self._closed = False
        self._write_paused: asyncio.Future[None] | None = None
        self._read_paused = False
        self._task: asyncio.Task[None] | None = None
        self._lingering = False
        # Output is coalesced: a command's responses leave in one TLS record and one send() (at
        # drain(), at the end of the current loop iteration, or beyond _OUT_FLUSH bytes).
        self._obuf: list[bytes] = []
        self._olen = 0
        self._oflush: asyncio.Handle | None = None

    # --- asyncio.Protocol -----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not subclasses
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        transport.set_write_buffer_limits(high=self.ctx.settings.output_limit)
        self.listener.connections.add(self)
        if self.ctx.metrics is not None:
            self.ctx.metrics.imap_connections.inc()
        if self.listener.implicit_tls:
            self._begin_tls()
        self._task = asyncio.get_running_loop().create_task(self._main())

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.listener.connections.discard(self)
        if self.ctx.metrics is not None:
            self.ctx.metrics.imap_connections.dec()
        if self._handshake is not None and not self._handshake.done():
            self._handshake.set_result(False)
        if self._write_paused is not None and not self._write_paused.done():
            self._write_paused.set_exception(ConnectionResetError("connection lost"))
        self._wake()

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return  # closing: input is read and dropped so that our last words are not reset away
        if self._ssl is None:
            self.reader.feed(data)
        else:
            self._tls_received(data)
        if len(self.reader._buf) > self.reader._literal_left + _READ_PAUSE and not self._read_paused:
            assert self.transport is not None
            self.transport.pause_reading()
            self._read_paused = True
        self._wake()

    def eof_received(self) -> bool | None:
        self._closed = True
        self._wake()
        return False

    def pause_writing(self) -> None:
        if self._write_paused is None or self._write_paused.done():
            self._write_paused = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._write_paused is not None and not self._write_paused.done():
            self._write_paused.set_result(None)
        self._write_paused = None

    # --- TLS over memory BIOs ----------------------------------------------------------------------
    def _begin_tls(self) -> None:
        ctx = self.listener.ssl_context
        assert ctx is not None
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._ssl = ctx.wrap_bio(self._in, self._out, server_side=True)
        self._handshake = asyncio.get_running_loop().create_future()

    def _flush_tls(self) -> None:
        if self._out is not None and self._out.pending and self.transport is not None:
            self.transport.write(self._out.read())

    def _tls_received(self, data: bytes) -> None:
        assert self._ssl is not None and self._in is not None and self._handshake is not None
        self._in.write(data)
        if not self._handshake.done():
            try:
                self._ssl.do_handshake()
            except ssl.SSLWantReadError:
                self._flush_tls()
                return
            except (ssl.SSLError, OSError) as e:
                log.info("TLS handshake failed from %s: %s", self.peer, getattr(e, "reason", type(e).__name__))
                self._flush_tls()
                self._handshake.set_result(False)
                self._abort()
                return
            self.tls = True
            self._flush_tls()
            self._handshake.set_result(True)
        while True:
            try:
                chunk = self._ssl.read(65536)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                self._closed = True
                break
            except (ssl.SSLError, OSError):
                self._abort()
                break
            if not chunk:
                self._closed = True
                break
            self.reader.feed(chunk)
        self._flush_tls()

    async def start_tls(self) -> bool:
        if self.listener.ssl_context is None or self._ssl is not None:
            return False
        self._flush_out()  # the plaintext OK leaves before the handshake starts
        # Discard anything pipelined after STARTTLS in plaintext (RFC 9051 §6.2.1, RFC 7817 §3).
        self.reader = framing.CommandReader(max_line=self.reader.max_line, max_literal=self.reader.max_literal,
                                            append_limit=self.reader.append_limit,
                                            max_command=self.reader.max_command)
        self._begin_tls()
        assert self._handshake is not None
        return await self._wait_handshake()

    async def _wait_handshake(self) -> bool:
        assert self._handshake is not None
        loop = asyncio.get_running_loop()
        h = loop.call_later(60.0, lambda: self._handshake.done() or self._handshake.set_result(False))  # type: ignore[union-attr]
        try:
            return await self._handshake
        finally:
            h.cancel()

    def peer_certificate(self) -> Any:
        if self._ssl is None or not self.tls:
            return None
        from pki.tls import peer_certificate

        return peer_certificate(self._ssl)

    # --- Conn for the session ------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    def write(self, data: bytes) -> None:
        if self._closed or self.transport is None or self.transport.is_closing():
            return
        self._obuf.append(data)
        self._olen += len(data)
        if self._olen >= _OUT_FLUSH:
            self._flush_out()
        elif self._oflush is None:
            self._oflush = asyncio.get_running_loop().call_soon(self._flush_out)

    def _flush_out(self) -> None:
        if self._oflush is not None:
            self._oflush.cancel()
            self._oflush = None
        if not self._obuf:
            return
        data = self._obuf[0] if len(self._obuf) == 1 else b"".join(self._obuf)
        self._obuf = []
        self._olen = 0
        if self._closed or self.transport is None or self.transport.is_closing():
            return
        if self._ssl is not None:
            try:
                self._ssl.write(data)
            except (ssl.SSLError, OSError):
                self._abort()
                return
            self._flush_tls()
        else:
            self.transport.write(data)

    async def drain(self) -> None:
        # Small output waits for the flush already scheduled at the end of this loop iteration, so
        # that a FETCH's data and its tagged OK leave in one TLS record and one send().
        if self._olen >= _OUT_FLUSH or self._write_paused is not None:
            self._flush_out()
        fut = self._write_paused
        if fut is None:
            return
        loop = asyncio.get_running_loop()
        def expire() -> None:
            if not fut.done():
                fut.set_exception(TimeoutError("client is not reading"))

        h = loop.call_later(self.ctx.settings.write_timeout, expire)
        try:
            await fut
        except TimeoutError:
            log.info("IMAP client %s stopped reading; disconnecting", self.peer)
            self._abort()
            raise ConnectionError("client not reading") from None
        finally:
            h.cancel()

    def wakeup(self) -> None:
        self._woken = True
        self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def _wait(self, timeout: float) -> bool:
        """Wait for input, a wake-up or close; False on timeout."""
        if self._read_paused and self.transport is not None:
            self._read_paused = False
            self.transport.resume_reading()
        loop = asyncio.get_running_loop()
        self._waiter = w = loop.create_future()
        timed_out = False

        def expire() -> None:
            nonlocal timed_out
            timed_out = True
            if not w.done():
                w.set_result(None)

        h = loop.call_later(timeout, expire)
        try:
            await w
        finally:
            h.cancel()
            self._waiter = None
        return not timed_out

    async def next_event(self, timeout: float) -> framing.Event | object | None:
        while True:
            ev = self.reader.next_event()
            if ev is not None:
                return ev
            if self._closed:
                return None
            if self._woken:
                self._woken = False
                return WAKE
            if not await self._wait(timeout):
                return None

    async def next_line(self, timeout: float, *, wakeable: bool = False) -> bytes | object | None:
        while True:
            try:
                line = self.reader.next_line()
            except OverflowError:
                return None
            if line is not None:
                return line
            if self._closed:
                return None
            if wakeable and self._woken:
                self._woken = False
                return WAKE
            if not await self._wait(timeout):
                return None

    def close(self) -> None:
        self._flush_out()
        t = self.transport
        if t is not None and not t.is_closing() and not self._lingering:
            if self._ssl is not None and self.tls:
                try:
                    self._ssl.unwrap()
                except (ssl.SSLError, OSError, ValueError):
                    pass
                self._flush_tls()
            if self.reader.buffered and t.can_write_eof():
                # Unread input: closing now would send a TCP RST that can destroy the BYE we just
                # wrote. Half-close, drop further input, and close for good a little later.
                self._lingering = True
                t.write_eof()
                if self._read_paused:
                    self._read_paused = False
                    t.resume_reading()
                asyncio.get_running_loop().call_later(2.0, t.close)
            else:
                t.close()
        self._closed = True

    def _abort(self) -> None:
        self._closed = True
        if self.transport is not None:
            self.transport.abort()
        self._wake()

    async def _main(self) -> None:
        try:
            if self.listener.implicit_tls and not await self._wait_handshake():
                self._abort()
                return
            await Session(self.ctx, self).run()
        except Exception:
            log.exception("IMAP connection from %s failed", self.peer)
            self._abort()


@dataclass
class ImapListener:
    ctx: ServerContext
    implicit_tls: bool
    ssl_context: ssl.SSLContext | None
    server: asyncio.AbstractServer | None = None
    owned_notifier: Any = None

    def __post_init__(self) -> None:
        self.connections: set[ImapConnection] = set()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for c in list(self.connections):
            c.write(b"* BYE server shutting down\r\n")
            c.close()
        tasks = [c._task for c in list(self.connections) if c._task is not None and not c._task.done()]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)
        if self.server is not None:
            await self.server.wait_closed()
        if self.ctx.audit_batch is not None:
            await self.ctx.audit_batch.close()
        aclose = getattr(self.ctx.storage, "aclose", None)
        if aclose is not None:
            await aclose()  # the SQLite fast path's threads (mssante.imap.sqlite_fast)
        if self.owned_notifier is not None:
            await self.owned_notifier.stop()


def settings_from(services: Any, **overrides: Any) -> ImapSettings:
    cfg = services.config.imap
    hostname = services.config.operator.hostname or f"imap.{services.config.operator.domain}"
    s = ImapSettings(hostname=hostname, append_limit=cfg.append_limit, idle_timeout=cfg.idle_timeout,
                     command_timeout=cfg.command_timeout, bad_command_limit=cfg.bad_command_limit)
    for k, v in overrides.items():
        setattr(s, k, v)
    return s


async def start_imap(services: Any, *, host: str, port: int, implicit_tls: bool,
                     ssl_context: ssl.SSLContext | None, settings: ImapSettings | None = None,
                     on_read_receipt: Any = None, reuse_port: bool = False) -> ImapListener:
    """Start one IMAP listener. `implicit_tls=False` offers STARTTLS when `ssl_context` is given.

    Uses services.notifier (a mssante.store.notify.FolderNotifier) and services.authenticator when
    set; otherwise creates them (and stops the notifier it created on stop()). Read receipts go
    to `on_read_receipt` or, if None, to services.extras["imap.read_receipts"] when that is an
    asyncio.Queue (see docs/imap.md).
    """
    from mssante.store.notify import make_notifier

    owned = None
    notifier = services.notifier
    if notifier is None:
        notifier = owned = make_notifier(str(services.engine.url.render_as_string(hide_password=False)))
        await notifier.start()
    auth = services.authenticator
    if auth is None:
        from mssante.auth.service import Authenticator

        auth = Authenticator(services.sessions, validator=services.validator, now=services.now)
    if on_read_receipt is None:
        q = services.extras.get("imap.read_receipts")
        if isinstance(q, asyncio.Queue):
            on_read_receipt = q.put_nowait
    if implicit_tls and ssl_context is None:
        raise ValueError("implicit TLS needs an ssl_context")
    storage = SqlStorage(services.sessions, published=notifier.publish, shared=reuse_port)
    settings = settings or settings_from(services)
    from mssante.auth.service import Authenticator

    if isinstance(auth, Authenticator) and settings.login_cache_seconds > 0:
        from mssante.imap.authcache import LoginCache

        auth = LoginCache(auth, storage.login_row, ttl=settings.login_cache_seconds)
    ctx = ServerContext(
        storage=storage,
        audit_batch=AuditBatcher(storage, services.audit) if services.audit is not None else None,
        authenticator=auth,
        notifier=notifier,
        settings=settings,
        audit=services.audit,
        now=services.now,
        on_read_receipt=on_read_receipt,
        metrics=services.metrics,
        starttls=not implicit_tls and ssl_context is not None,
    )
    listener = ImapListener(ctx, implicit_tls, ssl_context, owned_notifier=owned)
    loop = asyncio.get_running_loop()
    # reuse_port: several IMAP processes (mssante.workers) listen on the same address; the kernel
    # spreads new connections between them (SO_REUSEPORT: same user only).
    listener.server = await loop.create_server(lambda: ImapConnection(listener), host, port, backlog=4096,
                                               reuse_port=reuse_port or None)
    return listener
