#!/usr/bin/env python3
"""Directory benchmark: import, next-day re-import, lookups, FHIR search latency. Prints figures.

    python scripts/bench_annuaire.py                 # --quick sizes (20k + 60k rows), both backends
    python scripts/bench_annuaire.py --full          # 600k MSSanté rows + 2M Personne_activite rows
    python scripts/bench_annuaire.py --backend sqlite --mss 100000 --pa 300000

Targets (issue 3): import 600k + 2M <= 90 s with peak RSS <= 500 MB; next-day re-import (1 % changes)
<= 30 s; address and IDNPS lookups >= 20,000/s; FHIR search p99 <= 20 ms with 50 concurrent clients.

How it measures (honestly):
- imports run in a child process (``python -m annuaire import``); wall time from the parent; peak RSS
  and CPU time (user + system) are the child's own, from the kernel (``wait4`` rusage; the database
  server is not counted); the load average is printed with each figure (the machine is shared);
- lookups run in this process through ``Directory``: "uncached" = cache TTL 0 (one SQL query per
  call), "cached" = the default 10 s TTL LRU over a realistic hot set (a gateway asks the same few
  thousand addresses again and again), misses included;
- FHIR: the server runs alone in a child process (``python -m annuaire serve``); 50 client tasks in
  this process send a mix of reads and searches over loopback HTTP; latency per request end-to-end.
  Two runs: closed loop (each client sends its next request as soon as it has the answer: measures
  saturation throughput; latency = clients / throughput) and open loop (each client sends at a fixed
  rate, --rate per second, latency counted from the scheduled send time so queueing is included).
The machine is shared: figures vary with the other users' load; timings are never test assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sqlalchemy import text  # noqa: E402

from annuaire.db import create_schema, make_engine  # noqa: E402
from annuaire.models import AnnuaireBase  # noqa: E402
from annuaire.service import Directory  # noqa: E402
from annuaire.synthetic import Spec, generate  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_child(args: list[str]) -> tuple[float, float, str, float]:
    """Run a child process; return (wall seconds, peak RSS MB, stdout, CPU seconds user+system).

    Peak RSS and CPU come from the kernel's rusage of the child (``wait4``): exact, not sampled.
    """
    t0 = time.perf_counter()
    s0 = server_cpu()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, *args], stdout=out, stderr=err, text=True, cwd=REPO)
        _, status, ru = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise SystemExit(f"child failed ({proc.returncode}): {stderr.strip()[-500:]}")
    if PG_PID is not None:
        stdout += f"PostgreSQL server CPU during this run: {server_cpu() - s0:.1f}s\n"
    return wall, ru.ru_maxrss / 1e3, stdout, ru.ru_utime + ru.ru_stime


PG_PID: int | None = None  # postmaster of the throwaway server, to count the server's CPU too


def server_cpu() -> float:
    """CPU seconds used so far by the PostgreSQL server we started (postmaster, its live children and
    the reaped ones, e.g. the import's backend); 0 when the server is not ours (--pg-url) or SQLite."""
    if PG_PID is None:
        return 0.0
    import psutil
    p = psutil.Process(PG_PID)
    t = p.cpu_times()
    total = t.user + t.system + t.children_user + t.children_system
    for c in p.children():
        try:
            ct = c.cpu_times()
            total += ct.user + ct.system
        except psutil.Error:
            pass
    return total


def load() -> str:
    return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def files_for(workdir: Path, mss: int, pa: int) -> tuple[dict[str, Path], dict[str, Path]]:
    marker = workdir / f"generated-{mss}-{pa}.json"
    if marker.exists():
        data = json.loads(marker.read_text())
        return ({k: Path(v) for k, v in data["d0"].items()}, {k: Path(v) for k, v in data["d1"].items()})
    t0 = time.perf_counter()
    d0 = generate(workdir / "d0", Spec(mss_rows=mss, pa_rows=pa))
    d1 = generate(workdir / "d1", Spec(mss_rows=mss, pa_rows=pa, day=1, ts="202611240300"))
    print(f"generated {mss} + {pa} rows (and next day) in {time.perf_counter() - t0:.1f}s", flush=True)
    marker.write_text(json.dumps({"d0": {k: str(v) for k, v in d0.items()}, "d1": {k: str(v) for k, v in d1.items()}}))
    return d0, d1


async def reset(url: str) -> None:
    engine = make_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(AnnuaireBase.metadata.drop_all)
    await create_schema(engine)
    await engine.dispose()


async def lookups(url: str, n: int) -> dict[str, float]:
    engine = make_engine(url)
    out: dict[str, float] = {}
    try:
        async with engine.connect() as conn:
            addrs = list((await conn.execute(text(
                "SELECT address FROM ann_mailbox ORDER BY row_hash LIMIT 20000"))).scalars())
            ids = list((await conn.execute(text(
                "SELECT idnps FROM ann_mailbox WHERE idnps <> '' ORDER BY row_hash LIMIT 20000"))).scalars())
        rnd = random.Random(7)
        for label, keys, meth in (("address", addrs, "by_address"), ("idnps", ids, "mailboxes_for")):
            cold = Directory(engine, cache_ttl=0)
            sample = [rnd.choice(keys) for _ in range(min(n // 10, 5000))]
            t0 = time.perf_counter()
            for k in sample:
                await getattr(cold, meth)(k)
            out[f"{label}_uncached_seq_per_s"] = len(sample) / (time.perf_counter() - t0)

            async def worker(d: Directory, ks: list[str], m: str = meth) -> None:
                for k in ks:
                    await getattr(d, m)(k)
            t0 = time.perf_counter()
            await asyncio.gather(*[worker(cold, sample[i::16]) for i in range(16)])
            out[f"{label}_uncached_16conc_per_s"] = len(sample) / (time.perf_counter() - t0)
            # hot set: 5,000 distinct keys, zipf-like skew, cold cache at start (misses counted)
            hot = keys[:5000]
            weights = [1 / (i + 1) ** 0.8 for i in range(len(hot))]
            draws = rnd.choices(hot, weights=weights, k=n)
            warm = Directory(engine)
            t0 = time.perf_counter()
            for k in draws:
                await getattr(warm, meth)(k)
            out[f"{label}_cached_per_s"] = n / (time.perf_counter() - t0)
            cache = warm._addr if meth == "by_address" else warm._owner
            out[f"{label}_cached_hit_ratio"] = cache.hits / max(1, cache.hits + cache.misses)
    finally:
        await engine.dispose()
    return out


async def fhir_latency(url: str, clients: int, total: int, rate: float) -> dict[str, float]:
    import aiohttp

    engine = make_engine(url)
    async with engine.connect() as conn:
        ids = list((await conn.execute(text("SELECT idnps FROM ann_practitioner ORDER BY row_hash LIMIT 5000"))).scalars())
        addrs = list((await conn.execute(text(
            "SELECT address FROM ann_mailbox WHERE liste_rouge = FALSE ORDER BY row_hash LIMIT 5000"))).scalars())
    await engine.dispose()
    port = free_port()
    env = dict(os.environ, ANNUAIRE_DB_URL=url)
    server = subprocess.Popen([sys.executable, "-m", "annuaire", "serve", "--port", str(port)], cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/fhir"
    try:
        for _ in range(100):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                await asyncio.sleep(0.1)
        rnd = random.Random(3)
        families = ["mar", "lef", "dub", "ber", "gar", "ngu", "hé", "da s"]

        def query() -> tuple[str, dict[str, str]]:
            r = rnd.random()
            if r < 0.25:
                return f"{base}/Practitioner/{rnd.choice(ids)}", {}
            if r < 0.45:
                i = rnd.choice(ids)
                system = "https://rpps.esante.gouv.fr" if i.startswith("8") else "https://adeli.esante.gouv.fr"
                return f"{base}/Practitioner", {"identifier": f"{system}|{i[1:]}"}
            if r < 0.7:
                return f"{base}/Practitioner", {"mailbox-mss:exact": rnd.choice(addrs)}
            if r < 0.9:
                return f"{base}/Practitioner", {"family": rnd.choice(families), "_count": "10"}
            # an address typed up to its '@' (a broad 8-letter prefix such as "secretar" matches ~10 % of
            # the 600k mailboxes and costs ~100 ms on SQLite: see docs/annuaire.md)
            return f"{base}/Organization", {"mailbox-mss": rnd.choice(addrs).split("@")[0] + "@", "_count": "10"}

        out: dict[str, float] = {}
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as s:
            for _ in range(50):  # warm-up
                u, p = query()
                async with s.get(u, params=p) as resp:
                    await resp.read()
            for mode in ("closed", "open"):
                lat: list[float] = []
                errors = 0
                per_client = max(1, total // clients)

                async def client(mode: str = mode, lat: list[float] = lat, per_client: int = per_client) -> None:
                    nonlocal errors
                    start = time.perf_counter() + random.random() / rate
                    for k in range(per_client):
                        u, p = query()
                        if mode == "open":  # fixed schedule; latency counted from the scheduled time
                            due = start + k / rate
                            delay = due - time.perf_counter()
                            if delay > 0:
                                await asyncio.sleep(delay)
                            t0 = due
                        else:  # closed loop: next request as soon as the previous answer arrived
                            t0 = time.perf_counter()
                        async with s.get(u, params=p) as resp:
                            await resp.read()
                            if resp.status != 200:
                                errors += 1
                        lat.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                await asyncio.gather(*[client() for _ in range(clients)])
                wall = time.perf_counter() - t0
                lat.sort()

                def pct(q: float, lat: list[float] = lat) -> float:
                    return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000
                tag = "fhir_closed" if mode == "closed" else f"fhir_open_{clients * rate:.0f}rps"
                out.update({f"{tag}_requests": len(lat), f"{tag}_errors": errors, f"{tag}_rps": len(lat) / wall,
                            f"{tag}_p50_ms": pct(0.50), f"{tag}_p95_ms": pct(0.95), f"{tag}_p99_ms": pct(0.99)})
        return out
    finally:
        server.terminate()
        server.wait(10)


def bench_backend(name: str, url: str, d0: dict[str, Path], d1: dict[str, Path], a: argparse.Namespace) -> dict[str, Any]:
    res: dict[str, Any] = {"backend": name}
    base = ["-m", "annuaire", "--db-url", url, "import", "--no-progress"]
    db = Path(url.split("///", 1)[1]) if name == "sqlite" else None
    saved = Path(f"{db}.day0") if db else None
    if a.reimport_only:  # back to the state right after the initial import (saved by a previous run)
        if db is None or saved is None or not saved.exists():
            raise SystemExit("--reimport-only needs a previous full sqlite run (it saves the day-0 database)")
        for suffix in ("-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        shutil.copyfile(saved, db)
    elif not a.skip_import:
        asyncio.run(reset(url))
        wall, rss, out, cpu = run_child([*base, str(d0["mssante"]), str(d0["activite"])])
        res.update(import_s=wall, import_cpu_s=cpu, import_peak_rss_mb=rss)
        print(f"[{name}] initial import: {wall:.1f}s wall, {cpu:.1f}s CPU, peak RSS {rss:.0f} MB, {load()}\n"
              f"{out.strip()}", flush=True)
        if db is not None and saved is not None:  # checkpointed by the child's close: one file
            shutil.copyfile(db, saved)
    if a.skip_import or a.skip_reimport:
        return _after_import(name, url, res, a)
    wall, rss, out, cpu = run_child([*base, str(d1["mssante"]), str(d1["activite"])])
    res.update(reimport_next_day_s=wall, reimport_next_day_cpu_s=cpu, reimport_peak_rss_mb=rss)
    print(f"[{name}] next-day re-import: {wall:.1f}s wall, {cpu:.1f}s CPU, peak RSS {rss:.0f} MB, {load()}\n"
          f"{out.strip()}", flush=True)
    wall, rss, out, cpu = run_child([*base, str(d1["mssante"]), str(d1["activite"])])
    res.update(reimport_same_s=wall, reimport_same_cpu_s=cpu, reimport_same_peak_rss_mb=rss)
    print(f"[{name}] same-file re-import: {wall:.1f}s wall, {cpu:.1f}s CPU, peak RSS {rss:.0f} MB, {load()}\n"
          f"{out.strip()}", flush=True)
    return _after_import(name, url, res, a)


def _after_import(name: str, url: str, res: dict[str, Any], a: argparse.Namespace) -> dict[str, Any]:
    if not a.imports_only:
        res.update(asyncio.run(lookups(url, a.lookups)))
        res.update(asyncio.run(fhir_latency(url, a.clients, a.requests, a.rate)))
    res["load_average"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    for k, v in res.items():
        print(f"[{name}] {k}: {v:.2f}" if isinstance(v, float) else f"[{name}] {k}: {v}", flush=True)
    return res


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full", action="store_true", help="600k MSSanté rows + 2M Personne_activite rows")
    p.add_argument("--mss", type=int, default=None)
    p.add_argument("--pa", type=int, default=None)
    p.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    p.add_argument("--pg-url", default=None, help="use this PostgreSQL (else start a throwaway one)")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/bench_annuaire"))
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--requests", type=int, default=None)
    p.add_argument("--rate", type=float, default=10.0,
                   help="open-loop requests/s per client (the national API caps an application at 17/s)")
    p.add_argument("--lookups", type=int, default=200_000)
    p.add_argument("--skip-import", action="store_true", help="reuse the database already loaded (sqlite, or --pg-url)")
    p.add_argument("--skip-reimport", action="store_true", help="no next-day / same-file re-import runs")
    p.add_argument("--imports-only", action="store_true", help="measure the imports only (no lookups, no FHIR)")
    p.add_argument("--reimport-only", action="store_true",
                   help="sqlite: restore the day-0 database saved by the last full run, then only re-import")
    a = p.parse_args()
    mss = a.mss or (600_000 if a.full else 20_000)
    pa = a.pa or (2_000_000 if a.full else 60_000)
    a.requests = a.requests or (10_000 if a.full else 3_000)
    a.workdir.mkdir(parents=True, exist_ok=True)
    d0, d1 = files_for(a.workdir, mss, pa)
    results = []
    if a.backend in ("sqlite", "both"):
        db = a.workdir / "bench.db"
        for suffix in ("", "-wal", "-shm") if not (a.skip_import or a.reimport_only) else ():
            Path(str(db) + suffix).unlink(missing_ok=True)
        results.append(bench_backend("sqlite", f"sqlite+aiosqlite:///{db}", d0, d1, a))
    if a.backend in ("postgresql", "both"):
        server = None
        url = a.pg_url
        if url is None:
            sys.path.insert(0, str(REPO / "tests"))
            from pgserver import PgServer, find_bindir
            bindir = find_bindir()
            if bindir is None:
                print("PostgreSQL binaries not found: skipping postgresql", file=sys.stderr)
            else:
                server = PgServer(bindir)
                server.start()
                global PG_PID
                PG_PID = int((server.datadir / "postmaster.pid").read_text().split()[0])
                url = server.create_database("bench_annuaire")
        try:
            if url:
                results.append(bench_backend("postgresql", url, d0, d1, a))
        finally:
            if server is not None:
                server.stop()
    print(json.dumps({"mss_rows": mss, "pa_rows": pa, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
