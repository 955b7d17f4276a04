from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from mssante.trust.listeblanche import (
    NAMESPACE,
    ListeBlancheError,
    ListeBlancheErrorCode,
    ProblemCode,
    build_liste_blanche_xml,
    parse_liste_blanche,
)

GEN = datetime(2025, 3, 13, 14, 54, 10, tzinfo=UTC)
DN_A = "CN=mx.a.fr,OU=111,O=A,ST=Paris (75),C=FR"
DN_B = "CN=mx.b.fr, OU=222, O=B, ST=Nord (59), C=FR"


def real_file(real_data: Path) -> bytes:
    return (real_data / "listeblanchemssante-2025-03-13.xml").read_bytes()


def small() -> bytes:
    return build_liste_blanche_xml(
        [
            ("a.mssante.fr", DN_A, "A"),
            ("b.mssante.fr", DN_B, "B"),
            ("ab.mssante.fr", DN_A, ""),
            ("ab.mssante.fr", DN_B, ""),
        ],
        GEN,
    )


def test_real_file(real_data: Path) -> None:
    liste = parse_liste_blanche(real_file(real_data))
    assert len(liste.entries) == 6554
    assert len({e.domain for e in liste.entries}) == 5002
    assert len(liste.distinct_dn_texts) == 392
    assert liste.generated == GEN
    codes = [p.code for p in liste.problems]
    # The published file lacks </ListeBlancheMSSante>: accepted and reported (SPECS.md §1).
    assert ProblemCode.ROOT_NOT_CLOSED in codes
    # One <Nom> is an address, not a domain: reported, left out of the index.
    invalid = [p for p in liste.problems if p.code is ProblemCode.INVALID_DOMAIN]
    assert [p.detail for p in invalid] == ["'sessad@ase.ditepbeziers.mssante.fr' is not a domain name"]
    assert len(liste.domains) == 5001
    assert codes.count(ProblemCode.DUPLICATE_ENTRY) == 28
    assert ProblemCode.MALFORMED_DN not in codes
    assert "medecin.mssante.fr" in liste.domains
    assert "uc-cmp.mssante.fr" in liste.domains  # written UC-CMP.mssante.fr: domains are case-insensitive


def test_real_file_closed_parses_the_same(real_data: Path) -> None:
    data = real_file(real_data)
    fixed = parse_liste_blanche(data + b"\n</ListeBlancheMSSante>\n")
    assert ProblemCode.ROOT_NOT_CLOSED not in [p.code for p in fixed.problems]
    assert fixed.by_domain == parse_liste_blanche(data).by_domain


def test_real_file_cut_inside_a_domaine_is_refused(real_data: Path) -> None:
    data = real_file(real_data)
    cut = data[: data.index(b"<DNCertificatOperateur>", len(data) // 2)]
    with pytest.raises(ListeBlancheError) as exc:
        parse_liste_blanche(cut)
    assert exc.value.code is ListeBlancheErrorCode.TRUNCATED


def test_real_file_cut_between_domaines_is_refused(real_data: Path) -> None:
    data = real_file(real_data)
    cut = data[: data.index(b"</Domaine>", len(data) // 2) + len(b"</Domaine>")]
    with pytest.raises(ListeBlancheError) as exc:
        parse_liste_blanche(cut)
    assert exc.value.code is ListeBlancheErrorCode.TRUNCATED


def test_round_trip_and_namespace() -> None:
    data = small()
    assert NAMESPACE.encode() in data and data.rstrip().endswith(b"</ListeBlancheMSSante>")
    liste = parse_liste_blanche(data)
    assert liste.problems == ()
    assert liste.generated == GEN
    assert liste.domains == {"a.mssante.fr", "b.mssante.fr", "ab.mssante.fr"}
    assert len(liste.by_domain["ab.mssante.fr"]) == 2
    again = build_liste_blanche_xml(liste.entries, GEN)
    assert parse_liste_blanche(again).by_domain == liste.by_domain


def test_problems_are_not_fatal() -> None:
    data = build_liste_blanche_xml(
        [
            ("ok.mssante.fr", DN_A, ""),
            ("ok.mssante.fr", DN_A.replace(",", ", "), "same DN, other spelling"),
            ("", DN_A, "empty name"),
            ("bad domain.fr", DN_A, ""),
            ("nodn.mssante.fr", "", ""),
            ("baddn.mssante.fr", "CN=x,FOO=bar", ""),
        ],
        GEN,
    )
    liste = parse_liste_blanche(data)
    assert [(p.code, p.entry) for p in liste.problems] == [
        (ProblemCode.DUPLICATE_ENTRY, 2),
        (ProblemCode.EMPTY_DOMAIN, 3),
        (ProblemCode.INVALID_DOMAIN, 4),
        (ProblemCode.MISSING_DN, 5),
        (ProblemCode.MALFORMED_DN, 6),
    ]
    assert liste.domains == {"ok.mssante.fr"}


def test_size_limit_checked_before_parsing() -> None:
    with pytest.raises(ListeBlancheError) as exc:
        parse_liste_blanche(b"<" * 2000, max_bytes=1000)
    assert exc.value.code is ListeBlancheErrorCode.TOO_LARGE


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<ListeBlancheMSSante xmlns="https://listeblanche.mssante.fr/schema"><ListeDomaines><Domaine><Nom>&lol3;</Nom>
</Domaine></ListeDomaines></ListeBlancheMSSante>"""

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<ListeBlancheMSSante xmlns="https://listeblanche.mssante.fr/schema"><ListeDomaines><Domaine><Nom>&xxe;</Nom>
</Domaine></ListeDomaines></ListeBlancheMSSante>"""


@pytest.mark.parametrize("doc", [BILLION_LAUGHS, XXE, b'<!DOCTYPE x SYSTEM "http://127.0.0.1:9/x.dtd"><x/>'])
def test_dtd_refused(doc: bytes) -> None:
    with pytest.raises(ListeBlancheError) as exc:
        parse_liste_blanche(doc)
    assert exc.value.code is ListeBlancheErrorCode.DOCTYPE_FORBIDDEN


def test_utf16_refused_so_the_doctype_scan_stays_exact() -> None:
    with pytest.raises(ListeBlancheError) as exc:
        parse_liste_blanche(
            XXE.decode().replace('version="1.0"', 'version="1.0" encoding="UTF-16"').encode("utf-16")
        )
    assert exc.value.code is ListeBlancheErrorCode.ENCODING
    with pytest.raises(ListeBlancheError) as exc:
        parse_liste_blanche(b'<?xml version="1.0" encoding="ISO-8859-1"?><x/>')
    assert exc.value.code is ListeBlancheErrorCode.ENCODING


@pytest.mark.parametrize(
    ("doc", "code"),
    [
        (b"", ListeBlancheErrorCode.MALFORMED),
        (b"not xml", ListeBlancheErrorCode.MALFORMED),
        (b"<html><body/></html>", ListeBlancheErrorCode.NOT_A_LISTE_BLANCHE),
        (
            b'<ListeBlancheMSSante xmlns="https://listeblanche.mssante.fr/schema"/>',
            ListeBlancheErrorCode.NOT_A_LISTE_BLANCHE,
        ),
        (
            b"<ListeBlancheMSSante><ListeDomaines></Domaine></ListeBlancheMSSante>",
            ListeBlancheErrorCode.MALFORMED,
        ),
        (b"<ListeBlancheMSSante><ListeDomaines><Domaine><Nom>a.fr</Nom>", ListeBlancheErrorCode.TRUNCATED),
        (b"<ListeBlancheMSSante><ListeDomaines></ListeDomaines><Junk>", ListeBlancheErrorCode.TRUNCATED),
        (
            b"<ListeBlancheMSSante><ListeDomaines></ListeDomaines></ListeBlanche",
            ListeBlancheErrorCode.TRUNCATED,
        ),
        (
            b"<ListeBlancheMSSante><ListeDomaines><Domaine><Nom>a</Foo></Domaine></ListeDomaines>",
            ListeBlancheErrorCode.MALFORMED,
        ),
    ],
)
def test_bad_documents(doc: bytes, code: ListeBlancheErrorCode) -> None:
    with pytest.raises(ListeBlancheError) as exc:
        parse_liste_blanche(doc)
    assert exc.value.code is code


def test_root_end_missing_after_closed_list_is_accepted_with_a_problem() -> None:
    data = small()
    cut = data[: data.rindex(b"</ListeBlancheMSSante>")]
    liste = parse_liste_blanche(cut)
    assert [p.code for p in liste.problems] == [ProblemCode.ROOT_NOT_CLOSED]
    assert len(liste.domains) == 3


def test_huge_document_is_refused_by_default_limit() -> None:
    entry = (
        b"<Domaine><Nom>x.mssante.fr</Nom><DNCertificatOperateur>CN=a,C=FR</DNCertificatOperateur></Domaine>"
    )
    doc = (
        b"<ListeBlancheMSSante><ListeDomaines>"
        + entry * (33 * 1024 * 1024 // len(entry))
        + b"</ListeDomaines></ListeBlancheMSSante>"
    )
    with pytest.raises(ListeBlancheError) as exc:
        parse_liste_blanche(doc)
    assert exc.value.code is ListeBlancheErrorCode.TOO_LARGE


def test_domaine_outside_the_list_is_ignored() -> None:
    doc = (
        b'<ListeBlancheMSSante xmlns="https://listeblanche.mssante.fr/schema"><Domaine><Nom>x.mssante.fr</Nom>'
        b"<DNCertificatOperateur>CN=x,C=FR</DNCertificatOperateur></Domaine><ListeDomaines/></ListeBlancheMSSante>"
    )
    liste = parse_liste_blanche(doc)
    assert liste.domains == frozenset() and [p.code for p in liste.problems] == [
        ProblemCode.MISPLACED_ELEMENT
    ]
