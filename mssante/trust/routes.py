"""HTTP distribution of the liste blanche and the join API (mounted on the gateway's aiohttp app).

    GET  /trust/liste-blanche.xml          the list (ETag = SHA-256; If-None-Match / If-Modified-Since -> 304)
    GET  /trust/liste-blanche.xml.sig      detached signature by the authority certificate
    GET  /trust/liste-blanche.xml.sha256   checksum
    GET  /trust/authority.pem              the authority's signing certificate
    GET  /trust/crl/{name}.pem             trust-space CRLs
    POST /trust/join                       join request (JSON, authenticated by a one-time enrolment token)
    GET  /trust/join/{id}                  status + certificate (Authorization: Bearer <poll secret>)

Files are read from the authority's `published/` directory, so the CLI (another process) can republish.
Errors are JSON ``{"error": CODE, "detail": ...}``; secrets are never echoed or logged.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path

from aiohttp import web

from mssante.trust.authority import (
    LIST_NAME,
    SHA_NAME,
    SIG_NAME,
    AuthorityError,
    AuthorityErrorCode,
    JoinSubmission,
    TrustAuthority,
)

MAX_JOIN_BODY = 64 * 1024
_STATUS = {
    AuthorityErrorCode.BAD_TOKEN: 403,
    AuthorityErrorCode.BAD_REQUEST: 400,
    AuthorityErrorCode.NOT_FOUND: 404,
    AuthorityErrorCode.FORBIDDEN: 403,
    AuthorityErrorCode.CONFLICT: 409,
    AuthorityErrorCode.NO_PKI: 503,
    AuthorityErrorCode.NOT_INITIALISED: 503,
}
_CRL_NAME = re.compile(r"^[a-z0-9_-]{1,40}$")
_ID = re.compile(r"^[0-9a-f]{32}$")


class _Published:
    """Serves one published file with validators; re-hashes only when (mtime, size) changes."""

    def __init__(self, path: Path, content_type: str) -> None:
        self.path = path
        self.content_type = content_type
        self._stamp: tuple[int, int] | None = None
        self._etag = ""
        self._data = b""
        self._mtime = datetime.fromtimestamp(0, UTC)

    def _load(self) -> bool:
        try:
            st = self.path.stat()
        except OSError:
            return False
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            data = self.path.read_bytes()
            self._data = data
            self._etag = '"' + hashlib.sha256(data).hexdigest() + '"'
            self._mtime = datetime.fromtimestamp(st.st_mtime, UTC).replace(microsecond=0)
            self._stamp = stamp
        return True

    async def handle(self, request: web.Request) -> web.Response:
        if not self._load():
            return web.json_response({"error": "NOT_PUBLISHED"}, status=404)
        headers = {"ETag": self._etag, "Last-Modified": format_datetime(self._mtime, usegmt=True)}
        # RFC 9110 §13.1.2 / §13.2.2: If-None-Match wins over If-Modified-Since.
        inm = request.headers.get("If-None-Match")
        if inm is not None:
            if self._etag in (t.strip() for t in inm.split(",")) or inm.strip() == "*":
                return web.Response(status=304, headers=headers)
        else:
            ims = request.headers.get("If-Modified-Since")
            if ims:
                try:
                    since = parsedate_to_datetime(ims)
                except (TypeError, ValueError):
                    since = None
                if since is not None and since.tzinfo is not None and self._mtime <= since:
                    return web.Response(status=304, headers=headers)
        return web.Response(body=self._data, headers=headers, content_type=self.content_type)


def add_routes(
    app: web.Application,
    *,
    publish_dir: Path,
    authority: TrustAuthority | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> None:
    """Serve the published list; with `authority`, the join API too."""
    files = {
        LIST_NAME: _Published(publish_dir / LIST_NAME, "application/xml"),
        SIG_NAME: _Published(publish_dir / SIG_NAME, "application/octet-stream"),
        SHA_NAME: _Published(publish_dir / SHA_NAME, "text/plain"),
        "authority.pem": _Published(publish_dir / "authority.pem", "application/x-pem-file"),
    }
    for name, pub in files.items():
        app.router.add_get(f"/trust/{name}", pub.handle)
    crls: dict[str, _Published] = {}

    async def crl(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if not _CRL_NAME.match(name):
            return web.json_response({"error": "NOT_FOUND"}, status=404)
        pub = crls.setdefault(name, _Published(publish_dir / "crl" / f"{name}.pem", "application/pkix-crl"))
        return await pub.handle(request)

    app.router.add_get("/trust/crl/{name}.pem", crl)
    if authority is None:
        return

    def error(exc: AuthorityError) -> web.Response:
        return web.json_response({"error": str(exc.code), "detail": exc.detail}, status=_STATUS[exc.code])

    async def join(request: web.Request) -> web.Response:
        if request.content_length is None or request.content_length > MAX_JOIN_BODY:
            return web.json_response(
                {"error": "BAD_REQUEST", "detail": "body missing or too large"}, status=413
            )
        try:
            body = json.loads(await request.read())
            token = str(body["token"])
            sub = JoinSubmission(
                domain=str(body["domain"]),
                fqdn=str(body["fqdn"]),
                org=str(body["org"]),
                structure_id=str(body["structure_id"]),
                department=str(body["department"]),
                contact=str(body["contact"]),
                csr_pem=str(body["csr_pem"]).encode("ascii"),
            )
        except (ValueError, KeyError, TypeError, UnicodeEncodeError):
            return web.json_response(
                {"error": "BAD_REQUEST", "detail": "expected a JSON join request"}, status=400
            )
        try:
            ticket = await authority.submit_join(token, sub, now())
        except AuthorityError as exc:
            return error(exc)
        return web.json_response(
            {"request_id": ticket.request_id, "poll_secret": ticket.poll_secret}, status=202
        )

    async def status(request: web.Request) -> web.Response:
        request_id = request.match_info["id"]
        auth = request.headers.get("Authorization", "")
        if not _ID.match(request_id) or not auth.startswith("Bearer "):
            return web.json_response({"error": "NOT_FOUND", "detail": "no such join request"}, status=404)
        try:
            view = await authority.join_status(request_id, auth[len("Bearer ") :].strip())
        except AuthorityError as exc:
            return error(exc)
        return web.json_response(view.public())

    app.router.add_post("/trust/join", join)
    app.router.add_get("/trust/join/{id}", status)
