"""The reference DMP: an HTTPS ITI-41 / ITI-57 / ITI-18 endpoint for tests, the demo and benchmarks.

It plays the national DMP's part as far as the public specifications let us (docs/dmp.md):
mutual TLS with a certificate chaining to the configured anchors, a verified VIHF on every call
(mssante.dmp.vihf.verify_vihf), strict metadata (mssante.dmp.registry), RegistryResponse answers.
Routes: POST /repository (ITI-41), POST /registry (ITI-57, ITI-18), GET /patients/{ins}/documents (JSON).
"""

from __future__ import annotations

import logging
import socket
import ssl
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from aiohttp import web
from cryptography import x509
from lxml import etree

from . import ebrim, soap
from pki.validation import Role, Validator

from .ebrim import RegistryError
from .ins import InsError, check_ins
from .registry import Caller, ReferenceRegistry, RequestRejected
from .tlsconf import peer_certificate
from .vihf import A_RESOURCE_ID, VihfError, verify_vihf
from .xmlsafe import UnsafeXmlError, parse_xml

log = logging.getLogger("mssante.dmp.reference")

MAX_REQUEST_BYTES = 30 * 1024 * 1024  # SPECS.md §2: messages are capped at 25 MB; room for MTOM overhead
SOAP_CT = 'application/soap+xml; charset=UTF-8; action="{}"'


@dataclass
class _Reply:
    status: int
    body: etree._Element
    action: str


class ReferenceDmp:
    def __init__(
        self,
        registry: ReferenceRegistry | None = None,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        chain_ok: Callable[[x509.Certificate], bool] | None = None,
        validator: Validator | None = None,
        max_request_bytes: int = MAX_REQUEST_BYTES,
    ) -> None:
        """`validator` (pki.validation) adds revocation checks of the TLS client certificate and accepts a
        VIHF signed by a distinct seal certificate of the same subject when it validates; `chain_ok`
        overrides that second check."""
        self.registry = registry or ReferenceRegistry()
        self.now = now
        self.validator = validator
        self.chain_ok = chain_ok
        self.max_request_bytes = max_request_bytes
        self.requests = 0
        self.last_outcome: dict[str, str] = {}

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.max_request_bytes)
        app.router.add_post("/repository", self._repository)
        app.router.add_post("/registry", self._registry)
        app.router.add_get("/patients/{ins}/documents", self._list)
        app.router.add_get("/healthz", self._health)
        return app

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _list(self, request: web.Request) -> web.Response:
        ins = request.match_info["ins"]
        try:
            check_ins(ins)
        except InsError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response([d.public() for d in self.registry.documents_of(ins)])

    async def _repository(self, request: web.Request) -> web.Response:
        return await self._soap(request, {soap.ACTION_ITI41})

    async def _registry(self, request: web.Request) -> web.Response:
        return await self._soap(request, {soap.ACTION_ITI57, soap.ACTION_ITI18})

    async def _soap(self, request: web.Request, actions: set[str]) -> web.Response:
        self.requests += 1
        reply_id = f"urn:uuid:{uuid.uuid4()}"
        relates = ""
        try:
            peer = peer_certificate(request.transport.get_extra_info("ssl_object") if request.transport else None)
            if peer is None:  # never reached behind server_context(): the handshake requires a certificate
                return self._fault(403, "Sender", "wsse:FailedAuthentication", "a TLS client certificate is required", reply_id, "")
            now = self.now()
            if self.validator is not None:
                decision = self.validator.validate(peer, Role.TLS_CLIENT, now)
                if not decision.ok:
                    return self._fault(
                        403, "Sender", "wsse:FailedAuthentication", f"client certificate refused: {decision.reason.value}", reply_id, ""
                    )
            body = await request.read()
            msg = soap.parse_soap(request.headers.get("Content-Type", ""), body)
            relates = msg.message_id
            if msg.action not in actions:
                return self._fault(400, "Sender", "wsa:ActionNotSupported", f"action not supported here: {msg.action}", reply_id, relates)
            if msg.body is None:
                return self._fault(400, "Sender", "soap:Client", "empty SOAP Body", reply_id, relates)
            if msg.security is None:
                return self._fault(400, "Sender", "wsse:InvalidSecurity", "the VIHF (saml2:Assertion in wsse:Security) is missing", reply_id, relates)
            assertion = parse_xml(etree.tostring(msg.security))
            claims = verify_vihf(assertion, tls_client_cert=peer, now=now, chain_ok=self._chain_ok(now))
            caller = Caller(structure_id=claims.one("Identifiant_Structure"), resource_id=claims.one(A_RESOURCE_ID))
            reply = self._dispatch(msg, caller, now)
            return web.Response(
                status=reply.status,
                body=soap.build_envelope(
                    action=reply.action, message_id=reply_id, relates_to=relates, body=reply.body
                ),
                headers={"Content-Type": SOAP_CT.format(reply.action)},
            )
        except web.HTTPRequestEntityTooLarge:
            return self._fault(413, "Sender", "soap:Client", "request too large", reply_id, relates)
        except soap.SoapFormatError as exc:
            return self._fault(400, "Sender", "soap:Client", f"malformed message: {exc}", reply_id, relates)
        except UnsafeXmlError as exc:
            return self._fault(400, "Sender", "soap:Client", f"unacceptable XML: {exc}", reply_id, relates)
        except VihfError as exc:
            log.info("VIHF refused: %s", exc.reason)
            return self._fault(400, "Sender", "wsse:FailedAuthentication", f"VIHF refused ({exc.reason}): {exc.detail}", reply_id, relates)
        except Exception:  # an unexpected failure: generic Receiver fault with a correlation id
            log.exception("reference DMP internal error %s", reply_id)
            return self._fault(500, "Receiver", "soap:Server", f"internal error, correlation id {reply_id}", reply_id, relates)

    def _chain_ok(self, now: datetime) -> Callable[[x509.Certificate], bool] | None:
        if self.chain_ok is not None:
            return self.chain_ok
        validator = self.validator
        if validator is None:
            return None
        return lambda cert: validator.validate(cert, Role.ANY, now).ok

    def _dispatch(self, msg: soap.SoapMessage, caller: Caller, now: datetime) -> _Reply:
        assert msg.body is not None
        if msg.action == soap.ACTION_ITI18:
            try:
                query_id, slots = ebrim.read_query(msg.body)
                if query_id != ebrim.QUERY_GET_DOCUMENTS:
                    raise RequestRejected(RegistryError("XDSUnknownStoredQuery", f"stored query {query_id} not supported"))
                values = slots.get("$XDSDocumentEntryUniqueId", [])
                uids = [u.strip().strip("'") for v in values for u in v.strip().strip("()").split(",") if u.strip()]
                if not uids:
                    raise RequestRejected(RegistryError("XDSStoredQueryParamNumber", "$XDSDocumentEntryUniqueId is required"))
                refs = self.registry.get_documents(uids, caller)
                body = ebrim.query_response(refs)
            except RequestRejected as exc:
                body = ebrim.query_response([], exc.errors)
            except ebrim.ResponseFormatError as exc:
                body = ebrim.query_response([], [RegistryError("XDSRegistryError", str(exc))])
            return _Reply(200, body, soap.ACTION_ITI18_RESPONSE)
        response_action = soap.ACTION_ITI41_RESPONSE if msg.action == soap.ACTION_ITI41 else soap.ACTION_ITI57_RESPONSE
        try:
            sub = ebrim.read_submission(msg.body)
            if msg.action == soap.ACTION_ITI41:
                doc = self.registry.provide_and_register(sub, msg.attachments, caller, now)
            else:
                doc = self.registry.update_status(sub, caller, now)
            self.last_outcome = {"status": "Success", "entry_uuid": doc.entry_uuid}
            body = ebrim.registry_response()
        except RequestRejected as exc:
            self.last_outcome = {"status": "Failure", "code": exc.errors[0].code}
            log.info("DMP request refused: %s", exc.errors[0].code)
            body = ebrim.registry_response(exc.errors)
        except ebrim.ResponseFormatError as exc:
            body = ebrim.registry_response([RegistryError("XDSRegistryMetadataError", str(exc))])
        return _Reply(200, body, response_action)

    def _fault(self, status: int, code: str, subcode: str, reason: str, reply_id: str, relates: str) -> web.Response:
        self.last_outcome = {"status": "Fault", "code": subcode}
        return web.Response(
            status=status,
            body=soap.fault_envelope(code=code, subcode=subcode, reason=reason, message_id=reply_id, relates_to=relates),
            headers={"Content-Type": 'application/soap+xml; charset=UTF-8'},
        )


@dataclass
class RunningDmp:
    runner: web.AppRunner
    port: int
    dmp: ReferenceDmp

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        await self.runner.cleanup()


async def start_reference_dmp(
    dmp: ReferenceDmp, *, host: str, port: int, ssl_context: ssl.SSLContext
) -> RunningDmp:
    """Start listening (port 0 picks a free port) and return a handle with the bound port."""
    runner = web.AppRunner(dmp.app(), access_log=None)
    await runner.setup()
    sock = socket.create_server((host, port))  # our own socket, so the bound port is known
    site = web.SockSite(runner, sock, ssl_context=ssl_context)
    await site.start()
    return RunningDmp(runner, int(sock.getsockname()[1]), dmp)
