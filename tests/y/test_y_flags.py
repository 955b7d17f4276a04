"""The MetaDMPMSS matrix: exhaustive over every Y/N combination (SPECS.md §4)."""

from __future__ import annotations

import itertools

import pytest

from mssante.y.flags import (
    MATRIX,
    ROUTING_FLAGS,
    VISIBILITY_OID,
    YES_NO_FLAGS,
    FlagError,
    decide_routing,
    matching_cases,
)
from mssante.y.hl7 import ErrorCode


def _expected(f: dict[str, bool]) -> tuple[int, bool, bool] | None:
    """An independent restatement of the SPECS.md table (plus our two documented choices)."""
    if not f["MASQUE_PS"] and not f["INVISIBLE_PATIENT"] and not f["INVISIBLE_REP_LEGAUX"] \
            and f["DESTMSSANTEPS"] and f["DESTMSSANTEPAT"]:
        return (1, True, True)
    if not f["MASQUE_PS"] and f["INVISIBLE_PATIENT"] and f["DESTMSSANTEPS"] and not f["DESTMSSANTEPAT"]:
        return (2, True, False)  # INVISIBLE_REP_LEGAUX free: documented deviation
    if not f["INVISIBLE_PATIENT"] and not f["CONNEXION_SECRETE"] and not f["DESTDMP"] \
            and not f["DESTMSSANTEPS"] and f["DESTMSSANTEPAT"]:
        return (3, False, True)
    if f["DESTDMP"] and not f["DESTMSSANTEPS"] and not f["DESTMSSANTEPAT"]:
        return (0, False, False)  # DMP only: outside the MSSanté matrix
    return None


def test_exhaustive_matrix() -> None:
    allowed = 0
    for bits in itertools.product([False, True], repeat=len(YES_NO_FLAGS)):
        flags = dict(zip(YES_NO_FLAGS, bits, strict=True))
        assert len(matching_cases(flags)) <= 1  # rows never overlap
        want = _expected(flags)
        if want is None:
            with pytest.raises(FlagError) as exc:
                decide_routing(flags)
            assert exc.value.code is ErrorCode.APPLICATION_ERROR
            continue
        allowed += 1
        routing = decide_routing(flags)
        assert (routing.case, routing.ps_leg, routing.patient_leg) == want
        assert routing.dmp_leg is flags["DESTDMP"]
        assert routing.ack_reception is flags["ACK_RECEPTION"] and routing.ack_lecture is flags["ACK_LECTURE_MSS"]
        # Never a patient leg on INVISIBLE_PATIENT, never a PS leg on MASQUE_PS.
        assert not (routing.patient_leg and flags["INVISIBLE_PATIENT"])
        assert not (routing.ps_leg and flags["MASQUE_PS"])
    assert allowed == (8 + 16 + 8 + 32) * 4


def test_matrix_rows_name_every_routing_flag() -> None:
    for case in MATRIX:
        assert set(case.requires) == set(ROUTING_FLAGS)


def test_confidentiality_mapping() -> None:
    flags = dict.fromkeys(YES_NO_FLAGS, False) | {"DESTDMP": True, "MASQUE_PS": True, "INVISIBLE_PATIENT": True,
                                                   "INVISIBLE_REP_LEGAUX": True, "CONNEXION_SECRETE": True}
    routing = decide_routing(flags)
    assert [c.code for c in routing.confidentiality] == ["MASQUE_PS", "INVISIBLE_PATIENT", "INVISIBLE_REPRESENTANTS_LEGAUX"]
    assert {c.scheme for c in routing.confidentiality} == {VISIBILITY_OID}
    assert "CONNEXION_SECRETE" in routing.restrictions


def test_unknown_and_missing_flags() -> None:
    base = dict.fromkeys(YES_NO_FLAGS, False) | {"DESTDMP": True}
    with pytest.raises(FlagError) as exc:
        decide_routing(base | {"DESTFAX": True})
    assert exc.value.code is ErrorCode.TABLE_VALUE_NOT_FOUND
    missing = dict(base)
    del missing["DESTDMP"]
    with pytest.raises(FlagError) as exc:
        decide_routing(missing)
    assert exc.value.code is ErrorCode.REQUIRED_FIELD_MISSING
    optional = {k: v for k, v in base.items() if k not in ("ACK_RECEPTION", "ACK_LECTURE_MSS")}
    assert decide_routing(optional).ack_lecture is False
