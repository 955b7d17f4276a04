"""`mssante dmp ...`: run the reference DMP, or send one CDA document to a DMP by hand.

    mssante dmp serve --listen 127.0.0.1:8443 --cert CHAIN.pem --key KEY.pem --anchors ANCHORS.pem [--store DIR]
    mssante dmp send DOC.xml --url https://dmp.test:8443/repository --cert ... --key ... --anchors ... \\
        --ins 279035121518989 --author-idnps 801234534765 --author-family CAMPARINI --author-given Marcel \\
        --structure-id 11204598 --structure-name "Laboratoire des charmes" [--action replace --replaces UID]
    mssante dmp list --url https://dmp.test:8443 --cert ... --key ... --anchors ... --ins 279035121518989
Exit status: 0 success (accepted), 1 failure (rejected, temporary failure, unreadable file), 2 usage.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path
from typing import Any

from pki.errors import PkiError
from pki.validation import Validator

from .api import DmpAccepted, DmpAction, DmpRejected, DmpRequest
from .connector import Iti41Connector, config_from_settings
from .ins import INS_OID_TEST
from .metadata import KNOWN_RESTRICTIONS
from .reference import ReferenceDmp, start_reference_dmp
from .registry import ReferenceRegistry, StoreError
from .tlsconf import client_context, server_context


def _host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise argparse.ArgumentTypeError("expected HOST:PORT")
    return host.strip("[]"), int(port)


def register(subparsers: Any) -> None:
    group = subparsers.add_parser("dmp", help="the DMP leg: reference DMP server, manual submissions")
    sub = group.add_subparsers(dest="dmp_command", metavar="SUBCOMMAND", required=True)

    serve = sub.add_parser("serve", help="run the reference DMP (ITI-41/ITI-57/ITI-18 over mutual TLS)")
    serve.add_argument("--listen", type=_host_port, default=("127.0.0.1", 8443), help="HOST:PORT (default 127.0.0.1:8443)")
    serve.add_argument("--cert", type=Path, required=True, help="server certificate chain (PEM, leaf first)")
    serve.add_argument("--key", type=Path, required=True, help="server private key (PEM)")
    serve.add_argument("--anchors", type=Path, required=True, help="trust anchors for client certificates (PEM)")
    serve.add_argument("--intermediates", type=Path, default=None, help="intermediate CA certificates (PEM), for revocation checks")
    serve.add_argument("--crl", type=Path, action="append", default=[], help="CRL file (repeatable): client certificates are checked")
    serve.add_argument("--store", type=Path, default=None, help="directory to keep documents in (default: memory only)")
    serve.set_defaults(func=serve_command)

    send = sub.add_parser("send", help="submit, replace or delete one CDA document in a DMP (manual testing)")
    send.add_argument("document", type=Path, nargs="?", help="the CDA R2 file (not needed for --action delete)")
    send.add_argument("--url", required=True, help="ITI-41 endpoint, e.g. https://dmp.test:8443/repository")
    send.add_argument("--registry-url", default=None, help="ITI-57/ITI-18 endpoint (default: next to --url)")
    send.add_argument("--server-hostname", default=None, help="TLS name to verify when it differs from the URL host")
    send.add_argument("--cert", type=Path, required=True, help="the structure's ORG certificate chain (PEM)")
    send.add_argument("--key", type=Path, required=True, help="its private key (PEM); also signs the VIHF")
    send.add_argument("--anchors", type=Path, required=True, help="trust anchors for the DMP's certificate")
    send.add_argument("--action", choices=[a.value for a in DmpAction], default="submit")
    send.add_argument("--replaces", default=None, help="uniqueId of the document to replace or delete")
    send.add_argument("--ins", required=True, help="the patient's INS-NIR (15 digits)")
    send.add_argument("--ins-oid", default=INS_OID_TEST, help=f"INS OID (default {INS_OID_TEST}, the test OID)")
    send.add_argument("--author-idnps", required=True)
    send.add_argument("--author-family", required=True)
    send.add_argument("--author-given", required=True)
    send.add_argument("--structure-id", required=True)
    send.add_argument("--structure-name", required=True)
    send.add_argument("--source-id", default="1.2.250.1.999.1.1", help="XDS sourceId: this PFI's OID")
    send.add_argument("--restriction", action="append", default=[], choices=sorted(KNOWN_RESTRICTIONS))
    send.add_argument("--timeout", type=float, default=30.0)
    send.set_defaults(func=send_command)

    listing = sub.add_parser("list", help="list what a reference DMP holds for a patient (JSON lines)")
    listing.add_argument("--url", required=True, help="the reference DMP's base URL, e.g. https://dmp.test:8443")
    listing.add_argument("--server-hostname", default=None, help="TLS name to verify when it differs from the URL host")
    listing.add_argument("--cert", type=Path, required=True, help="a client certificate chain of the trust space (PEM)")
    listing.add_argument("--key", type=Path, required=True)
    listing.add_argument("--anchors", type=Path, required=True)
    listing.add_argument("--ins", required=True)
    listing.set_defaults(func=list_command)


def serve_command(args: argparse.Namespace) -> int:
    try:
        ctx = server_context(args.cert, args.key, args.anchors)
        validator = None
        if args.intermediates or args.crl:
            validator = Validator.from_files(args.anchors, args.intermediates, args.crl)
    except (OSError, ValueError, PkiError) as exc:
        print(f"mssante dmp serve: cannot load TLS material: {exc}", file=sys.stderr)
        return 1
    host, port = args.listen
    try:
        registry = ReferenceRegistry(args.store)
    except (StoreError, OSError) as exc:
        print(f"mssante dmp serve: cannot open the store: {exc}", file=sys.stderr)
        return 1

    async def run() -> None:
        running = await start_reference_dmp(
            ReferenceDmp(registry, validator=validator), host=host, port=port, ssl_context=ctx
        )
        print(f"reference DMP listening on https://{host}:{running.port} (POST /repository, /registry)", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await running.stop()

    try:
        asyncio.run(run())
    except OSError as exc:
        print(f"mssante dmp serve: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


def send_command(args: argparse.Namespace) -> int:
    action = DmpAction(args.action)
    cda = b""
    if action is not DmpAction.DELETE or args.document is not None:
        if args.document is None:
            print("mssante dmp send: a CDA document file is required", file=sys.stderr)
            return 2
        try:
            cda = args.document.read_bytes()
        except OSError as exc:
            print(f"mssante dmp send: cannot read {args.document}: {exc.strerror}", file=sys.stderr)
            return 1
    request = DmpRequest(
        action=action,
        cda=cda,
        ins=args.ins,
        ins_oid=args.ins_oid,
        author_idnps=args.author_idnps,
        author_family=args.author_family,
        author_given=args.author_given,
        structure_id=args.structure_id,
        structure_name=args.structure_name,
        restrictions=frozenset(args.restriction),
        replaced_unique_id=args.replaces,
        correlation_id="cli",
    )
    try:
        config = config_from_settings(
            args.url,
            args.cert,
            args.key,
            args.anchors,
            source_id=args.source_id,
            registry_url=args.registry_url,
            timeout=args.timeout,
            server_hostname=args.server_hostname,
        )
    except (OSError, ValueError) as exc:
        print(f"mssante dmp send: bad configuration: {exc}", file=sys.stderr)
        return 1

    async def run() -> int:
        try:
            connector = Iti41Connector(config)
        except (OSError, ValueError) as exc:
            print(f"mssante dmp send: cannot load certificates: {exc}", file=sys.stderr)
            return 1
        async with connector:
            outcome = await connector.send(request)
        if isinstance(outcome, DmpAccepted):
            print(f"accepted: document {outcome.document_unique_id} (submission set {outcome.submission_set_unique_id})")
            return 0
        if isinstance(outcome, DmpRejected):
            print(f"mssante dmp send: rejected {outcome.code}: {outcome.text}", file=sys.stderr)
        else:
            print(f"mssante dmp send: temporary failure: {outcome.reason}", file=sys.stderr)
        return 1

    return asyncio.run(run())


def list_command(args: argparse.Namespace) -> int:
    import json

    import aiohttp

    try:
        ctx = client_context(args.anchors, args.cert, args.key)
    except (OSError, ValueError) as exc:
        print(f"mssante dmp list: cannot load TLS material: {exc}", file=sys.stderr)
        return 1

    async def run() -> int:
        url = f"{args.url.rstrip('/')}/patients/{args.ins}/documents"
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s:
                async with s.get(url, ssl=ctx, server_hostname=args.server_hostname) as r:
                    body = await r.json(content_type=None)
                    status = r.status
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            print(f"mssante dmp list: cannot query {url}: {type(exc).__name__}", file=sys.stderr)
            return 1
        if status != 200:
            print(f"mssante dmp list: HTTP {status}: {body.get('error', '') if isinstance(body, dict) else ''}", file=sys.stderr)
            return 1
        for doc in body:
            print(json.dumps(doc, ensure_ascii=False))
        return 0

    return asyncio.run(run())
