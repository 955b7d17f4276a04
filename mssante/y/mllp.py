"""MLLP over TCP (optionally TLS with client certificates): the lab's HL7 v2 intake listener.

Framing (HL7 v2.5 Appendix C, Minimal Lower Layer Protocol; MLLP release 2):

    <SB = 0x0B> payload <EB = 0x1C><CR = 0x0D>

`MllpDecoder` is a pure, incremental decoder (no I/O): bytes in, complete payloads out. The size
limit is enforced while bytes arrive, before any allocation beyond it: an oversize frame is
*discarded* up to its end marker and reported as `Oversize` (the first bytes are kept, so the
NACK can still answer MSH-10). Bytes outside a frame (a stray CR/LF between frames) are ignored.

The asyncio server handles one connection per lab system and answers each frame in order
(MLLP is synchronous: the sender waits for the ACK before the next message). TLS peers are
validated by the pki Validator (role TLS client); the decision is handed to the message handler,
which authorises the sender against config.mllp.senders (issue 7: "each sending system is
authorised by configuration: ... certificate identity").
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mssante.app import Services

log = logging.getLogger("mssante.y.mllp")

SB = b"\x0b"
EB = b"\x1c"
CR = b"\x0d"
END = EB + CR
READ_CHUNK = 64 * 1024
SALVAGE_BYTES = 4096  # kept from an oversize frame to answer its MSH


def frame(payload: bytes) -> bytes:
    """Wrap one HL7 message for the wire."""
    return SB + payload + END


@dataclass(frozen=True)
class Frame:
    payload: bytes


@dataclass(frozen=True)
class Oversize:
    """A frame longer than the limit was discarded; `head` is its first bytes."""

    head: bytes
    size: int


class MllpDecoder:
    """Incremental MLLP decoder with a hard size limit per frame."""

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._buf = bytearray()
        self._in_frame = False
        self._discarding = False
        self._discarded = 0
        self._head = b""
        self._pending_eb = False  # the last byte seen was EB (its CR may come in the next chunk)

    def feed(self, data: bytes) -> list[Frame | Oversize]:
        out: list[Frame | Oversize] = []
        i = 0
        n = len(data)
        while i < n:
            if not self._in_frame:
                j = data.find(SB, i)
                if j < 0:
                    return out  # inter-frame noise (CR/LF keep-alives) is ignored
                self._in_frame, self._discarding, self._discarded = True, False, 0
                self._buf.clear()
                self._pending_eb = False
                i = j + 1
                continue
            if self._pending_eb:
                self._pending_eb = False
                if data[i : i + 1] == CR:
                    out.append(self._finish())
                    i += 1
                    continue
                self._append(EB)  # a lone EB inside the payload
            k = data.find(END, i)
            if k < 0:
                chunk_end = n
                if data.endswith(EB):
                    chunk_end = n - 1
                    self._pending_eb = True
                self._append(data[i:chunk_end])
                return out
            self._append(data[i:k])
            out.append(self._finish())
            i = k + 2
        return out

    def _append(self, chunk: bytes) -> None:
        if not chunk:
            return
        if self._discarding:
            self._discarded += len(chunk)
            return
        if len(self._buf) + len(chunk) > self.max_size:
            # Refuse before allocating: keep only the head, count the rest.
            self._head = bytes(self._buf[:SALVAGE_BYTES]) if self._buf else bytes(chunk[:SALVAGE_BYTES])
            self._discarded = len(self._buf) + len(chunk)
            self._buf = bytearray()
            self._discarding = True
            return
        self._buf += chunk

    def _finish(self) -> Frame | Oversize:
        self._in_frame = False
        if self._discarding:
            self._discarding = False
            return Oversize(self._head, self._discarded)
        payload = bytes(self._buf)
        self._buf = bytearray()
        return Frame(payload)

    @property
    def buffered(self) -> int:
        return len(self._buf)


@dataclass(frozen=True)
class PeerInfo:
    """Who is on the other end of an MLLP connection."""

    host: str
    port: int
    tls: bool = False
    cert_subject: str = ""  # RFC 4514 subject DN of a validated client certificate
    cert_sha256: str = ""  # hex fingerprint of that certificate
    cert_error: str = ""  # non-empty when a certificate was presented but refused (a Reason code)

    @property
    def label(self) -> str:
        return self.cert_subject or f"{self.host}:{self.port}"


Handler = Callable[[Frame | Oversize, PeerInfo], Awaitable[bytes | None]]


@dataclass
class MllpServer:
    """A running listener (the `Stoppable` of the listener contract)."""

    server: asyncio.AbstractServer
    host: str
    port: int
    connections: set[asyncio.Task[Any]] = field(default_factory=set)

    async def stop(self) -> None:
        self.server.close()
        for task in list(self.connections):
            task.cancel()
        for task in list(self.connections):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.server.wait_closed(), 5)


def _peer_info(writer: asyncio.StreamWriter, validator: Any, now: Any) -> PeerInfo:
    peer = writer.get_extra_info("peername") or ("?", 0)
    ssl_object = writer.get_extra_info("ssl_object")
    if ssl_object is None:
        return PeerInfo(str(peer[0]), int(peer[1]))
    from pki.errors import MalformedInput
    from pki.files import load_der_certificate

    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return PeerInfo(str(peer[0]), int(peer[1]), tls=True)
    sha = hashlib.sha256(der).hexdigest()
    try:
        cert = load_der_certificate(der, "MLLP client certificate")
    except MalformedInput:  # OpenSSL took it, cryptography cannot read it: refused as unverifiable
        return PeerInfo(str(peer[0]), int(peer[1]), tls=True, cert_sha256=sha, cert_error="MALFORMED")
    if validator is None:
        return PeerInfo(str(peer[0]), int(peer[1]), tls=True, cert_sha256=sha, cert_error="NO_VALIDATOR")
    from pki.validation import Role

    decision = validator.validate(cert, Role.TLS_CLIENT, now())
    if not decision.ok:
        reason = getattr(decision.reason, "value", str(decision.reason))
        return PeerInfo(str(peer[0]), int(peer[1]), tls=True, cert_sha256=sha, cert_error=str(reason))
    return PeerInfo(str(peer[0]), int(peer[1]), tls=True, cert_subject=cert.subject.rfc4514_string(), cert_sha256=sha)


async def serve_connection(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    handler: Handler,
    *,
    max_size: int,
    peer: PeerInfo,
    idle_timeout: float = 300.0,
) -> None:
    decoder = MllpDecoder(max_size)
    try:
        while True:
            try:
                # asyncio.timeout, not wait_for: no Task per chunk (a 43 KB message arrives in ~25 chunks).
                async with asyncio.timeout(idle_timeout):
                    data = await reader.read(READ_CHUNK)
            except TimeoutError:
                return
            if not data:
                return
            for item in decoder.feed(data):
                answer = await handler(item, peer)
                if answer is not None:
                    writer.write(frame(answer))
                    await writer.drain()
    except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
        return
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def start_mllp(
    services: Services,
    *,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None = None,
    handler: Handler | None = None,
    idle_timeout: float = 300.0,
) -> MllpServer:
    """Start the MLLP listener; `handler` defaults to the Y intake (mssante/y/service.py)."""
    if handler is None:
        from mssante.y.service import YIntake

        intake = YIntake.for_services(services)
        handler = intake.handle_frame
    max_size = services.config.mllp.max_message_size
    connections: set[asyncio.Task[Any]] = set()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            connections.add(task)
        try:
            peer = _peer_info(writer, services.validator, services.now)
            if peer.cert_error:
                log.warning("mllp peer %s:%s presented a refused certificate: %s", peer.host, peer.port, peer.cert_error)
            await serve_connection(reader, writer, handler, max_size=max_size, peer=peer, idle_timeout=idle_timeout)
        except asyncio.CancelledError:
            writer.close()  # listener stopping: end quietly (asyncio's stream callback inspects the task)
        except Exception:  # noqa: BLE001 - one connection's failure never stops the listener
            log.exception("mllp connection failed")
        finally:
            if task is not None:
                connections.discard(task)

    server = await asyncio.start_server(on_connect, host, port, ssl=ssl_context, limit=READ_CHUNK * 2)
    bound = server.sockets[0].getsockname()[1] if server.sockets else port
    log.info("mllp listening on %s:%s%s", host, bound, " (TLS)" if ssl_context else "")
    return MllpServer(server, host, int(bound), connections)


async def send_mllp(
    host: str,
    port: int,
    payload: bytes,
    *,
    ssl_context: ssl.SSLContext | None = None,
    timeout: float = 30.0,
    max_size: int = 1024 * 1024,
) -> bytes:
    """A minimal MLLP client: send one message, return the answer's payload (used for ZAM and tests)."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port, ssl=ssl_context, server_hostname=host if ssl_context else None), timeout
    )
    try:
        writer.write(frame(payload))
        await writer.drain()
        decoder = MllpDecoder(max_size)
        while True:
            data = await asyncio.wait_for(reader.read(READ_CHUNK), timeout)
            if not data:
                raise ConnectionError("MLLP peer closed the connection before answering")
            for item in decoder.feed(data):
                if isinstance(item, Frame):
                    return item.payload
                raise ConnectionError("MLLP answer exceeds the size limit")
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


class MllpClient:
    """A persistent MLLP connection sending messages one after another (benchmarks, demo, tests)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, max_size: int = 1024 * 1024) -> None:
        self._reader, self._writer = reader, writer
        self._decoder = MllpDecoder(max_size)
        self._ready: list[bytes] = []

    @classmethod
    async def connect(cls, host: str, port: int, *, ssl_context: ssl.SSLContext | None = None,
                      server_hostname: str | None = None, timeout: float = 30.0) -> MllpClient:
        name = (server_hostname or host) if ssl_context else None
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=ssl_context, server_hostname=name), timeout
        )
        return cls(reader, writer)

    async def send(self, payload: bytes, timeout: float = 60.0) -> bytes:
        self._writer.write(frame(payload))
        await self._writer.drain()
        while not self._ready:
            async with asyncio.timeout(timeout):
                data = await self._reader.read(READ_CHUNK)
            if not data:
                raise ConnectionError("MLLP peer closed the connection")
            for item in self._decoder.feed(data):
                if isinstance(item, Frame):
                    self._ready.append(item.payload)
        return self._ready.pop(0)

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()
