"""OCSP (RFC 6960) status checks with a caller-provided transport.

SPECS.md §6: IGC Santé runs an OCSP service besides its CRLs. ``check_response`` is pure (bytes and
``now`` in, an OcspResult out). ``OcspChecker`` adds the transport: a ``fetch(url, request_der) ->
response_der`` function supplied by the caller (an HTTP POST with content type
``application/ocsp-request``, RFC 6960 Appendix A.1) and the responder URL per issuing CA.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from pki.sigs import verify_signature, weak_hash_reason

OcspFetch = Callable[[str, bytes], bytes]
# A response without nextUpdate is accepted for this long after its thisUpdate.
DEFAULT_MAX_AGE = timedelta(days=1)
CLOCK_SKEW = timedelta(minutes=5)


class OcspStatus(str, Enum):
    GOOD = "GOOD"
    REVOKED = "REVOKED"
    UNKNOWN = "UNKNOWN"   # the responder does not know the certificate
    ERROR = "ERROR"       # no usable answer (transport, bad signature, stale, malformed)


@dataclass(frozen=True)
class OcspResult:
    status: OcspStatus
    detail: str = ""
    revocation_reason: x509.ReasonFlags | None = None
    valid_until: datetime | None = None  # nextUpdate (or thisUpdate + max age) of a conclusive answer


def build_request(cert: x509.Certificate, issuer: x509.Certificate) -> bytes:
    """DER OCSPRequest for one certificate (SHA-1 CertID, as RFC 6960/5019 responders expect)."""
    # CertID hashing with SHA-1 is an identifier, not a signature: RFC 5019 §2.1.1 mandates it.
    req = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1()).build()  # noqa: S303
    return req.public_bytes(serialization.Encoding.DER)


def _issuer_key_hash(cert: x509.Certificate, issuer: x509.Certificate, algorithm: hashes.HashAlgorithm) -> bytes:
    # RFC 6960 §4.1.1 issuerKeyHash, computed the same way cryptography builds a CertID.
    req = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, algorithm).build()
    return req.issuer_key_hash


def _responder_ok(resp: ocsp.OCSPResponse, issuer: x509.Certificate, now: datetime) -> tuple[bool, str]:
    """RFC 6960 §4.2.2.2: signed by the issuer itself or by a delegated responder it certified."""
    algorithm = resp.signature_hash_algorithm
    if weak_hash_reason(algorithm):
        return False, f"OCSP response has a weak signature ({weak_hash_reason(algorithm)})"
    if verify_signature(issuer.public_key(), resp.signature, resp.tbs_response_bytes, algorithm):
        return True, ""
    for cert in resp.certificates:
        try:
            cert.verify_directly_issued_by(issuer)
        except Exception:  # noqa: S112 - try the next embedded certificate
            continue
        try:
            eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            continue
        if ExtendedKeyUsageOID.OCSP_SIGNING not in eku:
            continue
        if not (cert.not_valid_before_utc <= now <= cert.not_valid_after_utc):
            return False, "OCSP delegated responder certificate is outside its validity"
        if verify_signature(cert.public_key(), resp.signature, resp.tbs_response_bytes, algorithm):
            return True, ""
    return False, "OCSP response signature does not verify with the issuer or a delegated responder"


def check_response(response_der: bytes, cert: x509.Certificate, issuer: x509.Certificate, now: datetime,
                   *, max_age: timedelta = DEFAULT_MAX_AGE) -> OcspResult:
    """Interpret a DER OCSP response for ``cert`` at ``now``; never raises."""
    try:
        resp = ocsp.load_der_ocsp_response(response_der)
    except ValueError as exc:
        return OcspResult(OcspStatus.ERROR, f"malformed OCSP response ({exc})")
    if resp.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
        return OcspResult(OcspStatus.ERROR, f"OCSP responder answered {resp.response_status.name}")
    try:
        ok, why = _responder_ok(resp, issuer, now)
        if not ok:
            return OcspResult(OcspStatus.ERROR, why)
        for single in resp.responses:
            if single.serial_number != cert.serial_number:
                continue
            if single.issuer_key_hash != _issuer_key_hash(cert, issuer, single.hash_algorithm):
                continue
            this_update = single.this_update_utc
            next_update = single.next_update_utc
            if this_update > now + CLOCK_SKEW:
                return OcspResult(OcspStatus.ERROR, "OCSP response thisUpdate is in the future")
            if next_update is not None and now > next_update:
                return OcspResult(OcspStatus.ERROR, f"OCSP response expired at {next_update.isoformat()}")
            if next_update is None and now > this_update + max_age:
                return OcspResult(OcspStatus.ERROR, "OCSP response is too old")
            valid_until = next_update if next_update is not None else this_update + max_age
            if single.certificate_status is ocsp.OCSPCertStatus.GOOD:
                return OcspResult(OcspStatus.GOOD, valid_until=valid_until)
            if single.certificate_status is ocsp.OCSPCertStatus.REVOKED:
                return OcspResult(OcspStatus.REVOKED, "revoked according to OCSP",
                                  single.revocation_reason, valid_until)
            return OcspResult(OcspStatus.UNKNOWN, "OCSP responder does not know this certificate")
    except Exception as exc:  # malformed fields
        return OcspResult(OcspStatus.ERROR, f"unusable OCSP response ({exc})")
    return OcspResult(OcspStatus.ERROR, "OCSP response does not cover this certificate")


class OcspChecker:
    """OCSP with a configured responder URL per issuing CA (keyed by the CA subject, RFC 4514).

    Conclusive answers (GOOD / REVOKED) are cached until their nextUpdate, so a busy listener does
    not query the responder for every connection (RFC 5019 §6 caching).
    """

    def __init__(self, fetch: OcspFetch, responders: Mapping[str, str], *,
                 max_age: timedelta = DEFAULT_MAX_AGE, cache_size: int = 10_000) -> None:
        self._fetch = fetch
        self._responders = {_norm(k): v for k, v in responders.items()}
        self._max_age = max_age
        self._cache: dict[tuple[x509.Certificate, int], OcspResult] = {}
        self._cache_size = cache_size

    def responder_for(self, issuer: x509.Certificate) -> str | None:
        return self._responders.get(_norm(issuer.subject.rfc4514_string()))

    def check(self, cert: x509.Certificate, issuer: x509.Certificate, now: datetime) -> OcspResult | None:
        """None when no responder is configured for this issuer."""
        url = self.responder_for(issuer)
        if url is None:
            return None
        key = (issuer, cert.serial_number)
        cached = self._cache.get(key)
        if cached is not None and cached.valid_until is not None and now <= cached.valid_until:
            return cached
        try:
            response = self._fetch(url, build_request(cert, issuer))
        except Exception as exc:
            return OcspResult(OcspStatus.ERROR, f"OCSP fetch from {url} failed ({type(exc).__name__})")
        result = check_response(response, cert, issuer, now, max_age=self._max_age)
        if result.status in (OcspStatus.GOOD, OcspStatus.REVOKED):
            if len(self._cache) >= self._cache_size:
                self._cache.clear()
            self._cache[key] = result
        return result


def _norm(dn: str) -> str:
    return ",".join(part.strip() for part in dn.split(",")).casefold()
