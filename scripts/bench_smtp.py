#!/usr/bin/env python3
"""SMTP benchmark: the inbound MTA under mutual TLS, the relay queue drain, idle connection memory.

The gateway under test runs in its own process (tests/smtp/gateway_main.py); its CPU time is read with
psutil before and after each run, so "CPU ms/msg" is the gateway's alone (not the load generator's).
Figures are medians of --runs runs. Tests never assert timings; this script only prints.

    python scripts/bench_smtp.py --quick                 # small sizes, a minute or so
    python scripts/bench_smtp.py --messages 2000 --runs 5 --db sqlite
    python scripts/bench_smtp.py --db postgresql         # starts a throw-away PostgreSQL (initdb/pg_ctl)

Scenarios (issue 5 targets, Postfix on the same box): (a) 1 message per connection, 20 concurrent;
(b) 50 messages per connection, 10 concurrent; SQLite synchronous=FULL, TLS 1.3 mutual auth with RSA-2048
certificates, 10 KiB messages, 1,000 local mailboxes; then memory per idle connection and queue drain
between two local operators.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiosmtplib
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "smtp"))

from operators import Operator, Space, make_operator, refresh_trust  # noqa: E402

from mssante.store.mail import create_mailbox  # noqa: E402

GATEWAY = ROOT / "tests" / "smtp" / "gateway_main.py"
DRAIN_CONNECTIONS = 16  # relay.per_domain_concurrency for the drain
PROFILE = os.environ.get("BENCH_PROFILE", "")  # write the gateway's cProfile stats here


def body(size: int, i: int, rcpt: str) -> bytes:
    head = (f"From: <sec@op-b.test>\r\nTo: <{rcpt}>\r\nSubject: bench {i}\r\n"
            f"Message-ID: <bench.{i}.{random.getrandbits(48)}@op-b.test>\r\nDate: Mon, 23 Nov 2026 12:00:00 +0000\r\n\r\n")
    line = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor " * 1)[:76] + "\r\n"
    n = max(1, (size - len(head)) // len(line))
    return (head + line * n).encode()


class Gateway:
    def __init__(self, op: Operator, liste: Path) -> None:
        self.op, self.liste = op, liste
        self.proc: asyncio.subprocess.Process | None = None
        self.port = 0

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, *(["-m", "cProfile", "-o", PROFILE] if PROFILE else []), str(GATEWAY), str(self.op.dir / "operator.json"), str(self.liste), "127.0.0.1:0",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 120)
        if not line.startswith(b"READY"):
            raise RuntimeError(f"gateway did not start: {line!r}")
        self.port = int(line.split()[1])
        self.ps = psutil.Process(self.proc.pid)

    def cpu(self) -> float:
        t = self.ps.cpu_times()
        return t.user + t.system

    def rss(self) -> int:
        return int(self.ps.memory_info().rss)

    async def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            await self.proc.wait()
            self.proc = None


_CTX: dict[int, object] = {}


def client_ctx(space: Space, issued):
    """One client SSLContext per certificate, as a real MTA keeps: building one per connection (reading the
    anchors, the chain and the RSA key) cost the load generator ~1 ms of the CPU the gateway also needs."""
    key = id(issued)
    if key not in _CTX:
        _CTX[key] = space.client_ctx(issued)
    return _CTX[key]


async def send_connection(port: int, space: Space, issued, n: int, size: int, rcpts: list[str], start: int) -> int:
    c = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=60, local_hostname="mx.op-b.test")
    await c.connect()
    await c.starttls(tls_context=client_ctx(space, issued))
    done = 0
    for i in range(n):
        rcpt = rcpts[(start + i) % len(rcpts)]
        await c.sendmail("sec@op-b.test", [rcpt], body(size, start + i, rcpt))
        done += 1
    await c.quit()
    return done


async def scenario(gw: Gateway, space: Space, issued, *, total: int, per_conn: int, concurrency: int, size: int,
                   rcpts: list[str]) -> tuple[float, float, float]:
    """Returns (messages per second, gateway CPU ms per message, load generator CPU ms per message)."""
    conns = max(1, total // per_conn)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for k in range(conns):
        queue.put_nowait(k)
    sent = 0

    async def worker() -> None:
        nonlocal sent
        while True:
            try:
                k = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            done = await send_connection(gw.port, space, issued, per_conn, size, rcpts, k * per_conn)
            sent += done  # (not "sent += await ...": that reads `sent` before the await)

    me = psutil.Process()
    cpu0, t0, my0 = gw.cpu(), time.perf_counter(), sum(me.cpu_times()[:2])
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed, cpu = time.perf_counter() - t0, gw.cpu() - cpu0
    return sent / elapsed, cpu * 1000 / sent, (sum(me.cpu_times()[:2]) - my0) * 1000 / sent


async def idle_memory(gw: Gateway, space: Space, issued, n: int) -> tuple[float, float]:
    """RSS growth per idle connection (slope between n and 2n open connections, so allocator warm-up and
    one-off costs cancel out): after the greeting (plaintext) and after STARTTLS + EHLO (what a peer MTA holds)."""

    async def plain_conn() -> object:
        r, w = await asyncio.open_connection("127.0.0.1", gw.port)
        await r.readline()
        return w

    async def tls_conn() -> object:
        c = aiosmtplib.SMTP(hostname="127.0.0.1", port=gw.port, start_tls=False, timeout=60, local_hostname="mx.op-b.test")
        await c.connect()
        await c.starttls(tls_context=client_ctx(space, issued))
        await c.ehlo()
        return c

    out = []
    for make in (plain_conn, tls_conn):
        held: list[object] = []
        points = []
        for _ in range(2):
            for _ in range(n):
                held.append(await make())
            await asyncio.sleep(1.0)
            points.append(gw.rss())
        out.append((points[1] - points[0]) / n / 1024)
        for h in held:
            h.close()  # type: ignore[attr-defined]
        await asyncio.sleep(1.0)
    return out[0], out[1]


async def queue_drain(space: Space, base: Path, sender: Operator, receiver_gw: Gateway, n: int, size: int,
                      rcpts: list[str]) -> tuple[float, float]:
    """Messages queued at `sender` for the receiver (running in its own process), drained by a relay worker."""
    from mssante.smtp.relay import RelayWorker
    from mssante.store import queue as qstore

    now = dt.datetime.now(dt.timezone.utc)
    async with sender.services.sessions() as s, s.begin():
        for i in range(n):
            rcpt = rcpts[i % len(rcpts)]
            await qstore.enqueue(s, body(size, i, rcpt).replace(b"sec@op-b.test", b"sec@op-b.test"), "sec@op-b.test",
                            [qstore.NewRecipient(rcpt)], now=now)
    sender.services.config.relay.static_routes = {"op-a.test": f"127.0.0.1:{receiver_gw.port}"}
    sender.services.config.relay.per_domain_concurrency = DRAIN_CONNECTIONS
    sender.services.config.relay.workers = DRAIN_CONNECTIONS
    worker = RelayWorker(sender.services, timeout=60, batch=400)
    me = psutil.Process()
    cpu0, t0, my0 = receiver_gw.cpu(), time.perf_counter(), sum(me.cpu_times()[:2])
    while await worker.run_once():
        pass
    elapsed = time.perf_counter() - t0
    print(f"  relay (sending) process CPU {(sum(me.cpu_times()[:2]) - my0) * 1000 / n:5.2f} ms/msg")
    async with sender.services.sessions() as s:
        left = await qstore.depth(s)
    if left:
        print(f"  warning: {left} recipients still queued after the drain")
    return n / elapsed, (receiver_gw.cpu() - cpu0) * 1000 / n


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes (default unless --messages is given)")
    ap.add_argument("--messages", type=int, default=0, help="messages per run and scenario (full: 2000)")
    ap.add_argument("--runs", type=int, default=0, help="runs per scenario; the median is reported (full: 5)")
    ap.add_argument("--mailboxes", type=int, default=1000)
    ap.add_argument("--size", type=int, default=10 * 1024)
    ap.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    ap.add_argument("--pg-url", default="", help="an empty PostgreSQL database (asyncpg URL); else one is started")
    ap.add_argument("--idle", type=int, default=200, help="idle connections for the memory measure")
    ap.add_argument("--drain", type=int, default=0, help="messages for the queue drain (full: 2000)")
    ap.add_argument("--key", default="rsa2048", choices=["rsa2048", "ec-p256"])
    ap.add_argument("--scenarios", default="a,b,idle,drain", help="comma-separated subset of a,b,idle,drain")
    args = ap.parse_args()
    wanted = set(args.scenarios.split(","))
    quick = args.quick or not args.messages
    total = args.messages or 300
    runs = args.runs or (2 if quick else 5)
    drain_n = args.drain or (300 if quick else 2000)

    tmp = Path(tempfile.mkdtemp(prefix="bench-smtp-"))
    pg = None
    db_url = None
    if args.db == "postgresql":
        db_url = args.pg_url
        if not db_url:
            from pgserver import PgServer, find_bindir

            bindir = find_bindir()
            if bindir is None:
                sys.exit("PostgreSQL binaries not found")
            pg = PgServer(bindir)
            pg.start()
            db_url = pg.create_database("bench")
    space = Space.create(tmp / "space", key_kind=args.key)
    a = await make_operator(space, tmp / "a", "op-a.test", db_url=db_url, key_kind=args.key,
                            smtp={"max_connections_per_peer": 1000, "max_connections_per_peer_per_minute": 1_000_000})
    b = await make_operator(space, tmp / "b", "op-b.test", key_kind=args.key)
    refresh_trust(space, a, b)
    rcpts = [f"dr.{i:04d}@op-a.test" for i in range(args.mailboxes)]
    async with a.services.sessions() as s, s.begin():
        for r in rcpts:
            await create_mailbox(s, r, "PER")
    await a.services.engine.dispose()
    liste = tmp / "liste.xml"
    liste.write_bytes(space.liste_xml())

    print(f"bench_smtp: db={args.db} key={args.key} size={args.size} mailboxes={args.mailboxes} "
          f"messages/run={total} runs={runs} (machine shared: figures are indicative)")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    gw = Gateway(a, liste)
    await gw.start()
    try:
        for key, name, per_conn, conc in (("a", "(a) 1 msg/conn, 20 concurrent", 1, 20),
                                          ("b", "(b) 50 msg/conn, 10 concurrent", 50, 10)):
            if key not in wanted:
                continue
            rates, cpus, gens = [], [], []
            for _ in range(runs):
                rate, cpu, gen = await scenario(gw, space, b.serv, total=total, per_conn=per_conn, concurrency=conc,
                                                size=args.size, rcpts=rcpts)
                rates.append(rate)
                cpus.append(cpu)
                gens.append(gen)
            print(f"{name}: {statistics.median(rates):7.1f} msg/s, gateway CPU {statistics.median(cpus):5.2f} ms/msg, "
                  f"load generator CPU {statistics.median(gens):5.2f} ms/msg "
                  f"(runs: {', '.join(f'{r:.0f}' for r in rates)} msg/s; load average {os.getloadavg()[0]:.2f})")
        await gw.stop()
        if not wanted & {"idle", "drain"}:
            return  # a fresh process: freed memory of the load runs would hide the per-connection cost
        gw = Gateway(a, liste)
        await gw.start()
        if "idle" in wanted:
            plain, tls = await idle_memory(gw, space, b.serv, args.idle)
            print(f"idle connection memory: {plain:5.1f} KiB after greeting, {tls:5.1f} KiB after STARTTLS+EHLO "
                  f"(fresh gateway process, RSS slope between {args.idle} and {2 * args.idle} connections)")
        if "drain" in wanted:
            b.services.config.relay.static_routes = {}
            rate, cpu = await queue_drain(space, tmp, b, gw, drain_n, args.size, rcpts)
            print(f"queue drain op-b -> op-a ({drain_n} messages): {rate:7.1f} msg/s, receiving gateway CPU "
                  f"{cpu:5.2f} ms/msg (load average {os.getloadavg()[0]:.2f})")
    finally:
        await gw.stop()
        await b.services.engine.dispose()
        if pg is not None:
            pg.stop()


if __name__ == "__main__":
    asyncio.run(main())
