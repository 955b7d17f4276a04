#!/usr/bin/env python3
"""Trust-space figures: parse+index the liste blanche, inbound decision latency, no-change refresh cost.

    python scripts/bench_trust.py            # quick: fewer repetitions
    python scripts/bench_trust.py --full     # more repetitions (and decisions) for stable figures
    python scripts/bench_trust.py --list FILE

Targets (issue 4): parse+index <= 200 ms for the real list; inbound decision p99 <= 20 µs;
a refresh that finds no change = one conditional request (answered 304).
Uses the real ANS list from ../shared/data/real when present, else a synthetic list of the same size.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mssante.trust.listeblanche import build_liste_blanche_xml, parse_liste_blanche  # noqa: E402
from mssante.trust.policy import TrustPolicy  # noqa: E402
from mssante.trust.refresh import RefreshConfig, Refresher, RefreshOutcome  # noqa: E402
from mssante.trust.routes import add_routes  # noqa: E402
from mssante.trust.state import TrustState  # noqa: E402

REAL = REPO.parent / "shared" / "data" / "real" / "listeblanchemssante-2025-03-13.xml"
NOW = datetime.now(UTC)


def synthetic(n: int = 6554) -> bytes:
    rows = [
        (f"d{i}.mssante.fr", f"CN=mx{i % 392}.op.fr,OU={i % 392},O=OP {i % 392},ST=Paris (75),C=FR", "x")
        for i in range(n)
    ]
    return build_liste_blanche_xml(rows, NOW)


def cert(cn: str, ou: str, o: str, st: str) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, st),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, o),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


def bench_parse(data: bytes, reps: int) -> TrustPolicy:
    wall, cpu = [], []
    policy = None
    for _ in range(reps):
        t, c = time.perf_counter(), time.process_time()
        policy = TrustPolicy(parse_liste_blanche(data))
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    assert policy is not None
    liste = policy.liste
    print(
        f"parse+index: {len(liste.entries)} entries, {len(liste.by_domain)} domains -> "
        f"wall median {1000 * statistics.median(wall):.1f} ms (min {1000 * min(wall):.1f}), "
        f"CPU median {1000 * statistics.median(cpu):.1f} ms ({reps} runs; target <= 200 ms)"
    )
    return policy


def bench_inbound(policy: TrustPolicy, n: int) -> None:
    domain, dns = next(iter(sorted(policy.liste.by_domain.items())))
    dn = next(iter(dns))
    attrs = {oid: v for rdn in dn.rdns for oid, v in rdn}
    peer = cert(
        attrs.get("2.5.4.3", "x"),
        attrs.get("2.5.4.11", "x"),
        attrs.get("2.5.4.10", "x"),
        attrs.get("2.5.4.8", "x"),
    )
    stranger = cert("mx.unknown.fr", "1", "X", "Paris (75)")
    assert policy.inbound(peer, domain, NOW).accept
    for label, c, d in (("accept", peer, domain), ("refuse (DN not listed)", stranger, domain)):
        ns = []
        for _ in range(n):
            t = time.perf_counter_ns()
            policy.inbound(c, d, NOW)
            ns.append(time.perf_counter_ns() - t)
        print(
            f"inbound decision, {label}: p50 {pct(ns, 0.5) / 1000:.1f} µs, p99 {pct(ns, 0.99) / 1000:.1f} µs, "
            f"max {max(ns) / 1000:.1f} µs ({n} decisions; target p99 <= 20 µs)"
        )


async def bench_refresh(data: bytes, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        pub = Path(tmp) / "published"
        pub.mkdir()
        (pub / "liste-blanche.xml").write_bytes(data)
        app = web.Application()
        hits: list[int] = []

        @web.middleware
        async def count(request: web.Request, handler):  # type: ignore[no-untyped-def]
            resp = await handler(request)
            hits.append(resp.status)
            return resp

        app.middlewares.append(count)
        add_routes(app, publish_dir=pub)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/trust/liste-blanche.xml"
        r = Refresher(TrustState(), RefreshConfig(source=url, state_dir=Path(tmp) / "state"))
        try:
            t = time.perf_counter()
            assert await r.refresh_once() is RefreshOutcome.INSTALLED
            first = time.perf_counter() - t
            hits.clear()
            times = []
            for _ in range(rounds):
                t = time.perf_counter()
                assert await r.refresh_once() is RefreshOutcome.NOT_MODIFIED
                times.append(time.perf_counter() - t)
        finally:
            await r.stop()
            await runner.cleanup()
    print(f"first refresh (download + verify + parse + swap): {1000 * first:.1f} ms")
    print(
        f"no-change refresh: {len(hits) / rounds:.0f} request(s) each, statuses {sorted(set(hits))}, "
        f"median {1000 * statistics.median(times):.2f} ms ({rounds} rounds)"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--list", type=Path, help="liste blanche file (default: the real ANS list if present)")
    ap.add_argument("--full", action="store_true", help="more repetitions")
    args = ap.parse_args()
    path = args.list or (REAL if REAL.exists() else None)
    data = path.read_bytes() if path else synthetic()
    print(f"list: {path or 'synthetic (6,554 entries)'} ({len(data) / 1e6:.1f} MB)")
    policy = bench_parse(data, 15 if args.full else 5)
    bench_inbound(policy, 200_000 if args.full else 20_000)
    asyncio.run(bench_refresh(data, 50 if args.full else 10))
    return 0


if __name__ == "__main__":
    sys.exit(main())
