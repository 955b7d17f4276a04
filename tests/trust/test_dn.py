from __future__ import annotations

import re
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from mssante.trust.dn import DnSyntaxError, dn_from_name, normalise_value, parse_dn

from .certs import name

MIPIH = "CN=medimail-asip.mipih.fr,OU=318310021300028,O=GIP MIPIH,ST=Haute-Garonne (31),C=FR"


def test_string_is_most_specific_first_certificate_is_country_first() -> None:
    dn = parse_dn(MIPIH)
    assert dn.rdns[0] == (("2.5.4.6", "fr"),)
    assert dn.rdns[-1] == (("2.5.4.3", "medimail-asip.mipih.fr"),)
    cert_dn = dn_from_name(
        name("medimail-asip.mipih.fr", "318310021300028", "GIP MIPIH", "Haute-Garonne (31)")
    )
    assert cert_dn == dn


@pytest.mark.parametrize(
    "variant",
    [
        "CN=medimail-asip.mipih.fr, OU=318310021300028, O=GIP MIPIH, ST=Haute-Garonne (31), C=FR",
        "cn=MEDIMAIL-ASIP.mipih.fr,ou=318310021300028,o=gip   mipih,st=haute-garonne (31),c=fr",
        'CN = medimail-asip.mipih.fr ,OU=318310021300028,O="GIP  MIPIH",ST=Haute-Garonne (31),C=FR',
        "2.5.4.3=medimail-asip.mipih.fr,OID.2.5.4.11=318310021300028,O=GIP\\20MIPIH,S=Haute-Garonne (31),C=FR",
        "CN=#0c166d6564696d61696c2d617369702e6d697069682e6672,OU=318310021300028,O=GIP MIPIH,ST=Haute-Garonne (31),C=FR",
        "CN=medimail-asip.mipih.fr,OU=318310021300028,O=GIP\u00a0MIPIH,ST=Haute-Garonne (31),C=FR",
    ],
)
def test_variants_are_equal(variant: str) -> None:
    assert parse_dn(variant) == parse_dn(MIPIH)


def test_multivalued_rdn_is_sorted() -> None:
    a = parse_dn("CN=x+OU=y,O=z,C=FR")
    b = parse_dn("OU=y+CN=x,O=z,C=FR")
    assert a == b and len(a.rdns) == 3
    name_ = x509.Name(
        [
            x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COUNTRY_NAME, "FR")]),
            x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "z")]),
            x509.RelativeDistinguishedName(
                [
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "y"),
                    x509.NameAttribute(NameOID.COMMON_NAME, "x"),
                ]
            ),
        ]
    )
    assert dn_from_name(name_) == a


def test_escapes_and_utf8_hex_pairs() -> None:
    dn = parse_dn("CN=a\\,b\\+c,O=caf\\C3\\A9,ST=Pyr\u00e9n\u00e9es-Atlantiques (64),C=FR")
    values = dict(a for rdn in dn.rdns for a in rdn)
    assert values["2.5.4.3"] == "a,b+c"
    assert values["2.5.4.10"] == "café"
    # the display form round-trips
    assert parse_dn(str(dn)) == dn


def test_embedded_quote_is_literal_and_distinct() -> None:
    # Both forms are in the real list for the same CN: they are two different certificate subjects.
    a = parse_dn('CN=m,OU=1,O="CENTRE HOSPITALIER  FRANCK-JOLY",C=FR')
    b = parse_dn('CN=m,OU=1,O=CENTRE HOSPITALIER "FRANCK-JOLY",C=FR')
    assert a != b
    assert dict(x for r in b.rdns for x in r)["2.5.4.10"] == 'centre hospitalier "franck-joly"'


def test_email_and_serial_keywords() -> None:
    dn = parse_dn("emailAddress=A@B.fr,serialNumber=123,E=x@y.fr+CN=n,C=FR")
    oids = [oid for rdn in dn.rdns for oid, _ in rdn]
    assert "1.2.840.113549.1.9.1" in oids and "2.5.4.5" in oids


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "CN",
        "CN=a,",
        "FOO=bar",
        "C N=x",
        'CN="unterminated',
        "CN=#0c0",
        "CN=#zz",
        "CN=a\\",
        "CN=a+CN=b",
        "CN=#0c05616263",
    ],
)
def test_malformed(bad: str) -> None:
    with pytest.raises(DnSyntaxError):
        parse_dn(bad)


def test_normalise_value() -> None:
    assert normalise_value("  C H U \u00a0 DE\tLIMOGES ") == "c h u de limoges"
    assert normalise_value("ＦＲ") == "fr"  # NFKC


def test_real_list_dns_all_parse_and_match_their_spaced_variant(real_data: Path) -> None:
    data = (real_data / "listeblanchemssante-2025-03-13.xml").read_bytes().decode("utf-8")
    texts = set(re.findall(r"<DNCertificatOperateur>(.*?)</DNCertificatOperateur>", data, re.S))
    assert len(texts) == 392
    canon = {t: parse_dn(t) for t in texts}
    # "CN=…, OU=…" (with spaces, as Apicrypt's entries) equals the compact form and vice versa
    for t, dn in canon.items():
        spaced = re.sub(r",(?=[A-Z]{1,2}=)", ", ", t.replace(", ", ","))
        assert parse_dn(spaced) == dn
    assert any(", " in t for t in texts)
    # whitespace/case/quoting variants collapse: 392 strings are 384 distinct subjects
    assert len(set(canon.values())) == 384
