#!/usr/bin/env python3
"""IMAP benchmark: prints figures, asserts nothing (issue 6).

The server runs in its own processes (`serve` subcommand, started by the benchmark: --server-procs
of them on one port, as `imap.processes`), the load in others, over implicit TLS on 127.0.0.1. The
mixed load comes from --procs load-generator processes, by default the lean selector loop of
scripts/imap_loadgen.py (imaptest-like: a few tens of microseconds of CPU per command, so the
server gets the machine; --client asyncio for the asyncio-streams client). Measures (--only):

  mix     imaptest-like mixed load, logged in: SELECT, FETCH metadata, FETCH body, STORE flags,
          APPEND, EXPUNGE, N users, C clients, T s (`relogin`: the same with LOGOUT/LOGIN every cycle)
  idle    C concurrent TLS connections in IDLE: server RSS growth / C
  fetch   FETCH headers of 1,000 messages in a 10,000-message mailbox (ms)
  notify  delivery-to-IDLE latency (APPEND on one connection -> EXISTS on K idle ones; with a
          PostgreSQL --db-url also deliveries made by another process through pg_notify), p50/p99

    python scripts/bench_imap.py --quick                     # small sizes, ~1 minute
    python scripts/bench_imap.py --users 100 --clients 20 --seconds 30 --idle 10000 \\
        --fetch-mailbox 10000 --fetch-count 1000             # the issue's figures

Users get a cheap argon2 hash unless --real-hash (argon2id as production, ~20 ms a login): the
protocol is what is measured, not the password hash; `relogin` with --real-hash shows the cost.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import ipaddress
import json
import os
import random
import resource
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PASSWORD = "bench-password-123"


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def make_certs(d: Path) -> tuple[Path, Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
          .not_valid_after(now + dt.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    (d / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (d / "cert.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (d / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    return d / "ca.pem", d / "cert.pem", d / "key.pem"


def message(i: int, size: int = 2000) -> bytes:
    body = ("Compte rendu %d. " % i) * (size // 20)
    return (f"From: Labo <labo@op-b.test>\r\nTo: user@op-a.test\r\nSubject: Resultat {i}\r\n"
            f"Date: Mon, 23 Nov 2026 10:00:00 +0100\r\nMessage-ID: <{i}.{random.random()}@op-b.test>\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n").encode()


# --- server process -----------------------------------------------------------------------------------
async def serve(args: argparse.Namespace) -> None:
    raise_nofile()
    from mssante.app import Services
    from mssante.config import Config
    from mssante.imap.server import start_imap
    from mssante.imap.session import ImapSettings
    from mssante.observability.audit import Audit
    from mssante.observability.metrics import Metrics
    from mssante.store.db import make_engine, make_sessions
    from mssante.store.notify import make_notifier

    engine = make_engine(args.db_url, pool_size=20)
    sessions = make_sessions(engine)
    now = lambda: dt.datetime.now(dt.timezone.utc)  # noqa: E731
    services = Services(config=Config(), engine=engine, sessions=sessions, audit=Audit(sessions, now),
                        metrics=Metrics())
    services.notifier = make_notifier(args.db_url, cross_process=args.shared)
    await services.notifier.start()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(args.cert, args.key)
    settings = ImapSettings(hostname="bench", auth_failure_delay=0.0, idle_timeout=3600)
    if args.thread_writes:  # the write path before sqlite_inline, for comparison
        from functools import partialmethod

        from mssante.imap.sqlite_fast import SqliteRunner

        SqliteRunner.__init__ = partialmethod(SqliteRunner.__init__, inline_writes=False)  # type: ignore[method-assign]
    listener = await start_imap(services, host="127.0.0.1", port=args.port, implicit_tls=True, ssl_context=ctx,
                                settings=settings, reuse_port=args.shared)
    print(json.dumps({"port": listener.port, "pid": os.getpid()}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent closes stdin
    st = listener.ctx.storage
    if getattr(st, "batches", 0):
        iw = getattr(getattr(st, "_fast", None), "_iw", None)
        thread = (f", {iw.lock_waits} waited for another process's lock, {iw.fallbacks} went to the writer thread"
                  if iw is not None else "")
        print(f"  server: {st.batched} write operations in {st.batches} group commits{thread}; "
              f"CPU {time.process_time():.1f} s", file=sys.stderr, flush=True)
    await listener.stop()


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of the server processes, all threads (contention-independent cost measure)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def rss_kib(pids: list[int]) -> int:
    return sum(_rss_kib(pid) for pid in pids)


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# --- setup --------------------------------------------------------------------------------------------
async def setup(db_url: str, users: int, per_user: int, big: int, real_hash: bool) -> None:
    from argon2 import PasswordHasher

    from mssante.auth.passwords import hash_password
    from mssante.imap.mime import summarize
    from mssante.store.base import Base
    from mssante.store.db import make_engine, make_sessions
    from mssante.store.mail import create_mailbox, deliver

    engine = make_engine(db_url)
    async with engine.begin() as c:
        await c.run_sync(Base.metadata.create_all)
    sessions = make_sessions(engine)
    cheap = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    pw_hash = hash_password(PASSWORD) if real_hash else cheap.hash(PASSWORD)
    now = dt.datetime.now(dt.timezone.utc)
    async with sessions() as s, s.begin():
        ids = []
        for u in range(users):
            box = await create_mailbox(s, f"user{u}@op-a.test", "PER", password_hash=pw_hash)
            ids.append(int(box.id))
        big_box = await create_mailbox(s, "big@op-a.test", "PER", password_hash=pw_hash)
        idle_box = await create_mailbox(s, "idle@op-a.test", "PER", password_hash=pw_hash)
    for i in range(per_user):
        raw = message(i)
        env, bs = summarize(raw)
        async with sessions() as s, s.begin():
            await deliver(s, raw, ids, internaldate=now, envelope=env, bodystructure=bs, message_id=env[9])
    t0 = time.perf_counter()
    for start in range(0, big, 500):
        async with sessions() as s, s.begin():
            for i in range(start, min(big, start + 500)):
                raw = message(i, 1500)
                env, bs = summarize(raw)
                await deliver(s, raw, [int(big_box.id)], internaldate=now, envelope=env, bodystructure=bs,
                              message_id=env[9])
    if big:
        print(f"  setup: {big} messages in the big mailbox in {time.perf_counter() - t0:.1f} s", flush=True)
    _ = idle_box
    await engine.dispose()


# --- a minimal client ---------------------------------------------------------------------------------
class Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.r, self.w = reader, writer
        self.n = 0

    @classmethod
    async def open(cls, port: int, ctx: ssl.SSLContext) -> Conn:
        r, w = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="localhost",
                                             limit=1 << 22)
        await r.readline()
        return cls(r, w)

    async def cmd(self, line: bytes, literal: bytes | None = None) -> list[bytes]:
        self.n += 1
        tag = b"t%d" % self.n
        if literal is not None:
            self.w.write(tag + b" " + line + b" {%d+}\r\n" % len(literal) + literal + b"\r\n")
        else:
            self.w.write(tag + b" " + line + b"\r\n")
        out: list[bytes] = []
        while True:
            ln = await self.r.readline()
            if not ln:
                raise ConnectionError("closed")
            if ln.endswith(b"}\r\n") and b"{" in ln:
                n = int(ln[ln.rindex(b"{") + 1 : -3])
                await self.r.readexactly(n)
                out.append(ln)
                continue
            if ln.startswith(tag + b" "):
                if not ln.startswith(tag + b" OK"):
                    raise RuntimeError(ln.decode(errors="replace"))
                return out
            out.append(ln)

    def close(self) -> None:
        self.w.close()


def client_ctx(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


# --- measures -----------------------------------------------------------------------------------------
async def mix_load(port: int, ca: Path, users: int, clients: int, seconds: float, relogin: bool,
                   first: int = 0) -> tuple[int, int, float]:
    """Run `clients` mixed-load clients for `seconds`: (commands, errors, elapsed)."""
    ctx = client_ctx(ca)
    count = 0
    stop = time.perf_counter() + seconds
    errors = 0

    async def worker(k: int) -> None:
        nonlocal count, errors
        rnd = random.Random(k)
        c: Conn | None = None
        while time.perf_counter() < stop:
            try:
                if c is None:
                    c = await Conn.open(port, ctx)
                    await c.cmd(b'LOGIN user%d@op-a.test "%s"' % (rnd.randrange(users), PASSWORD.encode()))
                    count += 1
                exists = 0
                for ln in await c.cmd(b"SELECT INBOX"):
                    if ln.endswith(b" EXISTS\r\n"):
                        exists = int(ln.split()[1])
                count += 1
                if exists:
                    lo = max(1, exists - 9)
                    await c.cmd(b"FETCH %d:%d (UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE)" % (lo, exists))
                    await c.cmd(b"FETCH %d BODY.PEEK[]" % rnd.randint(1, exists))
                    await c.cmd(b"STORE %d +FLAGS (\\Seen)" % rnd.randint(1, exists))
                    count += 3
                await c.cmd(b"APPEND INBOX (\\Flagged)", message(rnd.randrange(10**6), 1500))
                await c.cmd(b"UID STORE * +FLAGS.SILENT (\\Deleted)")
                await c.cmd(b"EXPUNGE")
                count += 3
                if relogin:
                    await c.cmd(b"LOGOUT")
                    count += 1
                    c.close()
                    c = None
            except (ConnectionError, RuntimeError, asyncio.IncompleteReadError) as e:
                errors += 1
                if errors < 5:
                    print(f"  client error: {e}", file=sys.stderr, flush=True)
                if c is not None:
                    c.close()
                c = None
        if c is not None:
            c.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(first + k) for k in range(clients)))
    return count, errors, time.perf_counter() - t0


async def bench_mix(port: int, ca: Path, users: int, clients: int, seconds: float, relogin: bool,
                    server_pids: list[int], procs: int, lean: bool) -> None:
    """The mixed load from `procs` load-generator processes (one Python process cannot load the
    server: a client spends about as much CPU per command as the server does)."""
    cpu0 = cpu_seconds(server_pids)
    t0 = time.perf_counter()
    if procs <= 1:
        c0 = time.process_time()
        count, errors, el = await mix_load(port, ca, users, clients, seconds, relogin)
        rate = count / el
        client_cpu = time.process_time() - c0
    else:
        shares = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
        children = [await asyncio.create_subprocess_exec(
            sys.executable, __file__, "loadgen", "--port", str(port), "--ca", str(ca), "--users", str(users),
            "--clients", str(n), "--seconds", str(seconds), "--first", str(sum(shares[:i])),
            *(["--relogin"] if relogin else []), *(["--lean"] if lean else []), stdout=asyncio.subprocess.PIPE)
            for i, n in enumerate(shares) if n]
        outs = [json.loads((await ch.communicate())[0]) for ch in children]
        count = sum(o["count"] for o in outs)
        errors = sum(o["errors"] for o in outs)
        rate = sum(o["count"] / o["elapsed"] for o in outs)
        client_cpu = sum(o["cpu"] for o in outs)
        el = time.perf_counter() - t0
    cpu = cpu_seconds(server_pids) - cpu0
    label = "mix with LOGIN/LOGOUT every cycle" if relogin else "mix, logged in"
    print(f"{label}: {rate:,.0f} commands/s ({count} commands, {clients} clients in {max(1, procs)} processes, "
          f"{users} users, {el:.1f} s, {errors} errors); server CPU {cpu * 1000 / max(1, count):.2f} ms/command "
          f"({cpu / el * 100:.0f}% of one CPU); load generator ({'lean' if lean else 'asyncio'}) "
          f"{client_cpu * 1000 / max(1, count):.2f} ms/command; load average {loadavg()}", flush=True)


async def bench_idle(port: int, ca: Path, server_pids: list[int], n: int) -> None:
    ctx = client_ctx(ca)
    before = rss_kib(server_pids)
    conns: list[Conn] = []
    sem = asyncio.Semaphore(200)

    async def one() -> None:
        async with sem:
            c = await Conn.open(port, ctx)
            await c.cmd(b'LOGIN idle@op-a.test "%s"' % PASSWORD.encode())
            await c.cmd(b"SELECT INBOX")
            c.w.write(b"i IDLE\r\n")
            await c.r.readline()
            conns.append(c)

    t0 = time.perf_counter()
    results = await asyncio.gather(*(one() for _ in range(n)), return_exceptions=True)
    failed = sum(1 for r in results if isinstance(r, BaseException))
    await asyncio.sleep(2)
    after = rss_kib(server_pids)
    per = (after - before) / max(1, len(conns))
    print(f"idle: {len(conns)} TLS connections in IDLE ({failed} failed) in {time.perf_counter() - t0:.1f} s; "
          f"server RSS {before / 1024:.0f} -> {after / 1024:.0f} MiB = {per:.1f} KiB per connection", flush=True)
    for c in conns:
        c.close()
    await asyncio.sleep(1)


async def bench_fetch(port: int, ca: Path, count: int, total: int) -> None:
    if not total:
        return
    ctx = client_ctx(ca)
    c = await Conn.open(port, ctx)
    await c.cmd(b'LOGIN big@op-a.test "%s"' % PASSWORD.encode())
    await c.cmd(b"SELECT INBOX")
    lo = max(1, total - count + 1)
    for label, items in (("ENVELOPE", b"(UID FLAGS ENVELOPE)"),
                         ("BODY.PEEK[HEADER]", b"(UID BODY.PEEK[HEADER])"),
                         ("HEADER.FIELDS", b"(UID BODY.PEEK[HEADER.FIELDS (FROM TO SUBJECT DATE MESSAGE-ID)])")):
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            out = await c.cmd(b"FETCH %d:%d %s" % (lo, total, items))
            times.append((time.perf_counter() - t0) * 1000)
        print(f"fetch {label} of {count} messages in a {total}-message mailbox: median {statistics.median(times):.0f} ms"
              f" (best {min(times):.0f} ms, {len([x for x in out if b'FETCH' in x])} responses)", flush=True)
    c.close()


async def bench_notify(port: int, ca: Path, watchers: int, rounds: int, db_url: str) -> None:
    ctx = client_ctx(ca)
    idlers = []
    for _ in range(watchers):
        c = await Conn.open(port, ctx)
        await c.cmd(b'LOGIN idle@op-a.test "%s"' % PASSWORD.encode())
        await c.cmd(b"SELECT INBOX")
        c.w.write(b"i IDLE\r\n")
        await c.r.readline()
        idlers.append(c)
    sender = await Conn.open(port, ctx)
    await sender.cmd(b'LOGIN idle@op-a.test "%s"' % PASSWORD.encode())
    lat: list[float] = []

    async def wait_exists(c: Conn, t0: float) -> None:
        while True:
            ln = await c.r.readline()
            if ln.endswith(b"EXISTS\r\n"):
                lat.append((time.perf_counter() - t0) * 1000)
                return

    for i in range(rounds):
        t0 = time.perf_counter()
        waits = [asyncio.create_task(wait_exists(c, t0)) for c in idlers]
        await sender.cmd(b"APPEND INBOX", message(i, 500))
        await asyncio.wait_for(asyncio.gather(*waits), 30)
    lat.sort()
    print(f"notify (APPEND -> EXISTS on {watchers} IDLE sessions, {rounds} rounds): p50 {lat[len(lat) // 2]:.1f} ms, "
          f"p99 {lat[int(len(lat) * 0.99) - 1]:.1f} ms", flush=True)
    if db_url.startswith("postgresql"):
        from mssante.imap.mime import summarize
        from mssante.store.db import make_engine, make_sessions
        from mssante.store.mail import deliver, mailbox_by_address

        engine = make_engine(db_url)
        sessions = make_sessions(engine)
        async with sessions() as s:
            box = await mailbox_by_address(s, "idle@op-a.test")
            assert box is not None
            box_id = int(box.id)
        lat.clear()
        for i in range(rounds):
            raw = message(10**6 + i, 500)
            env, bs = summarize(raw)
            t0 = time.perf_counter()
            waits = [asyncio.create_task(wait_exists(c, t0)) for c in idlers]
            async with sessions() as s, s.begin():
                await deliver(s, raw, [box_id], internaldate=dt.datetime.now(dt.timezone.utc), envelope=env,
                              bodystructure=bs)
            await asyncio.wait_for(asyncio.gather(*waits), 30)
        lat.sort()
        print(f"notify across processes (deliver() + pg_notify -> EXISTS, {watchers} sessions): "
              f"p50 {lat[len(lat) // 2]:.1f} ms, p99 {lat[int(len(lat) * 0.99) - 1]:.1f} ms", flush=True)
        await engine.dispose()
    for c in idlers + [sender]:
        c.close()


async def main(args: argparse.Namespace) -> None:
    raise_nofile()
    tmp = Path(tempfile.mkdtemp(prefix="bench_imap."))
    ca, cert, key = make_certs(tmp)
    pg = None
    if args.pg:
        # A throw-away PostgreSQL (fsync on) from the test helper tests/pgserver.py.
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from pgserver import PgServer, find_bindir

        bindir = find_bindir()
        if bindir is None:
            raise SystemExit("bench_imap: --pg needs the PostgreSQL server binaries (initdb, pg_ctl)")
        pg = PgServer(bindir)
        pg.start()
        args.db_url = pg.create_database("bench_imap")
    db_url = args.db_url or f"sqlite+aiosqlite:///{tmp / 'bench.db'}"
    print(f"bench_imap: {db_url.split('://')[0]}, {os.cpu_count()} CPUs (shared machine: figures are indicative)",
          flush=True)
    big = args.fetch_mailbox if "fetch" in args.only else 0  # the big mailbox only serves `fetch`
    await setup(db_url, args.users, args.per_user, big, args.real_hash)
    servers: list[subprocess.Popen[str]] = []
    port = 0
    shared = ["--shared"] if args.server_procs > 1 else []
    for _ in range(args.server_procs):  # the first binds a free port, the others share it (SO_REUSEPORT)
        proc = subprocess.Popen([sys.executable, __file__, "serve", "--db-url", db_url, "--cert", str(cert),
                                 "--key", str(key), "--port", str(port), *shared,
                                 *(["--thread-writes"] if args.thread_writes else [])],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        servers.append(proc)
        port = json.loads(proc.stdout.readline())["port"]
    pids = [p.pid for p in servers]
    if args.server_procs > 1:
        print(f"  {args.server_procs} server processes on port {port}", flush=True)
    try:
        if "mix" in args.only:
            await bench_mix(port, ca, args.users, args.clients, args.seconds, relogin=False,
                            server_pids=pids, procs=args.procs, lean=args.client == "lean")
        if "relogin" in args.only:
            await bench_mix(port, ca, args.users, args.clients, args.seconds, relogin=True, server_pids=pids,
                            procs=args.procs, lean=args.client == "lean")
        if "fetch" in args.only:
            await bench_fetch(port, ca, args.fetch_count, args.fetch_mailbox)
        if "notify" in args.only:
            await bench_notify(port, ca, args.watchers, args.rounds, db_url)
        if "idle" in args.only:
            await bench_idle(port, ca, pids, args.idle)
    finally:
        for proc in servers:
            assert proc.stdin is not None
            proc.stdin.close()
        for proc in servers:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        if pg is not None:
            pg.stop()


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd")
    s = sub.add_parser("serve", help="(internal) run the server process")
    s.add_argument("--db-url", required=True)
    s.add_argument("--cert", required=True)
    s.add_argument("--key", required=True)
    s.add_argument("--port", type=int, default=0)
    s.add_argument("--shared", action="store_true", help="several server processes: SO_REUSEPORT, polled notifier")
    s.add_argument("--thread-writes", action="store_true")
    g = sub.add_parser("loadgen", help="(internal) one mixed-load generator process")
    g.add_argument("--port", type=int, required=True)
    g.add_argument("--ca", required=True)
    g.add_argument("--users", type=int, required=True)
    g.add_argument("--clients", type=int, required=True)
    g.add_argument("--seconds", type=float, required=True)
    g.add_argument("--first", type=int, default=0)
    g.add_argument("--relogin", action="store_true")
    g.add_argument("--lean", action="store_true")
    p.add_argument("--quick", action="store_true", help="small sizes (the default when no size is given)")
    p.add_argument("--db-url", default="", help="database (default: SQLite in a temp dir)")
    p.add_argument("--pg", action="store_true", help="start a temporary PostgreSQL and use it")
    p.add_argument("--users", type=int, default=None)
    p.add_argument("--per-user", type=int, default=None, help="messages per user at start")
    p.add_argument("--clients", type=int, default=None)
    p.add_argument("--seconds", type=float, default=None)
    p.add_argument("--idle", type=int, default=None, help="concurrent IDLE connections")
    p.add_argument("--fetch-mailbox", type=int, default=None, help="messages in the big mailbox")
    p.add_argument("--fetch-count", type=int, default=None)
    p.add_argument("--watchers", type=int, default=None)
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--real-hash", action="store_true", help="production argon2id cost for logins")
    p.add_argument("--only", default="mix,relogin,fetch,notify,idle")
    p.add_argument("--procs", type=int, default=2, help="load-generator processes for the mix")
    p.add_argument("--thread-writes", action="store_true",
                   help="SQLite writes entirely on the writer thread (the path before sqlite_inline)")
    p.add_argument("--server-procs", type=int, default=1,
                   help="IMAP server processes sharing the port, as `imap.processes`")
    p.add_argument("--client", choices=("lean", "asyncio"), default="lean",
                   help="load generator: lean selector loop (imaptest-like, default) or asyncio streams")
    a = p.parse_args()
    if a.cmd == "loadgen":
        return a
    full = not a.quick
    defaults = {"users": (100, 10), "per_user": (20, 10), "clients": (20, 5), "seconds": (30.0, 5.0),
                "idle": (10000, 500), "fetch_mailbox": (10000, 2000), "fetch_count": (1000, 1000),
                "watchers": (20, 5), "rounds": (200, 30)}
    for k, (big, small) in defaults.items():
        if getattr(a, k) is None:
            setattr(a, k, big if full else small)
    a.only = set(a.only.split(","))
    return a


if __name__ == "__main__":
    args = parse()
    if os.environ.get("BENCH_UVLOOP"):
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    if args.cmd == "loadgen":
        if args.lean:
            from imap_loadgen import LoadGen

            n, e, el = LoadGen(args.port, client_ctx(Path(args.ca)), args.users, PASSWORD, args.relogin,
                               message).run(args.clients, args.seconds, args.first)
        else:
            n, e, el = asyncio.run(mix_load(args.port, Path(args.ca), args.users, args.clients, args.seconds,
                                            args.relogin, args.first))
        print(json.dumps({"count": n, "errors": e, "elapsed": el, "cpu": time.process_time()}), flush=True)
    elif args.cmd == "serve":
        if os.environ.get("BENCH_PROFILE"):
            import cProfile

            cProfile.run("asyncio.run(serve(args))", f"{os.environ['BENCH_PROFILE']}.{os.getpid()}")
        else:
            asyncio.run(serve(args))
    else:
        asyncio.run(main(args))
