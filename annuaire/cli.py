"""``mssante annuaire ...``: import, search, show, export, stats, serve.

The top-level CLI sets ``args.db_url`` (an SQLAlchemy async URL) before calling a handler
(team CONTRACTS.md). Handlers return an exit code: 0 ok, 1 failure, 2 usage. Errors are one
line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TextIO

from annuaire.db import create_schema, make_engine
from annuaire.export import export_extraction, export_fhir
from annuaire.importer import Importer
from annuaire.reader import Limits
from annuaire.service import Directory

PROGRESS_MIN_BYTES = 8 * 1024 * 1024


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("annuaire", help="the professional directory (Annuaire Santé extractions, FHIR)")
    sub = p.add_subparsers(dest="annuaire_cmd", metavar="COMMAND", required=True)

    imp = sub.add_parser("import", help="import extraction files (.txt or .zip), incrementally")
    imp.add_argument("files", nargs="+", type=Path, metavar="FILE")
    imp.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    imp.add_argument("--max-ratio", type=int, default=Limits.max_ratio, help="zip inflate ratio limit")
    imp.add_argument("--max-bytes", type=int, default=Limits.max_bytes, help="zip inflated size limit")
    imp.add_argument("--show-errors", type=int, default=20, metavar="N", help="bad rows to print per file")
    imp.add_argument("--allow-mass-close", action="store_true",
                     help="accept a file that closes more than 20%% of the live mailboxes/professionals")
    imp.set_defaults(func=cmd_import)

    se = sub.add_parser("search", help="search published mailboxes (accent/case-insensitive prefixes)")
    se.add_argument("text", nargs="?", default="", help="name, organisation or address prefix")
    se.add_argument("--name", default="")
    se.add_argument("--profession", default="")
    se.add_argument("--city", default="")
    se.add_argument("--department", default="")
    se.add_argument("--type", default="", choices=["", "PER", "ORG", "APP", "CAB"])
    se.add_argument("--limit", type=int, default=20)
    se.add_argument("--cursor", default=None, help="next-page cursor printed by a previous search")
    se.add_argument("--json", action="store_true")
    se.set_defaults(func=cmd_search)

    sh = sub.add_parser("show", help="show a mailbox (ADDRESS) or a professional (IDNPS/RPPS/ADELI)")
    sh.add_argument("ident", metavar="ID|ADDRESS")
    sh.set_defaults(func=cmd_show)

    ex = sub.add_parser("export", help="export this operator's own mailboxes")
    ex.add_argument("--format", choices=["extraction", "fhir"], default="extraction")
    ex.add_argument("--domain", action="append", default=[], help="only addresses in this domain (repeatable)")
    ex.add_argument("--with-liste-rouge", action="store_true",
                    help="include liste-rouge mailboxes (adds the 'Liste rouge' column)")
    ex.add_argument("-o", "--output", type=Path, default=None, help="file (default stdout)")
    ex.set_defaults(func=cmd_export)

    st = sub.add_parser("stats", help="counts of practitioners, structures, mailboxes")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_stats)

    sv = sub.add_parser("serve", help="serve the FHIR API alone (aiohttp)")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8080)
    sv.add_argument("--prefix", default="/fhir")
    sv.add_argument("--base-url", default=None, help="public base URL used in links")
    sv.set_defaults(func=cmd_serve)


def _run(coro: Coroutine[Any, Any, int]) -> int:
    try:
        return asyncio.run(coro)
    except KeyboardInterrupt:
        return 1
    except Exception as exc:  # one clear line, no traceback
        print(f"mssante annuaire: error: {type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}",
              file=sys.stderr)
        return 1


class _Bar:
    def __init__(self, out: TextIO) -> None:
        self.out, self.last = out, 0.0

    def __call__(self, name: str, done: int, total: int) -> None:
        if total < PROGRESS_MIN_BYTES:
            return
        now = time.monotonic()
        if done < total and now - self.last < 0.5:
            return
        self.last = now
        frac = min(1.0, done / total) if total else 1.0
        bar = "#" * int(frac * 30)
        self.out.write(f"\r{name[-40:]:40} [{bar:30}] {frac * 100:5.1f}%")
        if done >= total:
            self.out.write("\n")
        self.out.flush()


def cmd_import(args: argparse.Namespace) -> int:
    for f in args.files:
        if not f.is_file():
            print(f"mssante annuaire: error: {f}: no such file", file=sys.stderr)
            return 2

    async def go() -> int:
        engine = make_engine(args.db_url)
        try:
            await create_schema(engine)
            importer = Importer(engine, limits=Limits(max_ratio=args.max_ratio, max_bytes=args.max_bytes),
                                progress=None if args.no_progress else _Bar(sys.stderr),
                                max_vanished=1.0 if args.allow_mass_close else 0.2)
            failed = False
            for f in args.files:
                t0 = time.perf_counter()
                for r in await importer.import_path(f):
                    phases = ", ".join(f"{k} {v:.1f}s/{r.cpu_seconds.get(k, 0):.1f}s CPU"
                                       for k, v in r.seconds.items())
                    print(r.summary() + f" in {time.perf_counter() - t0:.1f}s"
                          + (f" ({r.staged} rows staged; {phases})" if r.ok else ""))
                    for e in r.bad[:args.show_errors]:
                        print(f"  line {e.line}: {e.reason}")
                    if r.bad_count > args.show_errors:
                        print(f"  ... {r.bad_count - args.show_errors} more bad rows")
                    if r.error:
                        print(f"mssante annuaire: error: {r.error}", file=sys.stderr)
                        failed = True
            return 1 if failed else 0
        finally:
            await engine.dispose()
    return _run(go())


def cmd_search(args: argparse.Namespace) -> int:
    async def go() -> int:
        engine = make_engine(args.db_url)
        try:
            await create_schema(engine)
            d = Directory(engine)
            page = await d.search(args.text, name=args.name, profession=args.profession, city=args.city,
                                  department=args.department, type=args.type, limit=args.limit,
                                  cursor=args.cursor)
            await d.close()
        finally:
            await engine.dispose()
        if args.json:
            print(json.dumps({"hits": [h.__dict__ if hasattr(h, "__dict__") else _slots(h) for h in page.hits],
                              "next": page.next_cursor}, ensure_ascii=False))
        else:
            for h in page.hits:
                print(f"{h.address}\t{h.type}\t{h.display_name}\t{h.profession}\t{h.city}")
            if page.next_cursor:
                print(f"(more: --cursor {page.next_cursor})", file=sys.stderr)
        return 0
    return _run(go())


def _slots(obj: Any) -> dict[str, Any]:
    return {k: getattr(obj, k) for k in obj.__slots__}


def cmd_show(args: argparse.Namespace) -> int:
    async def go() -> int:
        engine = make_engine(args.db_url)
        try:
            await create_schema(engine)
            d = Directory(engine)
            if "@" in args.ident:
                info = await d.by_address(args.ident)
                await d.close()
                if info is None:
                    print(f"mssante annuaire: error: {args.ident}: unknown address", file=sys.stderr)
                    return 1
                data = _slots(info)
                data["closed_at"] = info.closed_at.isoformat() if info.closed_at else None
                print(json.dumps(data, ensure_ascii=False, indent=2))
                return 0
            rec = await d.practitioner(args.ident)
            await d.close()
            if rec is None:
                print(f"mssante annuaire: error: {args.ident}: unknown professional", file=sys.stderr)
                return 1
            from annuaire import fhir_resources as fr
            p = rec["practitioner"]
            res = fr.practitioner(p.idnps if p else rec["mailboxes"][0].idnps, p,
                                 [m for m in rec["mailboxes"]], rec["savoir_faire"])
            res["_activities"] = [{"structure": a.structure_id, "mode": a.mode_label, "function": a.function_label}
                                  for a in rec["activities"]]
            res["_mailboxes"] = [{"address": m.address, "type": m.type, "open": m.closed_at is None,
                                  "liste_rouge": m.liste_rouge} for m in rec["mailboxes"]]
            print(json.dumps(res, ensure_ascii=False, indent=2))
            return 0
        finally:
            await engine.dispose()
    return _run(go())


def cmd_export(args: argparse.Namespace) -> int:
    async def go() -> int:
        engine = make_engine(args.db_url)
        try:
            await create_schema(engine)
            boxes = await Directory(engine).own_mailboxes(args.domain)
        finally:
            await engine.dispose()
        out: TextIO = open(args.output, "w", encoding="utf-8", newline="") if args.output else sys.stdout
        try:
            if args.format == "fhir":
                json.dump(export_fhir(boxes), out, ensure_ascii=False, indent=1)
                out.write("\n")
                print(f"exported {len(boxes)} mailboxes (FHIR)", file=sys.stderr)
            else:
                rep = export_extraction(boxes, out, with_liste_rouge=args.with_liste_rouge)
                print(f"exported {rep.rows} mailboxes, {rep.skipped_liste_rouge} liste-rouge left out, "
                      f"{rep.sanitized_values} values sanitized", file=sys.stderr)
        finally:
            if args.output:
                out.close()
        return 0
    return _run(go())


def cmd_stats(args: argparse.Namespace) -> int:
    async def go() -> int:
        engine = make_engine(args.db_url)
        try:
            await create_schema(engine)
            stats = await Directory(engine).stats()
        finally:
            await engine.dispose()
        if args.json:
            print(json.dumps(stats))
        else:
            for k, v in stats.items():
                print(f"{k}: {v}")
        return 0
    return _run(go())


def cmd_serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from annuaire.fhir import make_app

    async def go() -> int:
        engine = make_engine(args.db_url)
        await create_schema(engine)
        directory = Directory(engine)
        app = make_app(directory, prefix=args.prefix, base_url=args.base_url)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, args.host, args.port)
        await site.start()
        print(f"FHIR directory on http://{args.host}:{args.port}{args.prefix}", file=sys.stderr, flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        import signal
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()
            await directory.close()
            await engine.dispose()
        return 0
    return _run(go())
