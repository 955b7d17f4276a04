"""CRL store: verified, cached CRLs per issuing CA with O(1) serial lookups.

SPECS.md §6 "Revocation": CRLs are published daily; keep the last valid CRL. RFC 5280 §5 and §6.3.
- A CRL's signature is verified once, when it is loaded (against the known CA with the CRL's issuer
  name and key identifier) or, for a CRL whose issuer is not known yet, at its first lookup.
- Revoked serials are held in a ``set`` per CRL: a lookup is one hash probe (100,000 entries load in
  well under a second: the DER is parsed by cryptography's Rust code and only serials are copied).
- ``refresh`` re-reads every source (files or URLs through a caller-provided fetch function). A failed
  or bad download never replaces the last good CRL, which stays in use until its nextUpdate passes;
  an older CRL (lower thisUpdate / CRL number) never replaces a newer one (rollback protection).
The store never decides acceptance: pki.validation maps its answers to Reason codes.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtensionOID

from pki.errors import CrlError, MalformedInput, PkiError, UnknownIssuer
from pki.files import parse_crl, read_bytes

Fetch = Callable[[str], bytes]


def default_fetch(url: str) -> bytes:  # pragma: no cover - network
    """HTTP(S) download with a timeout; callers run refresh() in a worker thread."""
    if not url.startswith(("http://", "https://")):
        raise PkiError(f"{url}: only http(s) URLs can be fetched")
    with urllib.request.urlopen(url, timeout=20) as resp:  # noqa: S310 - scheme checked above
        data: bytes = resp.read(64 * 1024 * 1024 + 1)
    if len(data) > 64 * 1024 * 1024:
        raise PkiError(f"{url}: CRL larger than 64 MiB")
    return data


class CrlState(str, Enum):
    GOOD = "GOOD"
    EXPIRED = "CRL_EXPIRED"
    BAD_SIGNATURE = "CRL_BAD_SIGNATURE"
    UNAVAILABLE = "CRL_UNAVAILABLE"


@dataclass(frozen=True)
class CrlLookup:
    state: CrlState
    detail: str
    entry: CrlEntry | None = None

    @property
    def ok(self) -> bool:
        return self.state is CrlState.GOOD


@dataclass(eq=False)
class CrlEntry:
    crl: x509.CertificateRevocationList
    issuer_der: bytes
    serials: frozenset[int]
    this_update: datetime
    next_update: datetime | None
    crl_number: int | None
    key_id: bytes | None
    source: str
    scope: str = "all"  # "users" / "cas": issuingDistributionPoint limits the CRL to end-entity / CA certs
    # Signature verified against an issuer certificate? Each (CRL, issuer) pair is checked once.
    # Keyed by content (Certificate equality) with an id() fast path for the same object.
    verified: dict[x509.Certificate, bool] = field(default_factory=dict)
    _by_id: dict[int, tuple[x509.Certificate, bool]] = field(default_factory=dict)

    def covers(self, is_ca: bool) -> bool:
        return self.scope == "all" or (self.scope == "cas") == is_ca

    def is_revoked(self, serial: int) -> bool:
        return serial in self.serials

    def revocation(self, serial: int) -> x509.RevokedCertificate | None:
        """Details (date, reason) of a revoked serial; only called on a hit."""
        if serial not in self.serials:
            return None
        return self.crl.get_revoked_certificate_by_serial_number(serial)

    def newer_than(self, other: CrlEntry) -> bool:
        if self.crl_number is not None and other.crl_number is not None and self.crl_number != other.crl_number:
            return self.crl_number > other.crl_number
        return self.this_update > other.this_update


def _key_id(cert: x509.Certificate) -> bytes | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return None


def _entry(crl: x509.CertificateRevocationList, source: str) -> CrlEntry:
    try:
        number: int | None = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        number = None
    try:
        aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    except x509.ExtensionNotFound:
        aki = None
    scope = _scope(crl, source)
    return CrlEntry(
        crl=crl, issuer_der=crl.issuer.public_bytes(), serials=frozenset(r.serial_number for r in crl),
        this_update=crl.last_update_utc, next_update=crl.next_update_utc, crl_number=number,
        key_id=aki, source=source, scope=scope)


_UNDERSTOOD_CRL_EXTENSIONS = {
    ExtensionOID.CRL_NUMBER, ExtensionOID.AUTHORITY_KEY_IDENTIFIER, ExtensionOID.ISSUING_DISTRIBUTION_POINT,
}


def _scope(crl: x509.CertificateRevocationList, source: str) -> str:
    """RFC 5280 §5.2: refuse what we cannot interpret safely; return "all", "users" or "cas"."""
    for ext in crl.extensions:
        if ext.oid == ExtensionOID.DELTA_CRL_INDICATOR:
            raise MalformedInput(f"{source}: delta CRLs are not supported (load the full CRL)")
        if ext.critical and ext.oid not in _UNDERSTOOD_CRL_EXTENSIONS:
            raise MalformedInput(f"{source}: unsupported critical CRL extension {ext.oid.dotted_string}")
    try:
        idp = crl.extensions.get_extension_for_class(x509.IssuingDistributionPoint).value
    except x509.ExtensionNotFound:
        return "all"
    if idp.indirect_crl or idp.only_some_reasons or idp.only_contains_attribute_certs:
        raise MalformedInput(f"{source}: partitioned or indirect CRLs are not supported (RFC 5280 §5.2.5)")
    if idp.only_contains_user_certs:
        return "users"
    if idp.only_contains_ca_certs:
        return "cas"
    return "all"


def _signature_ok(entry: CrlEntry, issuer: x509.Certificate) -> bool:
    fast = entry._by_id.get(id(issuer))
    if fast is not None and fast[0] is issuer:
        return fast[1]
    cached = entry.verified.get(issuer)
    if cached is None:
        try:
            cached = bool(entry.crl.is_signature_valid(issuer.public_key()))  # type: ignore[arg-type]
        except Exception:  # unsupported key type, malformed signature
            cached = False
        entry.verified[issuer] = cached
    if len(entry._by_id) > 64:
        entry._by_id.clear()
    entry._by_id[id(issuer)] = (issuer, cached)  # holds a reference: the id cannot be reused meanwhile
    return cached


class CrlStore:
    """CRLs by issuer; thread-safe for readers (entries are swapped atomically, never mutated)."""

    def __init__(self, issuers: Iterable[x509.Certificate] = (), *, fetch: Fetch | None = None,
                 require_known_issuer: bool = False) -> None:
        self._issuers: dict[bytes, list[x509.Certificate]] = {}
        for cert in issuers:
            self.add_issuer(cert)
        self._fetch = fetch or default_fetch
        self._require_known_issuer = require_known_issuer
        self._good: dict[bytes, dict[bytes, CrlEntry]] = {}  # issuer name DER -> key id -> newest good CRL
        self._unverified: dict[bytes, list[CrlEntry]] = {}
        self._errors: dict[bytes, tuple[CrlState, str]] = {}
        self._sources: list[str] = []
        self.last_errors: list[tuple[str, str]] = []

    def add_issuer(self, cert: x509.Certificate) -> None:
        self._issuers.setdefault(cert.subject.public_bytes(), []).append(cert)

    @property
    def sources(self) -> list[str]:
        return list(self._sources)

    # -- loading -----------------------------------------------------------------------------
    def load(self, data: bytes, *, source: str = "CRL") -> CrlEntry:
        """Parse and verify one CRL; raise CrlError (bad signature) / MalformedInput / UnknownIssuer.

        A CRL whose issuer is unknown is kept unverified (verified at first lookup) unless the store
        was built with ``require_known_issuer``.
        """
        try:
            crl = parse_crl(data, source=source)
            entry = _entry(crl, source)
        except MalformedInput:
            raise
        except Exception as exc:  # malformed extensions, bad dates
            raise MalformedInput(f"{source}: malformed CRL ({exc})") from exc
        known = self._issuers.get(entry.issuer_der, [])
        if not known:
            if self._require_known_issuer:
                raise UnknownIssuer(f"{source}: CRL issuer {crl.issuer.rfc4514_string()} is not a known CA")
            self._unverified.setdefault(entry.issuer_der, []).append(entry)
            return entry
        issuers = [c for c in known if entry.key_id is None or _key_id(c) in (None, entry.key_id)]
        if not any(_signature_ok(entry, c) for c in issuers):
            # RFC 5280 §6.3.3 (f): the CRL must be signed by the certificate issuer's key.
            msg = f"{source}: CRL signature does not verify with the key of {crl.issuer.rfc4514_string()}"
            self._errors[entry.issuer_der] = (CrlState.BAD_SIGNATURE, msg)
            raise CrlError(msg, CrlState.BAD_SIGNATURE.value)
        self._install(entry)
        return entry

    def _install(self, entry: CrlEntry) -> None:
        by_key = dict(self._good.get(entry.issuer_der, {}))
        slot = (entry.key_id or b"") + b"|" + entry.scope.encode()
        old = by_key.get(slot)
        if old is not None and old.newer_than(entry):
            return  # never roll back to an older CRL
        by_key[slot] = entry
        self._good[entry.issuer_der] = by_key  # atomic swap for concurrent readers
        self._errors.pop(entry.issuer_der, None)

    def load_file(self, path: str | Path) -> CrlEntry:
        return self.load(read_bytes(path, "CRL file"), source=str(path))

    def add_source(self, source: str | Path) -> None:
        """Remember a file path or URL to (re)load on refresh()."""
        s = str(source)
        if s not in self._sources:
            self._sources.append(s)

    def refresh(self) -> list[tuple[str, str]]:
        """Reload every source; returns (source, error) pairs. Failures keep the last good CRL."""
        errors: list[tuple[str, str]] = []
        for source in self._sources:
            try:
                if source.startswith(("http://", "https://")):
                    data = self._fetch(source)
                else:
                    data = read_bytes(source.removeprefix("file://"), "CRL file")
                self.load(data, source=source)
            except Exception as exc:
                errors.append((source, str(exc)))
        self.last_errors = errors
        return errors

    # -- lookups -----------------------------------------------------------------------------
    def lookup(self, issuer: x509.Certificate, now: datetime, issuer_der: bytes | None = None,
               *, for_ca: bool = False) -> CrlLookup:
        """The CRL to use at ``now`` for a certificate issued by ``issuer`` (a CA one when ``for_ca``)."""
        name = issuer_der if issuer_der is not None else issuer.subject.public_bytes()
        pending = self._unverified.pop(name, None)
        if pending:
            # CRLs loaded before their issuer was known are verified at the first lookup after they
            # arrive, so a newer one replaces an installed one instead of waiting behind it. One that
            # does not verify is dropped and remembered as a bad-signature error (RFC 5280 §6.3.3 (f)).
            for e in pending:
                if _signature_ok(e, issuer):
                    self._install(e)
                else:
                    self._errors[name] = (CrlState.BAD_SIGNATURE,
                                          f"CRL for {issuer.subject.rfc4514_string()} is not signed by its key")
        best = self._best(name, issuer, for_ca)
        if best is None:
            state, detail = self._errors.get(name, (CrlState.UNAVAILABLE, ""))
            if state is CrlState.GOOD:  # pragma: no cover - defensive
                state = CrlState.UNAVAILABLE
            return CrlLookup(state, detail or f"no CRL for {issuer.subject.rfc4514_string()}")
        # RFC 5280 §6.3.3 (a): the CRL must be current (thisUpdate <= now <= nextUpdate).
        if best.next_update is None:
            return CrlLookup(CrlState.EXPIRED, f"CRL from {best.source} has no nextUpdate", best)
        if now > best.next_update:
            return CrlLookup(CrlState.EXPIRED, f"CRL from {best.source} expired at {best.next_update.isoformat()}",
                             best)
        if now < best.this_update:
            return CrlLookup(CrlState.UNAVAILABLE,
                             f"CRL from {best.source} is not valid before {best.this_update.isoformat()}", best)
        return CrlLookup(CrlState.GOOD, "", best)

    def _best(self, name: bytes, issuer: x509.Certificate, for_ca: bool) -> CrlEntry | None:
        best: CrlEntry | None = None
        for entry in self._good.get(name, {}).values():
            if not entry.covers(for_ca):
                continue
            if _signature_ok(entry, issuer) and (best is None or entry.newer_than(best)):
                best = entry
        return best

    def entries(self) -> list[CrlEntry]:
        return [e for by_key in self._good.values() for e in by_key.values()]


def crl_store_from_files(paths: Iterable[str | Path], issuers: Iterable[x509.Certificate] = (),
                         *, require_known_issuer: bool = True, fetch: Fetch | None = None) -> CrlStore:
    """A store loaded from files/URLs (remembered as sources for refresh); errors propagate."""
    store = CrlStore(issuers, fetch=fetch, require_known_issuer=require_known_issuer)
    for p in paths:
        s = str(p)
        store.add_source(s)
        if s.startswith(("http://", "https://")):
            store.load(store._fetch(s), source=s)
        else:
            store.load_file(s)
    return store
