#!/usr/bin/env python3
"""Benchmark of the Y intake over MLLP on loopback (issue 7 targets):

- >= 200 ORU/s accepted (ACK AA) sustained with a 30 KB CDA, and the rate for the 290 KB ANS SEGUR example;
- ACK p99 <= 50 ms;
- end to end (ACK received -> the message stored in the prescriber's mailbox) p50 <= 300 ms.

One gateway fragment in this process, as `serve` runs it: the MLLP listener, the group-committed
intake and the Y worker (submission as the lab's APP mailbox into the prescriber's local mailbox;
the patient leg goes to the relay queue; no DMP connector, so DMP legs wait). Each message is the ANS
example with its own MSH-10 (and, for the 30 KB case, a generated 30 KB CDA with the example's header).

Two phases per payload:
  throughput: `--connections` LIS connections send back to back; accepted/s and ACK latency;
  latency:    one message every 1/`--paced-rate` s; ACK latency and end-to-end latency (the
              prescriber's INBOX is polled every 10 ms, so add up to 10 ms of resolution).

    python scripts/bench_y.py                      # quick: small counts
    python scripts/bench_y.py --messages 3000 --segur-messages 300 --paced 200
    python scripts/bench_y.py --db-url postgresql+asyncpg://...   # an empty database

The machine is shared: figures vary from run to run; report them with that caveat.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import concurrent.futures
import cProfile
import multiprocessing
import os
import re
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "y_runtime"))

from sqlalchemy import func, select  # noqa: E402

from mssante.store.mail import mailbox_by_address  # noqa: E402
from mssante.store.models import Folder, Message  # noqa: E402
from mssante.y.mllp import MllpClient, start_mllp  # noqa: E402
from mssante.y.worker import YWorker  # noqa: E402
from support import (  # noqa: E402
    PRESCRIBER,
    REAL,
    SEGUR,
    close_services,
    make_services,
    replace_line,
    sender_entry,
    with_control_id,
)


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(p / 100 * len(s))) - 1))]


def segur() -> bytes:
    path = REAL / SEGUR
    if not path.is_file():
        sys.exit(f"bench_y: the ANS example is missing: {path} (../shared/data/real)")
    return path.read_bytes()


def with_cda_of_size(data: bytes, size: int) -> bytes:
    """The example with a CDA of about `size` bytes: the example's header, a generated text body."""
    line = [ln for ln in re.split(rb"\r\n|\r|\n", data) if ln.startswith(b"OBX|1|ED")][0]
    head, rest = line.split(b"^Base64^", 1)
    cda = base64.b64decode(rest.split(b"|", 1)[0])
    cut = cda.index(b"<component>")
    body_open = b"<component><structuredBody><component><section><title>Resultats</title><text>"
    body_close = b"</text></section></component></structuredBody></component></ClinicalDocument>"
    para = b"<paragraph>Hemoglobine 13.5 g/dL (12.0-16.0) ; Leucocytes 6.2 G/L (4.0-10.0).</paragraph>"
    room = max(0, size - cut - len(body_open) - len(body_close))
    new = cda[:cut] + body_open + para * (room // len(para)) + body_close
    new_line = head + b"^Base64^" + base64.b64encode(new) + b"|" + rest.split(b"|", 1)[1]
    return replace_line(data, b"OBX|1|ED", new_line)


class Watcher:
    """Polls the prescriber's INBOX; records when each Message-ID first appears."""

    def __init__(self, services, folder_id: int) -> None:
        self.services, self.folder_id = services, folder_id
        self.seen: dict[str, float] = {}
        self._last = 0
        self._task: asyncio.Task | None = None

    async def _run(self) -> None:
        while True:
            async with self.services.sessions() as s:
                rows = (await s.execute(select(Message.id, Message.message_id).where(
                    Message.folder_id == self.folder_id, Message.id > self._last).order_by(Message.id))).all()
            t = time.perf_counter()
            for mid_row, mid in rows:
                self._last = max(self._last, int(mid_row))
                if mid and mid not in self.seen:
                    self.seen[mid] = t
            await asyncio.sleep(0.01)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def catch_up(self) -> None:
        """Skip the rows already there (earlier phases) so that the first poll of a phase is cheap."""
        async with self.services.sessions() as s:
            last = await s.scalar(select(func.max(Message.id)).where(Message.folder_id == self.folder_id))
        self._last = max(self._last, int(last or 0))

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass


async def leg_message_ids(services, prefix: str) -> dict[str, str]:
    from mssante.y.models import YDelivery, YLeg

    async with services.sessions() as s:
        rows = (await s.execute(select(YDelivery.control_id, YLeg.message_id).join(YLeg, YLeg.delivery_id == YDelivery.id)
                                .where(YLeg.group == "ps", YDelivery.control_id.like(prefix + "%")))).all()
    return {cid: mid for cid, mid in rows}


async def _lis_send(port: int, payload: bytes, ids: list[str], connections: int) -> tuple[float, list[float], int]:
    """The simulated LIS: `connections` MLLP connections, each sending its share back to back."""
    latencies: list[float] = []
    refused = 0

    async def lis(ids: list[str]) -> None:
        nonlocal refused
        c = await MllpClient.connect("127.0.0.1", port)
        try:
            for cid in ids:
                msg = with_control_id(payload, cid)
                t0 = time.perf_counter()
                ack = await c.send(msg)
                latencies.append(time.perf_counter() - t0)
                if b"MSA|AA|" not in ack:
                    refused += 1
        finally:
            await c.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(lis(ids[i::connections]) for i in range(connections)))
    return time.perf_counter() - t0, latencies, refused


def lis_process(port: int, payload: bytes, ids: list[str], connections: int) -> tuple[float, list[float], int, float]:
    """Runs in a separate process, so that the load generator neither competes with the gateway's event
    loop nor counts in its CPU time. Returns (seconds, ACK latencies, refused, the LIS's own CPU seconds)."""
    cpu0 = time.process_time()
    elapsed, latencies, refused = asyncio.run(_lis_send(port, payload, ids, connections))
    return elapsed, latencies, refused, time.process_time() - cpu0


LIS_POOL: concurrent.futures.ProcessPoolExecutor | None = None
LIS_CPU: list[float] = []


async def throughput(port: int, payload: bytes, n: int, connections: int, prefix: str) -> tuple[float, list[float], int]:
    ids = [f"{prefix}{i:06d}" for i in range(n)]
    assert LIS_POOL is not None
    elapsed, latencies, refused, lis_cpu = await asyncio.get_running_loop().run_in_executor(
        LIS_POOL, lis_process, port, payload, ids, connections)
    LIS_CPU.append(lis_cpu / max(1, n))
    return n / elapsed, latencies, refused


async def paced(port: int, payload: bytes, n: int, rate: float, prefix: str, services, watcher: Watcher,
                timeout: float = 60.0) -> tuple[list[float], list[float]]:
    acks: dict[str, float] = {}
    latencies: list[float] = []
    c = await MllpClient.connect("127.0.0.1", port)
    try:
        start = time.perf_counter()
        for i in range(n):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            cid = f"{prefix}{i:06d}"
            t0 = time.perf_counter()
            ack = await c.send(with_control_id(payload, cid))
            t1 = time.perf_counter()
            if b"MSA|AA|" in ack:
                acks[cid] = t1
                latencies.append(t1 - t0)
    finally:
        await c.close()
    mids = await leg_message_ids(services, prefix)
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline and not all(mids.get(c) in watcher.seen for c in acks):
        await asyncio.sleep(0.05)
        mids = await leg_message_ids(services, prefix)
    e2e = [watcher.seen[mids[c]] - t for c, t in acks.items() if mids.get(c) in watcher.seen]
    return latencies, e2e


async def drain(services, timeout: float = 300.0) -> None:
    from mssante.y.models import YLeg

    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        async with services.sessions() as s:
            n = await s.scalar(select(func.count()).select_from(YLeg).where(YLeg.kind == "mss", YLeg.state == "accepted"))
        if not n:
            return
        await asyncio.sleep(0.2)


def _proc_cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def helper_cpu(intake) -> float:
    """CPU seconds of the gateway's decide worker processes."""
    pool = getattr(intake, "_pool", None)
    pids = list(getattr(pool, "_processes", None) or {}) if pool is not None else []
    return sum(_proc_cpu(p) for p in pids)


def gateway_cpu(intake) -> float:
    """CPU seconds of the gateway: this process plus its decide worker processes (not the LIS)."""
    return time.process_time() + helper_cpu(intake)


def ms(v: float) -> str:
    return f"{v * 1000:.1f} ms"


async def main(args: argparse.Namespace) -> None:
    global LIS_POOL
    LIS_POOL = concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    tmp = Path(tempfile.mkdtemp(prefix="bench-y-"))
    db_url = args.db_url or f"sqlite+aiosqlite:///{tmp / 'bench.db'}"
    services = await make_services(db_url, tmp, senders=[sender_entry()])
    from mssante.y.service import YIntake

    intake = YIntake(services, decide_processes=args.processes)
    services.extras["y_intake"] = intake
    server = await start_mllp(services, host="127.0.0.1", port=0, handler=intake.handle_frame)
    worker = YWorker(services, dmp=None, poll_interval=1.0)  # as start_y (serve): woken by each intake commit
    worker.start()
    async with services.sessions() as s:
        box = await mailbox_by_address(s, PRESCRIBER)
        folder_id = await s.scalar(select(Folder.id).where(Folder.mailbox_id == box.id, Folder.name == "INBOX"))
    watcher = Watcher(services, int(folder_id))  # polls only during the paced phases (its CPU is not the gateway's)
    base = segur()
    cases = [("30 KB CDA", with_cda_of_size(base, 30 * 1024), args.messages, "T"),
             ("ANS SEGUR example (290 KB message, 218 KB CDA)", base, args.segur_messages, "S")]
    backend = "PostgreSQL" if db_url.startswith("postgresql") else "SQLite (WAL, synchronous=FULL)"
    print(f"bench_y: {backend}; {args.connections} LIS connections; decide in "
          f"{f'{args.processes} processes' if args.processes else 'a thread'}; the LIS runs in its own process; "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs (shared machine)")
    try:
        for label, payload, n, tag in cases:
            if n <= 0:
                continue
            await throughput(server.port, payload, min(20, n), args.connections, f"W{tag}")  # warm-up
            # Intake alone (worker paused): the CPU cost of accepting one message, machine-load independent.
            await worker.stop()
            cpu0, main0 = gateway_cpu(intake), time.process_time()
            irate, ilat, _ = await throughput(server.port, payload, n, args.connections, f"I{tag}")
            icpu = (gateway_cpu(intake) - cpu0) / n
            imain = (time.process_time() - main0) / n
            worker.start()
            await drain(services)
            cpu0, main0 = gateway_cpu(intake), time.process_time()
            profiler = cProfile.Profile() if args.profile else None
            if profiler is not None:
                profiler.enable()
            t0 = time.perf_counter()
            rate, lat, refused = await throughput(server.port, payload, n, args.connections, f"{tag}")
            if profiler is not None:
                profiler.disable()
                profiler.dump_stats(f"{args.profile}.{tag}")
            cpu = (gateway_cpu(intake) - cpu0) / n
            main_cpu = (time.process_time() - main0) / n
            await drain(services)  # sustained = until the worker has also submitted every leg message
            srate = n / (time.perf_counter() - t0)
            scpu = (gateway_cpu(intake) - cpu0) / n
            print(f"\n[{label}] {len(payload)} bytes per message; load average {os.getloadavg()[0]:.1f}")
            print(f"  throughput: {n} messages, {rate:.0f} accepted/s (AA), refused {refused}; "
                  f"ACK p50 {ms(pct(lat, 50))} p99 {ms(pct(lat, 99))}; "
                  f"gateway CPU {ms(cpu)} per message (intake + worker running alongside; {ms(main_cpu)} of it "
                  f"in the main process); "
                  f"LIS CPU {ms(LIS_CPU[-1])} per message")
            print(f"  sustained (until the worker has submitted every leg message too): {srate:.0f}/s; "
                  f"gateway CPU {ms(scpu)} per message, i.e. about {1 / scpu:.0f}/s per free core")
            print(f"  intake alone (worker paused): {irate:.0f} accepted/s; ACK p50 {ms(pct(ilat, 50))} "
                  f"p99 {ms(pct(ilat, 99))}; CPU {ms(icpu)} per message ({ms(imain)} in the main process), "
                  f"i.e. about {1 / icpu:.0f}/s per free core")
            # Let the worker catch up with the backlog before measuring end-to-end latency.
            await drain(services)
            pn = max(10, int(args.paced_seconds * args.paced))
            await watcher.catch_up()
            watcher.start()
            try:
                plat, e2e = await paced(server.port, payload, pn, args.paced, f"P{tag}", services, watcher)
            finally:
                await watcher.stop()
            print(f"  paced at {args.paced:.0f}/s: {pn} messages, ACK p50 {ms(pct(plat, 50))} p99 {ms(pct(plat, 99))}; "
                  f"end to end (ACK -> prescriber's INBOX) p50 {ms(pct(e2e, 50))} p99 {ms(pct(e2e, 99))} "
                  f"({len(e2e)} measured)")
        print(f"\ngroup commit (the intake's plans and the worker's submission batches share it): "
              f"{intake.stored_plans} jobs in {intake.store_batches} transactions")
    finally:
        LIS_POOL.shutdown()
        await watcher.stop()
        await worker.stop()
        await server.stop()
        await close_services(services)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=400, help="30 KB CDA messages in the throughput phase")
    ap.add_argument("--segur-messages", type=int, default=60, help="SEGUR example messages in the throughput phase")
    ap.add_argument("--connections", type=int, default=8, help="concurrent LIS connections (one process)")
    ap.add_argument("--paced", type=float, default=20.0, help="rate of the latency phase (messages/s)")
    ap.add_argument("--paced-seconds", type=float, default=3.0, help="duration of the latency phase")
    ap.add_argument("--processes", type=int, default=0,
                    help="run the pure decide step in N worker processes (0: a thread of this process)")
    ap.add_argument("--profile", default="",
                    help="cProfile the main thread (event loop) during each throughput phase with the worker "
                         "running; stats written to PROFILE.T (30 KB) and PROFILE.S (SEGUR)")
    ap.add_argument("--db-url", default="", help="an empty database URL (default: SQLite in a temp dir)")
    asyncio.run(main(ap.parse_args()))
