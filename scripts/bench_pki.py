#!/usr/bin/env python3
"""Benchmark the trust-space PKI: client-chain validations per second (with a CRL lookup) on one core,
load time of a large CRL and the cost of a revocation lookup.

    python scripts/bench_pki.py            # 100,000-serial CRL, 5,000 validations
    python scripts/bench_pki.py --quick    # 10,000-serial CRL, 1,000 validations
    python scripts/bench_pki.py --crl-size 200000 --validations 20000 --key-kind rsa2048

Targets (issue): >= 5,000 validations/s; a 100,000-serial CRL loads in < 1 s; O(1) lookups.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402

from pki.ca import RevokedEntry  # noqa: E402
from pki.crl import CrlStore  # noqa: E402
from pki.files import load_certificates  # noqa: E402
from pki.space import TrustSpacePKI  # noqa: E402
from pki.validation import Role, Validator  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes (10,000-serial CRL, 1,000 validations)")
    parser.add_argument("--crl-size", type=int, default=None, help="revoked serials in the big CRL (100000)")
    parser.add_argument("--validations", type=int, default=None, help="validations to time (5000)")
    parser.add_argument("--key-kind", default="ec-p256", choices=("ec-p256", "rsa2048", "rsa3072"),
                        help="key type of the whole space (CAs and leaf)")
    args = parser.parse_args()
    crl_size = args.crl_size or (10_000 if args.quick else 100_000)
    n = args.validations or (1_000 if args.quick else 5_000)
    now = datetime.now(UTC).replace(microsecond=0)

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        t0 = time.perf_counter()
        space = TrustSpacePKI.create(d / "space", b"bench", now=now, key_kind=args.key_kind, label="BENCH")
        print(f"space created ({args.key_kind}) in {time.perf_counter() - t0:.3f} s")
        client = space.issue_org("LIS BENCH", org="Bench", structure_id="1", department="75", out_dir=d / "out",
                                 now=now)
        # The ORGANISATIONS CRL with crl_size revoked serials (the client is not among them).
        ca = space.organisations
        base = 10**30
        for i in range(crl_size):
            ca.revoked[base + i] = RevokedEntry(base + i, x509.ReasonFlags.superseded, now)
        t0 = time.perf_counter()
        crl = ca.build_crl(now, timedelta(days=1))
        big = crl.public_bytes(serialization.Encoding.DER)
        print(f"CRL of {crl_size:,} serials built and signed in {time.perf_counter() - t0:.3f} s "
              f"({len(big) / 1e6:.1f} MB DER)")

        # CRL load: parse + serial set + one signature verification.
        loads: list[float] = []
        cpu_loads: list[float] = []
        for _ in range(3):
            store = CrlStore([space.root.cert, ca.cert])
            t0, c0 = time.perf_counter(), time.process_time()
            entry = store.load(big, source="big.crl")
            loads.append(time.perf_counter() - t0)
            cpu_loads.append(time.process_time() - c0)
        store.load(space.crl_paths[0].read_bytes(), source="root.crl")
        print(f"CRL load ({crl_size:,} serials, verify signature once): best {min(loads):.3f} s, "
              f"median {statistics.median(loads):.3f} s (CPU best {min(cpu_loads):.3f} s)")

        # Lookup cost: set membership, then the store lookup done per validation.
        probes = [base + (i * 7919) % crl_size for i in range(100_000)] + list(range(1, 100_001))
        t0 = time.perf_counter()
        hits = sum(1 for s in probes if entry.is_revoked(s))
        dt = time.perf_counter() - t0
        print(f"serial lookup: {dt / len(probes) * 1e9:.0f} ns each ({hits:,} hits / {len(probes):,} probes)")
        issuer_der = ca.cert.subject.public_bytes()  # the validator caches this per CA
        t0 = time.perf_counter()
        for _ in range(100_000):
            store.lookup(ca.cert, now, issuer_der)
        print(f"CRL store lookup (freshness + cached signature): {(time.perf_counter() - t0) * 10:.2f} µs each")

        # Validations: the client chain as a TLS peer sends it (leaf + intermediate), CRL lookups included.
        anchors = load_certificates(space.anchors_path)
        validator = Validator(anchors, [], store)
        sent = load_certificates(client.chain_path)[1:]
        leaf = client.cert
        assert validator.validate(leaf, Role.TLS_CLIENT, now, sent).ok
        for label, extra, v in (("peer-sent intermediate", sent, validator),
                                ("configured intermediates", (), Validator(anchors, [ca.cert], store))):
            v.validate(leaf, Role.TLS_CLIENT, now, extra)  # warm the CA caches
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(n):
                decision = v.validate(leaf, Role.TLS_CLIENT, now, extra)
            dt, cpu = time.perf_counter() - t0, time.process_time() - c0
            assert decision.ok, decision
            # CPU time is what one core delivers when the machine is shared; wall time is also shown.
            print(f"validations ({label}, {args.key_kind} leaf, CRL of {crl_size:,}): "
                  f"{n / cpu:,.0f}/s per core-second of CPU ({cpu / n * 1e6:.0f} µs each); "
                  f"wall clock {n / dt:,.0f}/s")
        # A revoked leaf is answered as fast (the revoked serial is found in the set).
        ca.revoked[leaf.serial_number] = RevokedEntry(leaf.serial_number, x509.ReasonFlags.key_compromise, now)
        store.load(ca.build_crl(now + timedelta(seconds=1), timedelta(days=1)).public_bytes(serialization.Encoding.DER))
        d2 = validator.validate(leaf, Role.TLS_CLIENT, now + timedelta(seconds=2), sent)
        print(f"revoked leaf -> {d2.reason.value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
