"""Client certificate decisions cached per certificate (SPECS.md §1: validated per connection).

Every connection still presents its certificate in a full TLS handshake, which OpenSSL verifies (chain
to our anchors, signatures, key possession); what is cached is pki's decision about that certificate, so a
peer opening many connections does not rebuild its path and re-check its CRL each time. A cached
decision is used only while all of these hold, otherwise the certificate is validated again:

- the same Validator object (a reload of anchors/intermediates/CRL files makes a new one);
- the same CRLs in its store (a refreshed CRL, which may revoke the certificate, is a new entry);
- no OCSP checker configured (its answers have their own lifetime);
- `now` within [time of the check, earliest of: every certificate of the path's notAfter, every CRL's
  nextUpdate, the check + `max_age`]; a clock that went backwards is a miss.

Only positive decisions whose revocation was checked are cached: a refusal is recomputed (it is the
rare case, and a CRL or an intermediate arriving may turn it into an acceptance), and so is an acceptance
noting that revocation could not be checked (fail-open).

Keyed by the certificate object, as trust.policy.CertificateDnCache: cryptography hashes and compares
certificates by their whole DER (in Rust), so a new object for the same certificate hits, and no DER
serialisation and SHA-256 is needed per connection.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

_KEY = "smtp.cert_decisions"


class CertDecisionCache:
    def __init__(self, max_age: float = 3600.0, max_entries: int = 4096) -> None:
        self.max_age = dt.timedelta(seconds=max_age)
        self.max_entries = max_entries
        # certificate, role -> (validator, CRL entries, checked at, valid until, decision)
        self._items: dict[tuple[Any, str], tuple[Any, tuple[Any, ...], dt.datetime, dt.datetime, Any]] = {}
        self.hits = 0
        self.misses = 0

    @staticmethod
    def _crls(validator: Any) -> tuple[Any, ...] | None:
        """The CRL entries the validator would use now (identity matters), or None: do not cache."""
        if getattr(validator, "ocsp", None) is not None:
            return None
        store = getattr(validator, "crls", None)
        if store is None:
            return ()
        try:
            return tuple(store.entries())
        except Exception:  # an unknown store: no caching
            return None

    def validate(self, validator: Any, cert: Any, role: Any, now: dt.datetime) -> Any:
        if now.tzinfo is None:
            now = now.replace(tzinfo=dt.timezone.utc)
        crls = self._crls(validator)
        if crls is None:
            return validator.validate(cert, role, now)
        key = (cert, str(role))
        hit = self._items.get(key)
        if hit is not None:
            v, entries, checked, until, decision = hit
            if (v is validator and checked <= now < until and len(entries) == len(crls)
                    and all(a is b for a, b in zip(entries, crls, strict=True))):
                self.hits += 1
                return decision
            del self._items[key]
        self.misses += 1
        decision = validator.validate(cert, role, now)
        # An acceptance with notes is one whose revocation was NOT checked (revocation_fail_closed off and
        # no usable CRL for an issuer): not cached. A CRL arriving for an issuer the store does not know
        # yet is kept unverified until the next lookup, invisible to entries(), so only a fresh validation
        # would see that it revokes the certificate.
        if decision.ok and not getattr(decision, "detail", ""):
            until = now + self.max_age
            for c in decision.chain or (cert,):
                until = min(until, c.not_valid_after_utc)
            for e in crls:
                nu = getattr(e, "next_update", None)
                if nu is not None:
                    until = min(until, nu if nu.tzinfo is not None else nu.replace(tzinfo=dt.timezone.utc))
            if until > now:
                if len(self._items) >= self.max_entries:
                    self._items.clear()
                self._items[key] = (validator, crls, now, until, decision)
        return decision


def cert_cache_for(services: Any) -> CertDecisionCache:
    c = services.extras.get(_KEY)
    if c is None:
        c = services.extras[_KEY] = CertDecisionCache()
    return c  # type: ignore[no-any-return]
