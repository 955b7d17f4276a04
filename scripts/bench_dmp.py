#!/usr/bin/env python3
"""Benchmark the DMP leg: connector -> reference DMP on loopback, mutual TLS, signed VIHF per request.

    python scripts/bench_dmp.py --quick            # 300 submissions (default)
    python scripts/bench_dmp.py --count 3000 --concurrency 16
    python scripts/bench_dmp.py --inprocess         # server in the same event loop (one core)

The reference DMP runs in a child process (`mssante dmp serve`) so client and server each get a core.
Reports submissions/s, latency percentiles, where the client's time goes (CDA parsing, metadata,
VIHF signing, SOAP/MTOM, HTTP incl. server, response parsing), the server-side cost per request
(VIHF verification, SOAP+ebRIM parsing) measured in isolation, and the TLS handshake cost
(pooled keep-alive connections vs. a new connection per request).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "dmp"))

from dmp_support import DMP_HOST, build_pki, connector_config, ins_for, make_cda, make_request  # noqa: E402
from lxml import etree  # noqa: E402

from mssante.dmp import ebrim, soap  # noqa: E402
from mssante.dmp.api import DmpAccepted  # noqa: E402
from mssante.dmp.connector import Iti41Connector  # noqa: E402
from mssante.dmp.reference import ReferenceDmp, start_reference_dmp  # noqa: E402
from mssante.dmp.tlsconf import server_context  # noqa: E402
from mssante.dmp.vihf import verify_vihf  # noqa: E402
from mssante.dmp.xmlsafe import parse_xml  # noqa: E402


async def start_server_process(pki: object, store: Path) -> tuple[asyncio.subprocess.Process, int]:
    p = pki  # type: ignore[assignment]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mssante.cli", "--data-dir", str(store / "var"), "dmp", "serve", "--listen", "127.0.0.1:0",
        "--cert", str(p.server.chain_path), "--key", str(p.server.key_path), "--anchors", str(p.space.anchors_path),  # type: ignore[attr-defined]
        stdout=asyncio.subprocess.PIPE, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout is not None
    line = (await proc.stdout.readline()).decode()
    if "listening" not in line:
        raise SystemExit(f"reference DMP did not start: {line!r}")
    return proc, int(line.split(":")[2].split(" ")[0])


def _cpu_of(proc: asyncio.subprocess.Process | None) -> float:
    """User + system CPU seconds of the reference DMP child process (psutil), 0 when in-process."""
    if proc is None:
        return 0.0
    import psutil

    t = psutil.Process(proc.pid).cpu_times()
    return float(t.user + t.system)


async def run_load(connector: Iti41Connector, count: int, concurrency: int, prefix: str) -> tuple[float, list[float]]:
    latencies: list[float] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)

    async def worker() -> None:
        while True:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            t = time.perf_counter()
            ins = ins_for(i)  # one patient per submission: a VIHF per patient, as in real traffic
            out = await connector.send(make_request(make_cda(f"{prefix}{i}", ins=ins), ins=ins))
            latencies.append(time.perf_counter() - t)
            if not isinstance(out, DmpAccepted):
                raise SystemExit(f"submission {i} failed: {out}")

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - t0, latencies


def server_side_cost(pki: object, connector: Iti41Connector, n: int) -> dict[str, float]:
    """Per-request server work measured in isolation: SOAP/MTOM + ebRIM parsing, VIHF verification."""
    p = pki  # type: ignore[assignment]
    now = datetime.now(UTC)
    req = make_request(make_cda("srv"))
    vihf = connector.vihf_for(req, now)  # the same signing path as a real request
    from mssante.dmp.metadata import XdsSettings, build_submission, parse_cda_header

    sub = build_submission(req, parse_cda_header(req.cda), XdsSettings("1.2.3"), now=now)
    env = soap.build_envelope(action=soap.ACTION_ITI41, message_id="m", body=ebrim.provide_and_register(sub), security=vihf)
    ctype, payload = soap.mtom_package(env, [soap.Attachment(sub.content_id, "text/xml", req.cda)], action=soap.ACTION_ITI41)
    t = time.perf_counter()
    for _ in range(n):
        msg = soap.parse_soap(ctype, payload)
        ebrim.read_submission(msg.body)  # type: ignore[arg-type]
    parse = (time.perf_counter() - t) / n
    assertion = parse_xml(etree.tostring(msg.security))  # type: ignore[arg-type]
    t = time.perf_counter()
    for _ in range(n):
        verify_vihf(assertion, tls_client_cert=p.lab.cert, now=now)  # type: ignore[attr-defined]
    verify = (time.perf_counter() - t) / n
    return {"soap+ebRIM parse": parse, "VIHF verify": verify}


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small run (the default sizes)")
    ap.add_argument("--count", type=int, default=300)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--handshake-count", type=int, default=30, help="requests for the new-connection-per-request run")
    ap.add_argument("--inprocess", action="store_true", help="run the reference DMP in this process")
    ap.add_argument("--profile", action="store_true", help="cProfile the measured run (use with --inprocess to see both sides)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-dmp-") as tmp:
        d = Path(tmp)
        pki = build_pki(d / "pki")
        proc = running = None
        if args.inprocess:
            ctx = server_context(pki.server.chain_path, pki.server.key_path, pki.space.anchors_path)  # type: ignore[arg-type]
            running = await start_reference_dmp(ReferenceDmp(), host="127.0.0.1", port=0, ssl_context=ctx)
            port = running.port
        else:
            proc, port = await start_server_process(pki, d)
        base = f"https://127.0.0.1:{port}"
        try:
            cfg = connector_config(pki, base, max_concurrency=args.concurrency)
            async with Iti41Connector(cfg) as warm:
                await run_load(warm, 20, 4, "warm")
            async with Iti41Connector(cfg) as connector:
                profiler = cProfile.Profile() if args.profile else None
                if profiler is not None:
                    profiler.enable()
                server_cpu0 = _cpu_of(proc)
                client_cpu0 = time.process_time()
                elapsed, lat = await run_load(connector, args.count, args.concurrency, "run")
                client_cpu = time.process_time() - client_cpu0
                server_cpu = _cpu_of(proc) - server_cpu0
                if profiler is not None:
                    profiler.disable()
                timings = dict(connector.timings)
                server = server_side_cost(pki, connector, 200)
            # TLS: one new connection (full handshake, both certificates) per request.
            async with Iti41Connector(replace(cfg, max_concurrency=1, keep_alive=False)) as fresh:
                h_elapsed, _ = await run_load(fresh, args.handshake_count, 1, "hs")
            async with Iti41Connector(replace(cfg, max_concurrency=1)) as pooled:
                p_elapsed, _ = await run_load(pooled, args.handshake_count, 1, "pool")
        finally:
            if running is not None:
                await running.stop()
            if proc is not None:
                proc.terminate()
                await proc.wait()

    lat.sort()
    print(f"DMP leg benchmark: {args.count} ITI-41 submissions, concurrency {args.concurrency}, "
          f"mutual TLS + ECDSA-signed VIHF each, server {'in-process' if args.inprocess else 'in a child process'} (host {DMP_HOST})")
    print(f"  throughput: {args.count / elapsed:8.1f} submissions/s  ({elapsed:.2f} s)")
    print(f"  latency   : p50 {1000 * statistics.median(lat):.1f} ms  p95 {1000 * lat[int(0.95 * (len(lat) - 1))]:.1f} ms  "
          f"max {1000 * lat[-1]:.1f} ms")
    if args.inprocess:
        print(f"  CPU time per submission (client + server, one process): {1000 * client_cpu / args.count:.2f} ms "
              f"-> {args.count / client_cpu:.0f} submissions per CPU-second")
    else:
        per_client, per_server = client_cpu / args.count, server_cpu / args.count
        print(f"  CPU time per submission: client {1000 * per_client:.2f} ms, reference DMP {1000 * per_server:.2f} ms "
              f"-> capacity with one core each ≈ {1 / max(per_client, per_server):.0f} submissions/s "
              "(independent of other load on the machine)")
    total = sum(timings.values())
    print("  client time per submission (summed over concurrent tasks):")
    for phase, secs in sorted(timings.items(), key=lambda kv: -kv[1]):
        print(f"    {phase:<10} {1000 * secs / args.count:7.2f} ms  {100 * secs / total:5.1f} %")
    print("  server work per request, measured alone:")
    for phase, secs in server.items():
        print(f"    {phase:<17} {1000 * secs:7.2f} ms")
    per_new = h_elapsed / args.handshake_count
    per_pooled = p_elapsed / args.handshake_count
    print(f"  TLS: sequential request with a new connection {1000 * per_new:.1f} ms vs pooled keep-alive "
          f"{1000 * per_pooled:.1f} ms -> handshake about {1000 * (per_new - per_pooled):.1f} ms")
    if profiler is not None:
        print("  cProfile, top functions by own time:")
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(18)
        print("\n".join("    " + line for line in out.getvalue().splitlines()[6:] if line.strip()))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
