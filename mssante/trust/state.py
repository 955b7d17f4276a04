"""The current trust policy, swapped atomically when a refresh installs a new liste blanche.

Listeners read `state.policy` once per transaction (SPECS.md §1: a delisted domain is refused from the next
refresh on); a swap is a single attribute assignment, atomic for readers in the event loop and in threads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime

from mssante.trust.listeblanche import ListeBlanche
from mssante.trust.policy import CertificateDnCache, TrustPolicy

EMPTY_SHA256 = "0" * 64


def empty_liste() -> ListeBlanche:
    """A list that trusts nobody: the state before the first successful load (fail closed)."""
    return ListeBlanche(generated=None, entries=(), problems=(), sha256=EMPTY_SHA256, by_domain={})


class TrustState:
    def __init__(self, policy: TrustPolicy | None = None, *, local_domains: Iterable[str] = ()) -> None:
        self._dn_cache = CertificateDnCache()
        self._local_domains = tuple(local_domains)
        self._policy = policy or TrustPolicy(empty_liste(), self._local_domains, dn_cache=self._dn_cache)
        self.installed_at: datetime | None = None
        self._listeners: list[Callable[[TrustPolicy], None]] = []

    @property
    def policy(self) -> TrustPolicy:
        return self._policy

    @property
    def liste(self) -> ListeBlanche:
        return self._policy.liste

    @property
    def loaded(self) -> bool:
        return self._policy.liste.sha256 != EMPTY_SHA256

    def swap(self, policy: TrustPolicy) -> TrustPolicy:
        """Install `policy`; return the previous one."""
        old, self._policy = self._policy, policy
        for listener in tuple(self._listeners):
            listener(policy)
        return old

    def install(self, liste: ListeBlanche, now: datetime | None = None) -> TrustPolicy:
        """Build a policy for `liste` (same local domains, shared certificate cache) and swap it in."""
        policy = TrustPolicy(liste, self._local_domains, dn_cache=self._dn_cache)
        self.swap(policy)
        self.installed_at = now
        return policy

    def on_swap(self, listener: Callable[[TrustPolicy], None]) -> None:
        """Call `listener(new_policy)` after each swap (e.g. metrics gauges)."""
        self._listeners.append(listener)
