"""The DMP connector: DmpRequest -> ITI-41 / ITI-57 (+ ITI-18 lookup) with a VIHF, over mutual TLS.

SPECS.md §4 "The DMP leg". Outcome classification (docs/dmp.md "Retry classification"):
- network errors, timeouts, HTTP 5xx, 408/429 and SOAP Receiver faults -> DmpTemporaryFailure (retry later);
- SOAP Sender faults, RegistryResponse Failure and local refusals (bad INS, unusable CDA header)
  -> DmpRejected (permanent; the code comes from the RegistryErrorList, the fault subcode, or 900-906).
Every call is audited (who, which INS, which document, outcome); document content is never logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lxml import etree

from . import ebrim, soap
from .api import DmpAccepted, DmpAction, DmpOutcome, DmpRejected, DmpRequest, DmpTemporaryFailure
from .ins import INS_OIDS, InsError, check_ins, patient_id_cx
from .metadata import CdaHeaderError, SubmissionSet, XdsSettings, build_submission, oid_from_uuid, parse_cda_header, xcn, xon
from .tlsconf import client_context
from .vihf import ROLE_AUTOMATE, SigningKey, VihfSubject, build_vihf
from .xmlsafe import UnsafeXmlError

log = logging.getLogger("mssante.dmp.connector")

AuditFn = Callable[..., Awaitable[None]]
MAX_RESPONSE_BYTES = 4 * 1024 * 1024  # a RegistryResponse is small; never buffer an unbounded answer


@dataclass(frozen=True)
class DmpConnectorConfig:
    repository_url: str  # ITI-41 endpoint
    registry_url: str  # ITI-57 and ITI-18 endpoint
    client_cert_path: Path  # the structure's ORG AUTH_CLI certificate (leaf + intermediate)
    client_key_path: Path
    anchors_path: Path  # trust anchors for the DMP's server certificate (SPECS.md §6)
    xds: XdsSettings
    signing_cert_path: Path | None = None  # the structure's seal certificate; default: the TLS certificate
    signing_key_path: Path | None = None
    key_passphrase: bytes | None = None
    secteur_activite: str = "SA25^1.2.250.1.71.4.2.4"  # VIHF Secteur_Activite: a PFI parameter (mapping.md)
    subject_roles: tuple[tuple[str, str, str], ...] = (ROLE_AUTOMATE,)
    vihf_validity: timedelta = timedelta(minutes=5)
    total_timeout_s: float = 30.0
    connect_timeout_s: float = 10.0
    max_concurrency: int = 8
    lps_name: str = "mssante"
    lps_version: str = "0.1.0"
    server_hostname: str | None = None  # TLS name to verify when the URL host differs (tests, loopback)
    keep_alive: bool = True  # pool TLS connections (False: one handshake per request, for benchmarks)


def _load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificates(path.read_bytes())[0]


def _load_key(path: Path, passphrase: bytes | None) -> SigningKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=passphrase)
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ValueError("the VIHF signing key must be RSA or ECDSA")
    return key


class _Temporary(Exception):
    pass


class _Rejected(Exception):
    def __init__(self, code: str, text: str) -> None:
        super().__init__(f"{code}: {text}")
        self.code = code
        self.text = text


class Iti41Connector:
    """DmpConnector over ITI-41/ITI-57/ITI-18. Use as `async with` or call close()."""

    def __init__(
        self,
        config: DmpConnectorConfig,
        *,
        audit: AuditFn | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        new_uuid: Callable[[], uuid.UUID] = uuid.uuid4,
    ) -> None:
        self.config = config
        self.audit = audit
        self.now = now
        self.new_uuid = new_uuid
        self._ssl = client_context(config.anchors_path, config.client_cert_path, config.client_key_path)
        self._sign_cert = _load_cert(config.signing_cert_path or config.client_cert_path)
        self._sign_key = _load_key(config.signing_key_path or config.client_key_path, config.key_passphrase)
        self._sem = asyncio.Semaphore(config.max_concurrency)
        self._session: aiohttp.ClientSession | None = None
        self.timings: dict[str, float] = {}  # seconds per phase, summed (for scripts/bench_dmp.py)

    async def __aenter__(self) -> Iti41Connector:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            pooling: dict[str, Any] = {"keepalive_timeout": 30} if self.config.keep_alive else {"force_close": True}
            connector = aiohttp.TCPConnector(ssl=self._ssl, limit=self.config.max_concurrency, **pooling)
            timeout = aiohttp.ClientTimeout(total=self.config.total_timeout_s, sock_connect=self.config.connect_timeout_s)
            self._session = aiohttp.ClientSession(connector=connector, timeout=timeout)
        return self._session

    def _tick(self, phase: str, started: float) -> float:
        t = time.perf_counter()
        self.timings[phase] = self.timings.get(phase, 0.0) + (t - started)
        return t

    # ----- the DmpConnector protocol -----
    async def send(self, request: DmpRequest) -> DmpOutcome:
        async with self._sem:
            doc_id = request.document_unique_id or request.replaced_unique_id or ""
            try:
                outcome: DmpOutcome = await self._send(request)
            except _Rejected as exc:
                outcome = DmpRejected(exc.code, exc.text)
            except _Temporary as exc:
                outcome = DmpTemporaryFailure(str(exc))
            except Exception:  # ARCHITECTURE.md "Errors": an unexpected failure is temporary, with a correlation id
                incident = f"dmp-{self.new_uuid().hex[:12]}"
                log.exception("unexpected failure in the DMP connector (%s)", incident)
                outcome = DmpTemporaryFailure(f"internal error, correlation id {incident}")
            if isinstance(outcome, DmpAccepted):
                doc_id = outcome.document_unique_id
            await self._audit(request, outcome, doc_id)
            return outcome

    async def _audit(self, request: DmpRequest, outcome: DmpOutcome, doc_id: str) -> None:
        fields: dict[str, Any] = {
            "ins": request.ins,
            "document_unique_id": doc_id,
            "structure_id": request.structure_id,
            "correlation_id": request.correlation_id,
        }
        if isinstance(outcome, DmpAccepted):
            result = "accepted"
            fields["submission_set_unique_id"] = outcome.submission_set_unique_id
        elif isinstance(outcome, DmpRejected):
            result = "rejected"
            fields["code"] = outcome.code
        else:
            result = "temporary-failure"
            fields["reason"] = outcome.reason
        log.info("DMP %s for document %s: %s", request.action.value, doc_id or "-", result)
        if self.audit is not None:
            try:
                await self.audit(f"dmp.{request.action.value}", request.author_idnps or request.structure_id, result, **fields)
            except Exception:  # the DMP outcome must still reach the Y leg: a lost answer would resubmit
                log.exception("audit record failed for DMP %s of document %s (%s)", request.action.value, doc_id or "-", result)

    async def _send(self, request: DmpRequest) -> DmpOutcome:
        t = time.perf_counter()
        try:
            check_ins(request.ins)
        except InsError as exc:
            raise _Rejected("905", f"INS is not usable: {exc}") from None
        if request.ins_oid not in INS_OIDS:
            raise _Rejected("905", "INS OID is neither 1.2.250.1.213.1.4.8 nor 1.2.250.1.213.1.4.10")
        if request.action is DmpAction.DELETE:
            return await self._delete(request)
        try:
            header = parse_cda_header(request.cda)
        except CdaHeaderError as exc:
            raise _Rejected("906", f"CDA header: {exc}") from None
        if header.ins is None:
            raise _Rejected("903", "the CDA recordTarget carries no INS")
        if header.ins != request.ins or header.ins_oid != request.ins_oid:
            raise _Rejected("904", "the INS of the CDA (or its OID) does not match the request's INS")
        t = self._tick("cda", t)
        now = self.now()
        vihf = self.vihf_for(request, now)  # one VIHF per operation: the lookup and the ITI-41 share it
        t = self._tick("vihf", t)
        replaces = None
        if request.action is DmpAction.REPLACE:
            target = request.replaced_unique_id or (header.replaced_ids[0] if header.replaced_ids else None)
            if not target:
                raise _Rejected("900", "a replacement needs the replaced document's uniqueId")
            replaces = await self._lookup(target, vihf)
            t = time.perf_counter()
        try:
            sub = build_submission(
                request, header, self.config.xds, now=now, new_uuid=self.new_uuid, replaces_entry_uuid=replaces
            )
        except CdaHeaderError as exc:
            raise _Rejected("906", f"XDS metadata: {exc}") from None
        body = ebrim.provide_and_register(sub)
        t = self._tick("metadata", t)
        envelope = soap.build_envelope(
            action=soap.ACTION_ITI41,
            message_id=f"urn:uuid:{self.new_uuid()}",
            to=self.config.repository_url,
            security=vihf,
            body=body,
        )
        ctype, payload = soap.mtom_package(
            envelope, [soap.Attachment(sub.content_id, "text/xml", request.cda)], action=soap.ACTION_ITI41
        )
        self._tick("soap", t)
        result = await self._exchange(self.config.repository_url, ctype, payload)
        if not result.success:
            first = result.errors[0]
            raise _Rejected(first.code, first.context or first.code)
        return DmpAccepted(sub.document.unique_id, sub.submission_set.unique_id)

    async def _delete(self, request: DmpRequest) -> DmpOutcome:
        """DMP TD3.3c: ITI-57 Update Document Set, availabilityStatus Approved -> urn:asip:ci-sis:2010:StatusType:Deleted."""
        target = request.replaced_unique_id or request.document_unique_id
        if not target and request.cda:
            try:
                target = parse_cda_header(request.cda).unique_id
            except CdaHeaderError as exc:
                raise _Rejected("906", f"CDA header: {exc}") from None
        if not target:
            raise _Rejected("900", "a deletion needs the document's uniqueId")
        now = self.now()
        vihf = self.vihf_for(request, now)
        entry_uuid = await self._lookup(target, vihf)
        t = time.perf_counter()
        ss = self._submission_set(request, now)
        body = ebrim.update_availability_status(ss, entry_uuid)
        envelope = soap.build_envelope(
            action=soap.ACTION_ITI57, message_id=f"urn:uuid:{self.new_uuid()}", to=self.config.registry_url, security=vihf, body=body
        )
        self._tick("soap", t)
        result = await self._exchange(self.config.registry_url, f'application/soap+xml; charset=UTF-8; action="{soap.ACTION_ITI57}"', envelope)
        if not result.success:
            raise _Rejected(result.errors[0].code, result.errors[0].context or result.errors[0].code)
        return DmpAccepted(target, ss.unique_id)

    def _submission_set(self, request: DmpRequest, now: datetime) -> SubmissionSet:
        u = self.new_uuid()
        return SubmissionSet(
            entry_uuid=f"urn:uuid:{u}",
            unique_id=oid_from_uuid(u),
            source_id=self.config.xds.source_id,
            patient_id=patient_id_cx(request.ins, request.ins_oid),
            submission_time=now.astimezone(UTC).strftime("%Y%m%d%H%M%S"),
            content_type=self.config.xds.content_type,
            author_person=xcn(request.author_idnps, request.author_family, request.author_given),
            author_institution=xon(request.structure_name, request.structure_id),
        )

    async def _lookup(self, unique_id: str, vihf: etree._Element) -> str:
        """ITI-18 GetDocuments (ObjectRef) -> the entryUUID of the document version to replace or delete."""
        t = time.perf_counter()
        envelope = soap.build_envelope(
            action=soap.ACTION_ITI18,
            message_id=f"urn:uuid:{self.new_uuid()}",
            to=self.config.registry_url,
            security=vihf,
            body=ebrim.get_documents_query(unique_id),
        )
        self._tick("lookup-build", t)
        result = await self._exchange(self.config.registry_url, f'application/soap+xml; charset=UTF-8; action="{soap.ACTION_ITI18}"', envelope)
        if not result.success:
            raise _Rejected(result.errors[0].code, result.errors[0].context or result.errors[0].code)
        if not result.object_refs:
            raise _Rejected("900", "the document to replace or delete is not in the patient's DMP")
        return result.object_refs[0]

    def vihf_for(self, request: DmpRequest, now: datetime) -> etree._Element:
        """The signed VIHF this connector sends for `request` (also used by scripts/bench_dmp.py)."""
        subject = VihfSubject(
            name_id=request.author_idnps,
            display_name=f"{request.author_family} {request.author_given}".strip(),
            structure_id=request.structure_id,
            secteur_activite=self.config.secteur_activite,
            roles=self.config.subject_roles,
            lps_name=self.config.lps_name,
            lps_version=self.config.lps_version,
        )
        return build_vihf(
            subject,
            patient_resource_id=patient_id_cx(request.ins, request.ins_oid),
            cert=self._sign_cert,
            key=self._sign_key,
            now=now,
            validity=self.config.vihf_validity,
            secret_connection="CONNEXION_SECRETE" in request.restrictions,
        )

    async def _exchange(self, url: str, content_type: str, payload: bytes) -> ebrim.RegistryResult:
        t = time.perf_counter()
        try:
            async with self._http().post(
                url, data=payload, headers={"Content-Type": content_type}, server_hostname=self.config.server_hostname
            ) as resp:
                status = resp.status
                rtype = resp.headers.get("Content-Type", "")
                chunks: list[bytes] = []
                size = 0
                async for chunk in resp.content.iter_chunked(65536):
                    size += len(chunk)
                    if size > MAX_RESPONSE_BYTES:
                        raise _Rejected("XDSRegistryError", "the DMP's answer is larger than expected")
                    chunks.append(chunk)
                body = b"".join(chunks)
        except asyncio.TimeoutError:
            raise _Temporary("timeout talking to the DMP") from None
        except aiohttp.ClientSSLError as exc:
            raise _Temporary(f"TLS failure with the DMP: {type(exc).__name__}") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise _Temporary(f"network error: {type(exc).__name__}") from None
        t = self._tick("http", t)
        try:
            msg = soap.parse_soap(rtype, body)
        except soap.SoapFormatError:
            if status >= 500 or status in (408, 429):
                raise _Temporary(f"HTTP {status} from the DMP") from None
            raise _Rejected(f"HTTP{status}", "the DMP answered with something that is not SOAP") from None
        finally:
            self._tick("response", t)
        if msg.fault is not None:
            if msg.fault.code.endswith("Receiver"):
                raise _Temporary(f"SOAP Receiver fault ({status})")
            raise _Rejected(msg.fault.subcode or "SOAPFault", msg.fault.reason or "SOAP fault")
        if status >= 500 or status in (408, 429):
            raise _Temporary(f"HTTP {status} from the DMP")
        if msg.body is None:
            raise _Rejected("XDSRegistryError", "empty SOAP Body in the DMP's answer")
        try:
            return ebrim.read_response(msg.body)
        except (ebrim.ResponseFormatError, UnsafeXmlError) as exc:
            raise _Rejected("XDSRegistryError", f"unreadable DMP answer: {exc}") from None



def registry_url_for(repository_url: str) -> str:
    """The reference DMP (and many XDS.b deployments) serve the registry next to the repository."""
    if repository_url.rstrip("/").endswith("/repository"):
        return repository_url.rstrip("/")[: -len("/repository")] + "/registry"
    return repository_url


def config_from_settings(
    url: str,
    cert: Path,
    key: Path,
    anchors: Path,
    *,
    source_id: str,
    registry_url: str | None = None,
    concurrency: int = 8,
    timeout: float = 30.0,
    **extra: Any,
) -> DmpConnectorConfig:
    """A connector configuration from the gateway's [dmp] settings (url, cert, key, anchors, ...)."""
    return DmpConnectorConfig(
        repository_url=url,
        registry_url=registry_url or registry_url_for(url),
        client_cert_path=cert,
        client_key_path=key,
        anchors_path=anchors,
        xds=XdsSettings(source_id=source_id),
        max_concurrency=concurrency,
        total_timeout_s=timeout,
        **extra,
    )


__all__ = ["DmpConnectorConfig", "Iti41Connector", "config_from_settings", "registry_url_for"]
