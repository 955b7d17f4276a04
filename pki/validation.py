"""Certificate path validation for the trust space: pure, ``now`` as a parameter, never raises.

``Validator.validate(leaf, role, now)`` builds a path from the leaf through known intermediates
(configured ones plus those the peer sent) to a configured anchor, then checks, in this order, and
returns the first failure as a typed :class:`Decision`:

1. the leaf parses (``MALFORMED``), has no weak signature (``WEAK_SIGNATURE``) or key (``WEAK_KEY``);
2. a path exists to an anchor, with every signature verified (``UNTRUSTED_ROOT``,
   ``MISSING_INTERMEDIATE``, ``BAD_SIGNATURE``) — RFC 5280 §6.1.3 (a)(1);
3. every certificate of the path is within its validity at ``now`` (``EXPIRED``, ``NOT_YET_VALID``) —
   RFC 5280 §6.1.3 (a)(2); intermediates have strong keys/signatures;
4. issuers are CAs: basicConstraints cA, keyCertSign, pathLenConstraint (``NOT_A_CA``,
   ``PATH_TOO_LONG``) — RFC 5280 §6.1.4 (k), (l), (m), (n);
5. the leaf fits the role: key usage (``WRONG_KEY_USAGE``) and EKU (``WRONG_EKU``) — RFC 5280
   §4.2.1.3 / §4.2.1.12; TLS server = serverAuth, TLS client = clientAuth (SPECS.md §1: MTAs present
   SERV certificates both ways);
6. revocation of every non-anchor certificate: OCSP when a responder is configured for its issuer
   (a conclusive GOOD/REVOKED answer wins), otherwise the issuer's CRL (``REVOKED``,
   ``CRL_UNAVAILABLE``, ``CRL_EXPIRED``, ``CRL_BAD_SIGNATURE``). Fail-closed by default
   (SPECS.md §6: keep the last valid CRL; no valid CRL => reject); ``fail_closed=False`` accepts
   with a note in ``detail`` instead.

Speed: anchors and intermediates are indexed by subject DER; signature checks between CA
certificates are cached (intermediates repeat), the leaf's signature is verified on every call.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID

from pki.crl import CrlState, CrlStore, crl_store_from_files
from pki.errors import MalformedInput
from pki.files import load_certificates, parse_certificates
from pki.ocsp import OcspChecker, OcspStatus
from pki.sigs import weak_hash_reason, weak_key_reason

MAX_PATH_LENGTH = 8
MAX_EXTRA_INTERMEDIATES = 16   # certificates a peer may send besides its leaf
MAX_SIGNATURE_CHECKS = 32      # per validation, over all candidate paths
MAX_CANDIDATE_PATHS = 4        # complete paths tried when the first fails a later check
_CACHE_LIMIT = 4096


class Role(str, Enum):
    TLS_SERVER = "TLS_SERVER"    # an MX we deliver to, any TLS server
    TLS_CLIENT = "TLS_CLIENT"    # a peer MTA, an application or a professional authenticating to us
    EMAIL = "EMAIL"              # S/MIME signature / encryption
    ANY = "ANY"                  # path + validity + revocation only


class Reason(str, Enum):
    OK = "OK"
    MALFORMED = "MALFORMED"
    BAD_SIGNATURE = "BAD_SIGNATURE"
    UNTRUSTED_ROOT = "UNTRUSTED_ROOT"
    MISSING_INTERMEDIATE = "MISSING_INTERMEDIATE"
    EXPIRED = "EXPIRED"
    NOT_YET_VALID = "NOT_YET_VALID"
    WEAK_KEY = "WEAK_KEY"
    WEAK_SIGNATURE = "WEAK_SIGNATURE"
    NOT_A_CA = "NOT_A_CA"
    PATH_TOO_LONG = "PATH_TOO_LONG"
    WRONG_KEY_USAGE = "WRONG_KEY_USAGE"
    WRONG_EKU = "WRONG_EKU"
    REVOKED = "REVOKED"
    CRL_UNAVAILABLE = "CRL_UNAVAILABLE"
    CRL_EXPIRED = "CRL_EXPIRED"
    CRL_BAD_SIGNATURE = "CRL_BAD_SIGNATURE"


_CRL_REASON = {
    CrlState.EXPIRED: Reason.CRL_EXPIRED,
    CrlState.BAD_SIGNATURE: Reason.CRL_BAD_SIGNATURE,
    CrlState.UNAVAILABLE: Reason.CRL_UNAVAILABLE,
}

# RFC 5280 §4.2: a certificate with a critical extension we do not process must be rejected.
_UNDERSTOOD_CRITICAL = {
    ExtensionOID.BASIC_CONSTRAINTS, ExtensionOID.KEY_USAGE, ExtensionOID.EXTENDED_KEY_USAGE,
    ExtensionOID.SUBJECT_ALTERNATIVE_NAME, ExtensionOID.CERTIFICATE_POLICIES,
    ExtensionOID.SUBJECT_KEY_IDENTIFIER, ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
}

_ROLE_EKU = {
    Role.TLS_SERVER: ExtendedKeyUsageOID.SERVER_AUTH,
    Role.TLS_CLIENT: ExtendedKeyUsageOID.CLIENT_AUTH,
    Role.EMAIL: ExtendedKeyUsageOID.EMAIL_PROTECTION,
}


@dataclass(frozen=True)
class Decision:
    ok: bool
    reason: Reason
    detail: str = ""
    subject: x509.Name | None = None
    chain: tuple[x509.Certificate, ...] = ()   # leaf first, anchor last (when a path was built)

    def __bool__(self) -> bool:
        return self.ok


def _fail(reason: Reason, detail: str, leaf: x509.Certificate | None,
          chain: Sequence[x509.Certificate] = ()) -> Decision:
    subject: x509.Name | None = None
    if leaf is not None:
        try:
            subject = leaf.subject
        except Exception:
            subject = None
    return Decision(False, reason, detail, subject, tuple(chain))


def _dn(name: x509.Name) -> str:
    try:
        return name.rfc4514_string()
    except Exception:
        return "<unprintable name>"


@dataclass(frozen=True)
class _CaInfo:
    """What validation needs from a CA certificate, computed once per certificate."""
    subject_der: bytes
    issuer_der: bytes
    ski: bytes | None
    aki: bytes | None
    self_issued: bool
    is_ca: bool
    path_length: int | None
    can_sign_certs: bool
    eku: frozenset[x509.ObjectIdentifier] | None
    weak: str | None           # weak key or signature, explained
    weak_reason: Reason | None
    bad_critical: str | None


def _ski(cert: x509.Certificate) -> bytes | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return None


def _aki(cert: x509.Certificate) -> bytes | None:
    try:
        return cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    except x509.ExtensionNotFound:
        return None


def _unknown_critical(cert: x509.Certificate) -> str | None:
    for ext in cert.extensions:
        if ext.critical and ext.oid not in _UNDERSTOOD_CRITICAL:
            return f"unsupported critical extension {ext.oid.dotted_string}"
    return None


def _ca_info(cert: x509.Certificate) -> _CaInfo:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        is_ca, path_length = bc.ca, bc.path_length
    except x509.ExtensionNotFound:
        is_ca, path_length = False, None
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        can_sign = ku.key_cert_sign
    except x509.ExtensionNotFound:
        can_sign = True
    try:
        eku: frozenset[x509.ObjectIdentifier] | None = frozenset(
            cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        eku = None
    weak: str | None = weak_key_reason(cert.public_key())
    weak_reason: Reason | None = Reason.WEAK_KEY if weak else None
    if weak is None:
        weak = weak_hash_reason(cert.signature_hash_algorithm)
        weak_reason = Reason.WEAK_SIGNATURE if weak else None
    subject_der, issuer_der = cert.subject.public_bytes(), cert.issuer.public_bytes()
    return _CaInfo(subject_der, issuer_der, _ski(cert), _aki(cert), subject_der == issuer_der, is_ca,
                   path_length, can_sign, eku, weak, weak_reason, _unknown_critical(cert))


class _PathFailure:
    """Why path building failed, plus the work budget of one validation."""
    __slots__ = ("depth", "reason", "detail", "budget")

    def __init__(self) -> None:
        self.depth = -1
        self.reason = Reason.UNTRUSTED_ROOT
        self.detail = "no path to a configured anchor"
        # Signature checks allowed for one validation: a peer sending many same-named CAs must not
        # make path building exponential.
        self.budget = MAX_SIGNATURE_CHECKS

    def note(self, depth: int, reason: Reason, detail: str) -> None:
        # The failure seen deepest in the chain explains best why no path exists.
        if depth >= self.depth:
            self.depth, self.reason, self.detail = depth, reason, detail


class Validator:
    """Path validation against configured anchors (any PEM bundle, e.g. the real IGC Santé chains)."""

    def __init__(self, anchors: Iterable[x509.Certificate], intermediates: Iterable[x509.Certificate] = (),
                 crls: CrlStore | None = None, *, fail_closed: bool = True, check_revocation: bool = True,
                 ocsp: OcspChecker | None = None) -> None:
        self._anchors: dict[bytes, list[x509.Certificate]] = {}
        self._intermediates: dict[bytes, list[x509.Certificate]] = {}
        # Canonical CA certificate objects: configured ones, plus intermediates peers sent recently.
        # Caches are keyed by id() of a canonical object, which _known keeps alive, so ids stay unique;
        # a certificate from outside is mapped to its canonical object by content (one hash per call).
        self._canonical: dict[x509.Certificate, x509.Certificate] = {}
        self._known: dict[int, x509.Certificate] = {}
        self._configured_ids: set[int] = set()
        self._anchor_ids: set[int] = set()
        self._info: dict[int, _CaInfo] = {}
        self._sig_cache: dict[tuple[int, int], bool] = {}
        for cert in anchors:
            cert = self._canon(cert)
            if id(cert) in self._anchor_ids:
                continue
            self._anchor_ids.add(id(cert))
            self._configured_ids.add(id(cert))
            self._anchors.setdefault(self._ca(cert).subject_der, []).append(cert)
        if not self._anchor_ids:
            raise ValueError("at least one trust anchor is required")
        for cert in intermediates:
            cert = self._canon(cert)
            if id(cert) in self._configured_ids:
                continue
            self._configured_ids.add(id(cert))
            self._intermediates.setdefault(self._ca(cert).subject_der, []).append(cert)
        self.crls = crls
        self.fail_closed = fail_closed
        self.check_revocation = check_revocation
        self.ocsp = ocsp

    @classmethod
    def from_files(cls, anchors_path: str | Path, intermediates_path: str | Path | None = None,
                   crl_paths: Iterable[str | Path] = (), *, fail_closed: bool = True,
                   check_revocation: bool = True, ocsp: OcspChecker | None = None) -> Validator:
        """Anchors/intermediates from PEM bundles or DER files; CRLs verified on load.

        Raises pki.errors.PkiError subclasses on unreadable input (a configuration error, not a
        certificate decision): MalformedInput, CrlError (CRL not signed by its known issuer).
        """
        anchors = load_certificates(anchors_path)
        intermediates = load_certificates(intermediates_path) if intermediates_path else []
        # CRLs of CAs not configured here (intermediates sent by peers) are verified at first use.
        crls = crl_store_from_files(crl_paths, [*anchors, *intermediates], require_known_issuer=False)
        return cls(anchors, intermediates, crls, fail_closed=fail_closed,
                   check_revocation=check_revocation, ocsp=ocsp)

    @property
    def anchors(self) -> list[x509.Certificate]:
        return [c for certs in self._anchors.values() for c in certs]

    @property
    def intermediates(self) -> list[x509.Certificate]:
        return [c for certs in self._intermediates.values() for c in certs]

    # -- caches ------------------------------------------------------------------------------
    def _canon(self, cert: x509.Certificate) -> x509.Certificate:
        found = self._canonical.get(cert)  # content equality (DER), never identity of bytes alone
        if found is not None:
            return found
        if len(self._known) > _CACHE_LIMIT:
            self._evict()
        self._canonical[cert] = cert
        self._known[id(cert)] = cert
        return cert

    def _evict(self) -> None:
        keep = self._configured_ids
        self._canonical = {c: c for c in self._canonical if id(c) in keep}
        self._known = {i: c for i, c in self._known.items() if i in keep}
        self._info = {i: v for i, v in self._info.items() if i in keep}
        self._sig_cache.clear()

    def _ca(self, cert: x509.Certificate) -> _CaInfo:
        """Facts about a canonical CA certificate, computed once."""
        info = self._info.get(id(cert))
        if info is None:
            info = _ca_info(cert)
            self._info[id(cert)] = info
        return info

    def _signed_by(self, child: x509.Certificate, issuer: x509.Certificate, *, cache: bool) -> bool:
        """RFC 5280 §6.1.3 (a)(1). Cached only between canonical CA certificates (intermediates repeat);
        the leaf's signature is verified on every validation."""
        key = (id(child), id(issuer))
        if cache:
            hit = self._sig_cache.get(key)
            if hit is not None:
                return hit
        try:
            child.verify_directly_issued_by(issuer)
            ok = True
        except Exception:  # InvalidSignature, ValueError (name mismatch), TypeError (key type)
            ok = False
        if cache:
            self._sig_cache[key] = ok
        return ok

    # -- path building -----------------------------------------------------------------------
    def _candidates(self, issuer_der: bytes, aki: bytes | None,
                    extra: dict[bytes, list[x509.Certificate]]) -> list[tuple[x509.Certificate, bool]]:
        out: list[tuple[x509.Certificate, bool]] = []
        for cert in self._anchors.get(issuer_der, ()):
            out.append((cert, True))
        for source in (self._intermediates, extra):
            for cert in source.get(issuer_der, ()):
                if id(cert) not in self._anchor_ids:
                    out.append((cert, False))
        if aki is not None:
            # RFC 5280 §4.2.1.1: the AKI names the issuer's key; skip same-named CAs with other keys.
            out = [(c, a) for c, a in out if self._ca(c).ski in (None, aki)]
        return out

    def _build(self, path: list[x509.Certificate], issuer_der: bytes, aki: bytes | None,
               extra: dict[bytes, list[x509.Certificate]], failure: _PathFailure) -> Iterator[list[x509.Certificate]]:
        """Yield complete paths (leaf … anchor), depth first, anchors before intermediates."""
        child = path[-1]
        depth = len(path)
        if depth > 1 and self._ca(child).self_issued:
            # A self-signed CA that is not an anchor ends the chain: its issuer is itself.
            failure.note(depth, Reason.UNTRUSTED_ROOT, f"root {_dn(child.subject)} is not a configured anchor")
            return
        if depth > MAX_PATH_LENGTH:
            failure.note(depth, Reason.PATH_TOO_LONG, f"no anchor within {MAX_PATH_LENGTH} certificates")
            return
        candidates = self._candidates(issuer_der, aki, extra)
        if not candidates:
            if depth == 1:
                if issuer_der == child.subject.public_bytes():
                    failure.note(depth, Reason.UNTRUSTED_ROOT,
                                 f"self-signed certificate {_dn(child.subject)} is not a configured anchor")
                else:
                    failure.note(depth, Reason.MISSING_INTERMEDIATE,
                                 f"issuer {_dn(child.issuer)} of the certificate is unknown "
                                 "(intermediate missing or not configured)")
            else:
                failure.note(depth, Reason.UNTRUSTED_ROOT,
                             f"chain ends at {_dn(child.issuer)}, which is not a configured anchor")
            return
        for cand, is_anchor in candidates:
            if any(c is cand for c in path):
                continue
            if failure.budget <= 0:
                failure.note(depth, Reason.PATH_TOO_LONG, "path building gave up: too many candidate issuers")
                return
            failure.budget -= 1
            if not self._signed_by(child, cand, cache=depth > 1):
                failure.note(depth, Reason.BAD_SIGNATURE,
                             f"signature of {_dn(child.subject)} does not verify with the key of {_dn(cand.subject)}")
                continue
            if is_anchor:
                yield [*path, cand]
                continue
            info = self._ca(cand)
            yield from self._build([*path, cand], info.issuer_der, info.aki, extra, failure)

    # -- validation --------------------------------------------------------------------------
    def validate(self, leaf: x509.Certificate, role: Role, now: datetime,
                 extra_intermediates: Iterable[x509.Certificate] = ()) -> Decision:
        """Validate ``leaf`` for ``role`` at ``now``; a bad certificate yields a Decision, never an exception."""
        if now.tzinfo is None:
            now = now.replace(tzinfo=UTC)  # a naive time is taken as UTC
        try:
            return self._validate(leaf, role, now, extra_intermediates)
        except Exception as exc:  # a certificate we cannot even read
            return _fail(Reason.MALFORMED, f"unreadable certificate ({type(exc).__name__}: {exc})", leaf)

    def _validate(self, leaf: x509.Certificate, role: Role, now: datetime,
                  extra_intermediates: Iterable[x509.Certificate]) -> Decision:
        # 1. The leaf itself.
        try:
            bad_critical = _unknown_critical(leaf)
            leaf_aki = _aki(leaf)
            issuer_der = leaf.issuer.public_bytes()
        except ValueError as exc:
            return _fail(Reason.MALFORMED, f"malformed certificate ({exc})", leaf)
        if bad_critical:
            return _fail(Reason.MALFORMED, bad_critical, leaf)
        weak_sig = weak_hash_reason(leaf.signature_hash_algorithm)
        if weak_sig:
            return _fail(Reason.WEAK_SIGNATURE, f"certificate uses a {weak_sig}", leaf)
        weak_key = weak_key_reason(leaf.public_key())
        if weak_key:
            return _fail(Reason.WEAK_KEY, f"certificate has a {weak_key}", leaf)

        # 2. Path building.
        extra: dict[bytes, list[x509.Certificate]] = {}
        for n, sent in enumerate(extra_intermediates):
            if n >= MAX_EXTRA_INTERMEDIATES:
                break
            if sent is leaf:
                continue
            try:
                cert = self._canon(sent)
                if id(cert) in self._configured_ids:
                    continue  # already a candidate
                extra.setdefault(self._ca(cert).subject_der, []).append(cert)
            except ValueError:
                continue  # an unreadable extra certificate simply cannot be used
        failure = _PathFailure()
        first: Decision | None = None
        for n, path in enumerate(self._build([leaf], issuer_der, leaf_aki, extra, failure)):
            decision = self._check_path(leaf, role, now, path)
            if decision.ok:
                return decision
            first = first or decision
            if n + 1 >= MAX_CANDIDATE_PATHS:
                break
        if first is not None:
            return first
        return _fail(failure.reason, failure.detail, leaf)

    def _check_path(self, leaf: x509.Certificate, role: Role, now: datetime,
                    path: list[x509.Certificate]) -> Decision:
        # 3. Validity of every certificate (anchor included) and strength of the issuers.
        for cert in path:
            if now < cert.not_valid_before_utc:
                return _fail(Reason.NOT_YET_VALID, f"{_dn(cert.subject)} is not valid before "
                             f"{cert.not_valid_before_utc.isoformat()}", leaf, path)
            if now > cert.not_valid_after_utc:
                return _fail(Reason.EXPIRED, f"{_dn(cert.subject)} expired at "
                             f"{cert.not_valid_after_utc.isoformat()}", leaf, path)
        for i, cert in enumerate(path[1:], start=1):
            info = self._ca(cert)
            is_anchor = i == len(path) - 1
            if info.bad_critical and not is_anchor:
                return _fail(Reason.MALFORMED, f"{_dn(cert.subject)}: {info.bad_critical}", leaf, path)
            # The anchor's self-signature is not relied upon, only its key (RFC 5280 §6.1.1 (d)).
            if info.weak_reason is not None and (info.weak_reason is Reason.WEAK_KEY or not is_anchor):
                return _fail(info.weak_reason, f"{_dn(cert.subject)} has a {info.weak}", leaf, path)

            # 4. CA constraints (RFC 5280 §6.1.4 (k)-(n)).
            if not info.is_ca:
                return _fail(Reason.NOT_A_CA, f"{_dn(cert.subject)} is not a CA (basicConstraints)", leaf, path)
            if not info.can_sign_certs:
                return _fail(Reason.NOT_A_CA, f"{_dn(cert.subject)} lacks keyCertSign", leaf, path)
            intermediates_below = i - 1
            if info.path_length is not None and intermediates_below > info.path_length:
                return _fail(Reason.PATH_TOO_LONG, f"{_dn(cert.subject)} allows {info.path_length} "
                             f"intermediate(s) below it, path has {intermediates_below}", leaf, path)

        # 5. Role: key usage and extended key usage.
        decision = self._check_role(leaf, role, path)
        if decision is not None:
            return decision

        # 6. Revocation.
        notes: list[str] = []
        if self.check_revocation:
            for i in range(len(path) - 1):
                decision = self._check_revocation(path[i], path[i + 1], now, leaf, path, notes)
                if decision is not None:
                    return decision
        return Decision(True, Reason.OK, "; ".join(notes), leaf.subject, tuple(path))

    def _check_role(self, leaf: x509.Certificate, role: Role,
                    path: list[x509.Certificate]) -> Decision | None:
        if role is Role.ANY:
            return None
        try:
            ku: x509.KeyUsage | None = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
        except x509.ExtensionNotFound:
            ku = None
        if ku is not None:
            if role is Role.TLS_SERVER:
                # RFC 5246 §7.4.2 / RFC 8446 §4.4.2.4: ECDHE signing (or RSA key transport in old TLS).
                fits = ku.digital_signature or ku.key_encipherment
            else:
                fits = ku.digital_signature
            if not fits:
                return _fail(Reason.WRONG_KEY_USAGE, f"keyUsage does not allow {role.value}", leaf, path)
        wanted = _ROLE_EKU[role]
        try:
            eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            # IGC Santé products always carry an EKU; a certificate without one is not for this role.
            return _fail(Reason.WRONG_EKU, f"no extendedKeyUsage; {role.value} needs {wanted._name}", leaf, path)
        if wanted not in eku:
            names = ", ".join(o._name for o in eku)
            return _fail(Reason.WRONG_EKU, f"extendedKeyUsage [{names}] lacks {wanted._name} for {role.value}",
                         leaf, path)
        for cert in path[1:-1]:
            ca_eku = self._ca(cert).eku
            if ca_eku is not None and wanted not in ca_eku and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in ca_eku:
                return _fail(Reason.WRONG_EKU, f"intermediate {_dn(cert.subject)} is restricted to other "
                             "purposes", leaf, path)
        return None

    def _check_revocation(self, cert: x509.Certificate, issuer: x509.Certificate, now: datetime,
                          leaf: x509.Certificate, path: list[x509.Certificate], notes: list[str]) -> Decision | None:
        if self.ocsp is not None:
            result = self.ocsp.check(cert, issuer, now)
            if result is not None:
                if result.status is OcspStatus.REVOKED:
                    reason = result.revocation_reason.value if result.revocation_reason else "unspecified"
                    return _fail(Reason.REVOKED, f"{_dn(cert.subject)} revoked (OCSP, {reason})", leaf, path)
                if result.status is OcspStatus.GOOD:
                    return None
                notes.append(f"OCSP for {_dn(cert.subject)} inconclusive ({result.detail}); CRL used")
        if self.crls is None:
            state, detail, entry = CrlState.UNAVAILABLE, "no CRL store configured", None
        else:
            lookup = self.crls.lookup(issuer, now, self._ca(issuer).subject_der, for_ca=cert is not leaf)
            state, detail, entry = lookup.state, lookup.detail, lookup.entry
        if state is CrlState.GOOD and entry is not None:
            if entry.is_revoked(cert.serial_number):
                revoked = entry.revocation(cert.serial_number)
                extra = ""
                if revoked is not None:
                    extra = f" on {revoked.revocation_date_utc.date().isoformat()}"
                    try:
                        extra += f" ({revoked.extensions.get_extension_for_class(x509.CRLReason).value.reason.value})"
                    except x509.ExtensionNotFound:
                        pass
                return _fail(Reason.REVOKED, f"{_dn(cert.subject)} revoked{extra}", leaf, path)
            return None
        # An expired CRL still proves a revocation it lists (RFC 5280 §6.3.3 keeps the stale answer
        # unusable for "good", not for "revoked").
        if entry is not None and state is CrlState.EXPIRED and entry.is_revoked(cert.serial_number):
            return _fail(Reason.REVOKED, f"{_dn(cert.subject)} revoked (listed in an expired CRL)", leaf, path)
        reason = _CRL_REASON[state]
        if self.fail_closed:
            return _fail(reason, detail, leaf, path)
        notes.append(f"revocation of {_dn(cert.subject)} not checked: {reason.value} ({detail})")
        return None


def validate_pem_chain(validator: Validator, data: bytes, role: Role, now: datetime) -> Decision:
    """Convenience: a PEM chain (leaf first, then intermediates) from a file or a peer."""
    try:
        certs = parse_certificates(data, source="chain")
    except MalformedInput as exc:
        return _fail(Reason.MALFORMED, str(exc), None)
    return validator.validate(certs[0], role, now, certs[1:])
