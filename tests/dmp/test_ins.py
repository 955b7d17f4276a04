"""INS-NIR key and CX patientId forms (SPECS.md §4 identity rules, §3 patientId)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mssante.dmp.ins import InsError, check_ins, is_valid_ins, nir_key, parse_patient_id_cx, patient_id_cx


def test_ans_example_ins_is_valid() -> None:
    check_ins("279035121518989")


def test_wrong_key_is_refused() -> None:
    with pytest.raises(InsError, match="key"):
        check_ins("279035121518988")


def test_corsica_departments_count_as_19_and_18() -> None:
    assert nir_key("185022A112345") == 97 - (1850219112345 % 97)
    assert nir_key("185022B112345") == 97 - (1850218112345 % 97)
    ins = "185022A112345" + f"{nir_key('185022A112345'):02d}"
    assert is_valid_ins(ins)


@pytest.mark.parametrize("bad", ["", "27903512151898", "2790351215189890", "27903512151898X", "979035121518989"])
def test_malformed_ins_is_refused(bad: str) -> None:
    assert not is_valid_ins(bad)


@given(st.integers(min_value=1_000_000_000_000, max_value=2_999_999_999_999))
def test_every_computed_key_validates(nir: int) -> None:
    s = str(nir)
    if s[0] not in "12":
        return
    assert is_valid_ins(s + f"{nir_key(s):02d}")


def test_patient_id_cx_round_trip() -> None:
    cx = patient_id_cx("279035121518989", "1.2.250.1.213.1.4.10")
    assert cx == "279035121518989^^^&1.2.250.1.213.1.4.10&ISO^NH"
    assert parse_patient_id_cx(cx) == ("279035121518989", "1.2.250.1.213.1.4.10")
    assert parse_patient_id_cx("279035121518989^^^&1.2.250.1.213.1.4.10&ISO") == ("279035121518989", "1.2.250.1.213.1.4.10")
    with pytest.raises(InsError):
        parse_patient_id_cx("279035121518989^^^&1.2.250.1.213.1.4.10&ISO^PI")
    with pytest.raises(InsError):
        parse_patient_id_cx("279035121518989")
