"""Trust-space enforcement decisions (SPECS.md §1 "Operator-to-operator transport").

- inbound: a peer MTA may send for `sender_domain` only if its certificate's subject DN is listed for that
  domain in the liste blanche. Chain, validity and revocation are checked by pki.validation beforehand;
  this module checks the liste blanche only.
- outbound: a domain is deliverable only if it is in the trust space; its MX must present one of the listed DNs.
- submission: a local user may write only to trust-space domains and our own domains.

Decisions are typed values with a reason code; pure (no I/O, no clock: `now` is a parameter, kept for
the interface and for decisions that will depend on time). Fast path: one dict lookup for the domain, a
cached canonical DN for the certificate (keyed by its DER), one frozenset membership test.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from cryptography import x509

from mssante.trust.dn import DistinguishedName, dn_from_name
from mssante.trust.listeblanche import ListeBlanche, normalise_domain


class PeerReason(StrEnum):
    ACCEPT = "ACCEPT"
    NO_CERTIFICATE = "NO_CERTIFICATE"
    DOMAIN_NOT_LISTED = "DOMAIN_NOT_LISTED"
    DN_NOT_LISTED_FOR_DOMAIN = "DN_NOT_LISTED_FOR_DOMAIN"  # the DN is listed, but for other domains
    DN_NOT_LISTED = "DN_NOT_LISTED"  # the DN is listed nowhere


class OutboundReason(StrEnum):
    IN_TRUST_SPACE = "IN_TRUST_SPACE"
    LOCAL = "LOCAL"
    DOMAIN_NOT_LISTED = "DOMAIN_NOT_LISTED"


class SubmissionReason(StrEnum):
    LOCAL = "LOCAL"
    IN_TRUST_SPACE = "IN_TRUST_SPACE"
    DOMAIN_NOT_LISTED = "DOMAIN_NOT_LISTED"


@dataclass(frozen=True, slots=True)
class PeerDecision:
    accept: bool
    reason: PeerReason
    detail: str = ""
    peer_dn: DistinguishedName | None = None

    @property
    def ok(self) -> bool:
        return self.accept


@dataclass(frozen=True, slots=True)
class OutboundDecision:
    ok: bool
    reason: OutboundReason
    detail: str = ""
    allowed_dns: frozenset[DistinguishedName] = frozenset()  # DNs the receiving MX may present

    @property
    def accept(self) -> bool:
        return self.ok


@dataclass(frozen=True, slots=True)
class SubmissionDecision:
    ok: bool
    reason: SubmissionReason
    detail: str = ""

    @property
    def accept(self) -> bool:
        return self.ok


class CertificateDnCache:
    """Canonical subject DN per certificate; bounded (cleared when full).

    Keyed by the certificate object: cryptography hashes and compares certificates by their DER in Rust
    (~2 µs), three times cheaper than `public_bytes(DER)`; a new object for the same certificate hits too.

    Shared across policy swaps (TrustState owns one), so a refresh does not cold-start it.
    """

    def __init__(self, max_entries: int = 4096) -> None:
        self._max = max_entries
        self._by_cert: dict[x509.Certificate, DistinguishedName] = {}

    def subject(self, cert: x509.Certificate) -> DistinguishedName:
        dn = self._by_cert.get(cert)
        if dn is None:
            dn = dn_from_name(cert.subject)
            if len(self._by_cert) >= self._max:
                self._by_cert.clear()
            self._by_cert[cert] = dn
        return dn


class TrustPolicy:
    """Decisions over one liste blanche snapshot. Immutable: a refresh builds a new one (TrustState swaps)."""

    def __init__(
        self,
        liste: ListeBlanche,
        local_domains: Iterable[str] = (),
        *,
        dn_cache: CertificateDnCache | None = None,
    ) -> None:
        self.liste = liste
        self.local_domains: frozenset[str] = frozenset(normalise_domain(d) for d in local_domains)
        self._dn_cache = dn_cache or CertificateDnCache()
        # domain -> keys of the canonical DNs and of their reverse (a list may write C first: accept both).
        # Most domains share one operator's DN set: intern the frozensets.
        index: dict[str, frozenset[str]] = {}
        interned: dict[frozenset[DistinguishedName], frozenset[str]] = {}
        for domain, dns in liste.by_domain.items():
            keys = interned.get(dns)
            if keys is None:
                keys = interned[dns] = frozenset(k for dn in dns for k in (dn.key, dn.reversed_key))
            index[domain] = keys
        all_keys = frozenset().union(*interned.values()) if interned else frozenset()
        self._index = index
        self._all_keys: frozenset[str] = all_keys

    # SPECS.md §1: the receiver checks the peer's subject DN is listed for the sending domain.
    def inbound(self, peer_cert: x509.Certificate | None, sender_domain: str, now: datetime) -> PeerDecision:
        if peer_cert is None:
            return PeerDecision(False, PeerReason.NO_CERTIFICATE, "peer presented no certificate")
        domain = sender_domain.lower()
        allowed = self._index.get(domain)
        if allowed is None:
            domain = normalise_domain(sender_domain)
            allowed = self._index.get(domain)
        dn = self._dn_cache.subject(peer_cert)
        if allowed is None:
            return PeerDecision(
                False, PeerReason.DOMAIN_NOT_LISTED, f"{domain} is not in the liste blanche", dn
            )
        if dn.key in allowed:
            return PeerDecision(True, PeerReason.ACCEPT, "", dn)
        if dn.key in self._all_keys:
            return PeerDecision(
                False, PeerReason.DN_NOT_LISTED_FOR_DOMAIN, f"{dn} is listed, but not for {domain}", dn
            )
        return PeerDecision(False, PeerReason.DN_NOT_LISTED, f"{dn} is not in the liste blanche", dn)

    # SPECS.md §1: the sender checks the receiving MX the same way.
    def outbound_peer(self, mx_cert: x509.Certificate | None, domain: str, now: datetime) -> PeerDecision:
        """Check the certificate presented by the MX of `domain` (relay side)."""
        return self.inbound(mx_cert, domain, now)

    def outbound(self, domain: str) -> OutboundDecision:
        d = normalise_domain(domain)
        if d in self.local_domains:
            return OutboundDecision(True, OutboundReason.LOCAL, f"{d} is local")
        dns = self.liste.by_domain.get(d)
        if dns is None:
            return OutboundDecision(
                False, OutboundReason.DOMAIN_NOT_LISTED, f"{d} is not in the liste blanche"
            )
        return OutboundDecision(True, OutboundReason.IN_TRUST_SPACE, "", dns)

    # SPECS.md §1: operators exchange mail only with each other.
    def submission(self, domain: str) -> SubmissionDecision:
        d = normalise_domain(domain)
        if d in self.local_domains:
            return SubmissionDecision(True, SubmissionReason.LOCAL)
        if d in self._index:
            return SubmissionDecision(True, SubmissionReason.IN_TRUST_SPACE)
        return SubmissionDecision(False, SubmissionReason.DOMAIN_NOT_LISTED, f"{d} is not in the trust space")

    def is_listed(self, domain: str) -> bool:
        return normalise_domain(domain) in self._index
