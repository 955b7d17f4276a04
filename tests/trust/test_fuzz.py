"""Fuzz the two parsers: hostile input yields a typed error or a value, never anything else."""

from __future__ import annotations

from datetime import UTC, datetime

from cryptography import x509
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from mssante.trust.dn import DistinguishedName, DnSyntaxError, dn_from_name, parse_dn
from mssante.trust.listeblanche import ListeBlancheError, build_liste_blanche_xml, parse_liste_blanche

KEYS = st.sampled_from(["CN", "OU", "O", "ST", "C", "L", "emailAddress", "serialNumber", "2.5.4.3"])
VALUES = st.text(min_size=1, max_size=20).filter(lambda v: v.strip())


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_dn_parser_never_crashes(text: str) -> None:
    try:
        dn = parse_dn(text)
    except DnSyntaxError:
        return
    assert isinstance(dn, DistinguishedName)


def _escape(v: str) -> str:
    out = "".join("\\" + c if c in ',+"\\<>;=#' else c for c in v)
    return out


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(KEYS, VALUES), min_size=1, max_size=6))
def test_dn_display_round_trips(attrs: list[tuple[str, str]]) -> None:
    text = ",".join(f"{k}={_escape(v)}" for k, v in attrs)
    try:
        dn = parse_dn(text)
    except DnSyntaxError:
        return  # e.g. a value that is only control characters
    assert parse_dn(str(dn)) == dn
    spaced = " ,  ".join(
        f"{k} = {_escape(v)}" for k, v in attrs
    )  # spaces around separators are insignificant
    assert parse_dn(spaced) == dn


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_list_parser_never_crashes_on_bytes(data: bytes) -> None:
    try:
        parse_liste_blanche(data)
    except ListeBlancheError:
        pass


DOC = build_liste_blanche_xml(
    [
        ("a.mssante.fr", "CN=mx.a.fr,OU=1,O=A,ST=Paris (75),C=FR", "x"),
        ("b.mssante.fr", "CN=mx.b.fr,C=FR", ""),
    ],
    datetime(2025, 1, 1, tzinfo=UTC),
)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(DOC)), st.integers(0, len(DOC)), st.binary(max_size=8))
def test_list_parser_on_mutations(start: int, end: int, junk: bytes) -> None:
    start, end = min(start, end), max(start, end)
    data = DOC[:start] + junk + DOC[end:]
    try:
        liste = parse_liste_blanche(data)
    except ListeBlancheError:
        return
    assert set(liste.by_domain) <= {"a.mssante.fr", "b.mssante.fr"} or liste.problems or junk


@settings(max_examples=200, deadline=None)
@given(st.integers(1, len(DOC) - 1))
def test_every_prefix_is_refused_or_complete(cut: int) -> None:
    """A truncated list is never accepted with fewer entries than it had."""
    try:
        liste = parse_liste_blanche(DOC[:cut])
    except ListeBlancheError:
        return
    assert len(liste.by_domain) == 2


OIDS = st.sampled_from(
    [
        NameOID.COMMON_NAME,
        NameOID.ORGANIZATIONAL_UNIT_NAME,
        NameOID.ORGANIZATION_NAME,
        NameOID.STATE_OR_PROVINCE_NAME,
        NameOID.LOCALITY_NAME,
        NameOID.EMAIL_ADDRESS,
        NameOID.SERIAL_NUMBER,
        NameOID.GIVEN_NAME,
        NameOID.DOMAIN_COMPONENT,
    ]
)
ATTR_VALUES = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=16)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.tuples(OIDS, ATTR_VALUES), min_size=1, max_size=3), min_size=1, max_size=5))
def test_certificate_name_matches_its_rfc4514_string(
    rdns: list[list[tuple[x509.ObjectIdentifier, str]]],
) -> None:
    """Cross-check with cryptography's own RFC 4514 writer: the string form and the Name agree."""
    try:
        name = x509.Name(
            [
                x509.RelativeDistinguishedName([x509.NameAttribute(oid, value) for oid, value in rdn])
                for rdn in rdns
                if len({oid for oid, _ in rdn}) == len(rdn)
            ]
        )
    except ValueError:
        return  # e.g. a value cryptography refuses for that attribute
    if not name.rdns:
        return
    assert parse_dn(name.rfc4514_string()) == dn_from_name(name)
