"""The trust space: liste blanche, enforcement policy, refresh, trust authority and operators joining."""

from mssante.trust.listeblanche import (
    ListeBlanche,
    ListeBlancheError,
    build_liste_blanche_xml,
    parse_liste_blanche,
)
from mssante.trust.policy import OutboundDecision, PeerDecision, SubmissionDecision, TrustPolicy
from mssante.trust.state import TrustState

__all__ = [
    "ListeBlanche",
    "ListeBlancheError",
    "OutboundDecision",
    "PeerDecision",
    "SubmissionDecision",
    "TrustPolicy",
    "TrustState",
    "build_liste_blanche_xml",
    "parse_liste_blanche",
]
