"""Pure parts: identifiers, normalisation, row parsing (property-based: never raises)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from annuaire.formats import (MSS_COLUMNS, PA_COLUMNS, RowError, check_pp, department_of, detect_layout,
                              idnps_of, norm, split_line, valid_address)
from annuaire.rows import ActivityRows, MailboxRows


def test_identifiers() -> None:
    assert idnps_of("10003456789") == "810003456789"        # RPPS
    assert idnps_of("810003456789") == "810003456789"       # IDNPS
    assert idnps_of("751234567") == "0751234567"            # ADELI
    assert idnps_of("2A1234567") == "02A1234567"            # ADELI, Corsica
    assert idnps_of("12345") is None and idnps_of("8100034567X9") is None
    assert check_pp("8", "10003456789", "810003456789") is None
    assert check_pp("0", "751234567", "0751234567") is None
    assert "type+identifier" in (check_pp("8", "10003456789", "810003456780") or "")
    assert "identifier type" in (check_pp("3", "10003456789", "310003456789") or "")


def test_norm_and_places() -> None:
    assert norm("LEFÈVRE-ŒUVRARD") == "lefevre-oeuvrard"
    assert norm("Éloïse Çelik") == "eloise celik"
    assert norm("Nguyễn") == "nguyen"
    assert department_of("20090") == "2A" and department_of("20290") == "2B"
    assert department_of("97400") == "974" and department_of("75013") == "75"
    assert split_line("a|b||\r\n") == ["a", "b", ""]
    assert valid_address("jean.dupont@medecin.mssante.fr")
    assert not valid_address("jean dupont@x.fr") and not valid_address("a@b") and not valid_address("a|b@x.fr")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=30), max_size=40))
def test_row_parsers_never_raise(fields: list[str]) -> None:
    m = MailboxRows(detect_layout("|".join(MSS_COLUMNS) + "|"))
    a = ActivityRows(detect_layout("|".join(PA_COLUMNS) + "|"))
    for parser in (m, a):
        out = parser.parse(2, fields)
        assert isinstance(out, (RowError, tuple))
    full = ["PER", "x@y.fr", *fields, *([""] * 40)][:31]
    assert isinstance(m.parse(3, full), (RowError, tuple))
