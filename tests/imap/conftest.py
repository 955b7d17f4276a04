"""IMAP test fixtures: a real store (SQLite by default), a mailbox, TLS certificates, an in-memory
connection for transcript tests and a running listener on 127.0.0.1 for real clients."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings as hyp_settings
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mssante.app import Services
from mssante.auth.passwords import hash_password
from mssante.config import Config
from mssante.imap import framing
from mssante.imap.mime import summarize
from mssante.imap.server import ImapListener, start_imap
from mssante.imap.session import WAKE, AuditBatcher, ImapSettings, ServerContext, Session
from mssante.imap.store import SqlStorage
from mssante.observability.audit import Audit
from mssante.observability.metrics import Metrics
from mssante.store.base import Base
from mssante.store.db import make_engine, make_sessions
from mssante.store.mail import create_mailbox, deliver
from mssante.store.notify import FolderNotifier, make_notifier

hyp_settings.register_profile("imap", database=None, deadline=None)
hyp_settings.load_profile("imap")

PASSWORD = "correct horse battery staple"
ADDRESS = "dr.house@op-a.test"
OTHER = "dr.wilson@op-a.test"


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def message(subject: str = "Hello", body: str = "Bonjour docteur.\r\n", *, frm: str = "a@op-b.test",
            to: str = ADDRESS, extra: str = "") -> bytes:
    return (f"From: Alice <{frm}>\r\nTo: {to}\r\nSubject: {subject}\r\nDate: Mon, 23 Nov 2026 10:00:00 +0100\r\n"
            f"Message-ID: <{abs(hash((subject, body, extra)))}@op-b.test>\r\n{extra}"
            f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}").encode()


@dataclass
class Env:
    services: Services
    mailbox_id: int
    other_id: int

    async def deliver(self, raw: bytes, *, mailbox_id: int | None = None, folder: str = "INBOX") -> int:
        env, bs = summarize(raw)
        async with self.services.sessions() as s, s.begin():
            d = await deliver(s, raw, [mailbox_id or self.mailbox_id], internaldate=_utcnow(), folder=folder,
                              envelope=env, bodystructure=bs, message_id=env[9])
        if self.services.notifier is not None and not isinstance(self.services.notifier, type(None)):
            self.services.notifier.publish(d[0].folder_id)  # writers publish in-process after commit
        return d[0].uid


async def make_env(db_url: str, *, notifier: FolderNotifier | None = None) -> Env:
    engine = make_engine(db_url)
    async with engine.begin() as c:
        await c.run_sync(Base.metadata.create_all)
    sessions = make_sessions(engine)
    services = Services(config=Config(), engine=engine, sessions=sessions, audit=Audit(sessions, _utcnow),
                        metrics=Metrics())
    services.notifier = notifier or FolderNotifier()
    async with sessions() as s, s.begin():
        a = await create_mailbox(s, ADDRESS, "PER", password_hash=hash_password(PASSWORD), owner_idnps="810000000001")
        b = await create_mailbox(s, OTHER, "PER", password_hash=hash_password(PASSWORD))
        ids = (int(a.id), int(b.id))
    return Env(services, *ids)


@pytest.fixture
async def env(db_url: str) -> AsyncIterator[Env]:
    """A fresh store with two mailboxes, on SQLite and on PostgreSQL (tests/conftest.py db_url).
    The PostgreSQL run uses the in-process notifier too: LISTEN/NOTIFY has its own tests."""
    e = await make_env(db_url)
    yield e
    await e.services.engine.dispose()


@pytest.fixture
async def env_sqlite(tmp_path: Path) -> AsyncIterator[Env]:
    """SQLite only: for the real-client tests over sockets (the store is exercised on both
    backends by the transcript tests)."""
    e = await make_env(f"sqlite+aiosqlite:///{tmp_path / 'imap.db'}")
    yield e
    await e.services.engine.dispose()


@pytest.fixture
async def env_any(db_url: str) -> AsyncIterator[Env]:
    notifier = make_notifier(db_url)
    await notifier.start()
    e = await make_env(db_url, notifier=notifier)
    yield e
    await notifier.stop()
    await e.services.engine.dispose()


def fast_settings(**kw: Any) -> ImapSettings:
    s = ImapSettings(hostname="imap.op-a.test", auth_failure_delay=0.0)
    for k, v in kw.items():
        setattr(s, k, v)
    return s


def context(env: Env, **kw: Any) -> ServerContext:
    from mssante.auth.service import Authenticator

    sv = env.services
    storage = SqlStorage(sv.sessions, published=sv.notifier.publish)
    return ServerContext(
        storage=storage,
        audit_batch=AuditBatcher(storage, sv.audit),
        authenticator=kw.pop("authenticator", None) or Authenticator(sv.sessions),
        notifier=sv.notifier,
        settings=kw.pop("settings", fast_settings()),
        audit=sv.audit,
        **kw,
    )


class MemoryConn:
    """An in-memory Conn: the test feeds client bytes and reads what the session wrote."""

    def __init__(self, ctx: ServerContext, *, tls: bool = True) -> None:
        s = ctx.settings
        self.reader = framing.CommandReader(max_line=s.max_line, max_literal=s.max_literal,
                                            append_limit=s.append_limit, max_command=s.max_command)
        self.tls = tls
        self.peer = "memory"
        self.out = bytearray()
        self.closed = False
        self._event = asyncio.Event()
        self._woken = False

    def feed(self, data: bytes) -> None:
        self.reader.feed(data)
        self._event.set()

    def write(self, data: bytes) -> None:
        self.out += data

    async def drain(self) -> None:
        await asyncio.sleep(0)

    def wakeup(self) -> None:
        self._woken = True
        self._event.set()

    async def _wait(self, timeout: float) -> bool:
        self._event.clear()
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def next_event(self, timeout: float) -> Any:
        while True:
            ev = self.reader.next_event()
            if ev is not None:
                return ev
            if self.closed:
                return None
            if self._woken:
                self._woken = False
                return WAKE
            if not await self._wait(timeout):
                return None

    async def next_line(self, timeout: float, *, wakeable: bool = False) -> Any:
        while True:
            line = self.reader.next_line()
            if line is not None:
                return line
            if self.closed:
                return None
            if wakeable and self._woken:
                self._woken = False
                return WAKE
            if not await self._wait(timeout):
                return None

    async def start_tls(self) -> bool:
        self.tls = True
        return True

    def peer_certificate(self) -> Any:
        return None

    def close(self) -> None:
        self.closed = True
        self._event.set()


class Client:
    """Drives a Session in memory: `await c.cmd("a1 NOOP")` returns the response lines up to the tag."""

    def __init__(self, env: Env, *, tls: bool = True, **ctx_kw: Any) -> None:
        self.env = env
        self.ctx = context(env, **ctx_kw)
        self.conn = MemoryConn(self.ctx, tls=tls)
        self.session = Session(self.ctx, self.conn)
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> bytes:
        self.task = asyncio.get_running_loop().create_task(self.session.run())
        return await self.read_until(b"\r\n")

    async def read_until(self, marker: bytes, timeout: float = 10.0) -> bytes:
        async def wait() -> bytes:
            while marker not in self.conn.out:
                if self.task is not None and self.task.done():
                    break
                await asyncio.sleep(0.001)
            i = self.conn.out.find(marker)
            if i < 0:
                data = bytes(self.conn.out)
                self.conn.out.clear()
                return data
            data = bytes(self.conn.out[: i + len(marker)])
            del self.conn.out[: i + len(marker)]
            return data

        return await asyncio.wait_for(wait(), timeout)

    async def send(self, data: bytes) -> None:
        self.conn.feed(data)
        await asyncio.sleep(0)

    async def cmd(self, line: str | bytes, *, tag: str | None = None) -> str:
        b = line.encode() if isinstance(line, str) else line
        t = (tag or b.split(b" ", 1)[0].decode()).encode()
        self.conn.feed(b + b"\r\n")
        out = await self._until_tag(t)
        return out.decode("utf-8", "replace")

    async def _until_tag(self, tag: bytes) -> bytes:
        buf = b""
        while True:
            chunk = await self.read_until(b"\r\n")
            if not chunk:
                return buf
            buf += chunk
            # A literal inside a line: read it as a whole.
            while buf.endswith(b"}\r\n") and b"{" in buf.rsplit(b"\r\n", 2)[-2]:
                n = int(buf[buf.rindex(b"{") + 1 : -3].rstrip(b"+"))
                while len(self.conn.out) < n:
                    await asyncio.sleep(0.001)
                buf += bytes(self.conn.out[:n])
                del self.conn.out[:n]
                buf += await self.read_until(b"\r\n")
            last = buf[: -2].rsplit(b"\r\n", 1)[-1]
            if last.startswith(tag + b" "):
                return buf

    async def login(self) -> str:
        return await self.cmd(f'l1 LOGIN {ADDRESS} "{PASSWORD}"')

    async def close(self) -> None:
        self.conn.close()
        if self.task is not None:
            await asyncio.wait_for(self.task, 10)
        if self.ctx.audit_batch is not None:
            await self.ctx.audit_batch.close()
        aclose = getattr(self.ctx.storage, "aclose", None)
        if aclose is not None:
            await aclose()  # the fast path's threads or pool (mssante.imap.sqlite_fast, store_pg)

    async def flush_audit(self) -> None:
        assert self.ctx.audit_batch is not None
        await self.ctx.audit_batch.close()


@pytest.fixture
async def client(env: Env) -> AsyncIterator[Client]:
    c = Client(env)
    await c.start()
    yield c
    await c.close()


@pytest.fixture
async def logged(env: Env) -> AsyncIterator[Client]:
    c = Client(env)
    await c.start()
    r = await c.login()
    assert "l1 OK" in r, r
    yield c
    await c.close()


# --- TLS -------------------------------------------------------------------------------------------


@dataclass
class Certs:
    ca_path: Path
    cert_path: Path
    key_path: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # SPECS.md §2: TLS 1.2 minimum
        ctx.load_cert_chain(str(self.cert_path), str(self.key_path))
        return ctx

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_path))
        return ctx


def _make_certs(d: Path) -> Certs:
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test IMAP CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
          .not_valid_after(now + dt.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    d.mkdir(parents=True, exist_ok=True)
    (d / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (d / "cert.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (d / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    return Certs(d / "ca.pem", d / "cert.pem", d / "key.pem")


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return _make_certs(tmp_path_factory.mktemp("imapcerts"))


@dataclass
class Running:
    env: Env
    imaps: ImapListener
    imap: ImapListener
    certs: Certs


@pytest.fixture
async def running(env_sqlite: Env, certs: Certs) -> AsyncIterator[Running]:
    env = env_sqlite
    settings = fast_settings()
    imaps = await start_imap(env.services, host="127.0.0.1", port=0, implicit_tls=True,
                             ssl_context=certs.server_context(), settings=settings)
    imap = await start_imap(env.services, host="127.0.0.1", port=0, implicit_tls=False,
                            ssl_context=certs.server_context(), settings=settings)
    yield Running(env, imaps, imap, certs)
    await imaps.stop()
    await imap.stop()
