from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from mssante.trust.listeblanche import build_liste_blanche_xml, parse_liste_blanche
from mssante.trust.policy import OutboundReason, PeerReason, SubmissionReason, TrustPolicy
from mssante.trust.state import TrustState

from .certs import NOW, cert_for, name

GEN = datetime(2025, 3, 13, tzinfo=UTC)
A = name("mx.a.fr", "111", "Opérateur A", "Paris (75)")
B = name("mx.b.fr", "222", "B", "Nord (59)")
OTHER = name("mx.z.fr", "999", "Z", "Nord (59)")


def liste(*rows: tuple[str, str]):
    return parse_liste_blanche(build_liste_blanche_xml([(d, dn, "") for d, dn in rows], GEN))


def policy() -> TrustPolicy:
    return TrustPolicy(
        liste(
            ("a.mssante.fr", "CN=mx.a.fr,OU=111,O=Opérateur A,ST=Paris (75),C=FR"),
            ("b.mssante.fr", "cn=MX.B.FR, ou=222, o=B, st=Nord (59), c=fr"),
            ("reversed.mssante.fr", "C=FR,ST=Nord (59),O=B,OU=222,CN=mx.b.fr"),
        ),
        local_domains=["local.mssante.fr"],
    )


def test_inbound_reasons() -> None:
    p = policy()
    ok = p.inbound(cert_for(A), "a.mssante.fr", NOW)
    assert ok.accept and ok.ok and ok.reason is PeerReason.ACCEPT
    assert p.inbound(cert_for(A), "A.MSSANTE.FR.", NOW).accept
    assert p.inbound(None, "a.mssante.fr", NOW).reason is PeerReason.NO_CERTIFICATE
    assert p.inbound(cert_for(A), "nowhere.fr", NOW).reason is PeerReason.DOMAIN_NOT_LISTED
    wrong = p.inbound(cert_for(A), "b.mssante.fr", NOW)
    assert not wrong.accept and wrong.reason is PeerReason.DN_NOT_LISTED_FOR_DOMAIN
    assert "b.mssante.fr" in wrong.detail
    assert p.inbound(cert_for(OTHER), "b.mssante.fr", NOW).reason is PeerReason.DN_NOT_LISTED


def test_dn_written_country_first_is_accepted_too() -> None:
    assert policy().inbound(cert_for(B), "reversed.mssante.fr", NOW).accept


def test_outbound_and_submission() -> None:
    p = policy()
    out = p.outbound("B.mssante.fr")
    assert out.ok and out.reason is OutboundReason.IN_TRUST_SPACE and len(out.allowed_dns) == 1
    assert p.outbound("gmail.com").reason is OutboundReason.DOMAIN_NOT_LISTED
    assert p.outbound("local.mssante.fr").reason is OutboundReason.LOCAL
    assert p.outbound_peer(cert_for(B), "b.mssante.fr", NOW).accept
    assert not p.outbound_peer(cert_for(A), "b.mssante.fr", NOW).accept
    assert p.submission("a.mssante.fr").reason is SubmissionReason.IN_TRUST_SPACE
    assert p.submission("local.mssante.fr").reason is SubmissionReason.LOCAL
    refused = p.submission("gmail.com")
    assert not refused.ok and refused.reason is SubmissionReason.DOMAIN_NOT_LISTED


def test_state_swap_refuses_a_delisted_domain_on_the_next_decision() -> None:
    state = TrustState(local_domains=["local.mssante.fr"])
    assert not state.loaded
    assert state.policy.inbound(cert_for(A), "a.mssante.fr", NOW).reason is PeerReason.DOMAIN_NOT_LISTED
    seen = []
    state.on_swap(lambda p: seen.append(len(p.liste.domains)))
    state.install(
        liste(
            ("a.mssante.fr", "CN=mx.a.fr,OU=111,O=Opérateur A,ST=Paris (75),C=FR"),
            ("b.mssante.fr", "CN=mx.b.fr,OU=222,O=B,ST=Nord (59),C=FR"),
        ),
        NOW,
    )
    assert state.loaded and state.policy.inbound(cert_for(A), "a.mssante.fr", NOW).accept
    state.install(liste(("b.mssante.fr", "CN=mx.b.fr,OU=222,O=B,ST=Nord (59),C=FR")), NOW)
    assert state.policy.inbound(cert_for(A), "a.mssante.fr", NOW).reason is PeerReason.DOMAIN_NOT_LISTED
    assert state.policy.submission("local.mssante.fr").ok
    assert seen == [2, 1]


def test_real_list_decisions(real_data: Path) -> None:
    p = TrustPolicy(parse_liste_blanche((real_data / "listeblanchemssante-2025-03-13.xml").read_bytes()))
    mipih = cert_for(name("medimail-asip.mipih.fr", "318310021300028", "GIP MIPIH", "Haute-Garonne (31)"))
    assert p.inbound(mipih, "adsea29.mssante.fr", NOW).accept
    assert p.inbound(mipih, "zenidoc.mssante.fr", NOW).reason is PeerReason.DN_NOT_LISTED_FOR_DOMAIN
    # listed as O="C H U  DE  LIMOGES" (quoted, two spaces); the certificate says C H U  DE  LIMOGES
    limoges = cert_for(name("mss.chu-limoges.fr", "1870000015", "C H U  DE  LIMOGES", "Haute-Vienne (87)"))
    domains = [d for d, dns in p.liste.by_domain.items() if any("mss.chu-limoges.fr" in str(x) for x in dns)]
    assert domains and all(p.inbound(limoges, d, NOW).accept for d in domains)
    # listed with spaces after the commas (Apicrypt)
    apicrypt = cert_for(name("mailin.interop-mssante.apicrypt.org", "343975235300037", "APICEM", "Nord (59)"))
    ap_domains = [d for d, dns in p.liste.by_domain.items() if any("apicrypt.org" in str(x) for x in dns)]
    assert ap_domains and any(p.inbound(apicrypt, d, NOW).accept for d in ap_domains)
