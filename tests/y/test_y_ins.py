"""INS rules: NIR key (Corsica included), consistency with PID and CDA, qualification."""

from __future__ import annotations

import pytest
from .y_factory import BIRTH, FAMILY, GIVEN, INS, SEX

from mssante.y.hl7 import AppErrorCode
from mssante.y.ins import (
    INS_NIR_OID,
    INS_NIR_TEST_OID,
    Identity,
    InsEnvironment,
    InsError,
    check_identity,
    is_valid_ins,
    nir_key,
    normalise_name,
)

TEST = InsEnvironment.TEST


def pid(**kw: object) -> Identity:
    base: dict[str, object] = dict(ins=INS, ins_oid=INS_NIR_TEST_OID, family_names=(FAMILY,), given_names=(GIVEN,),
                                   birth_date=BIRTH, sex=SEX)
    base.update(kw)
    return Identity(**base)  # type: ignore[arg-type]


def test_nir_keys() -> None:
    assert nir_key("2790351215189") == 89  # ANS example INS 279035121518989
    assert is_valid_ins("279035121518989")
    assert not is_valid_ins("279035121518988")
    assert not is_valid_ins("27707279035121518989")  # the 20-digit PRT value of one ANS example


@pytest.mark.parametrize("dept,value", [("2A", "19"), ("2B", "18")])
def test_corsica(dept: str, value: str) -> None:
    nir = f"18505{dept}123456"
    numeric = int(f"18505{value}123456")
    assert nir_key(nir) == 97 - numeric % 97
    assert is_valid_ins(nir + f"{nir_key(nir):02d}")
    assert is_valid_ins((nir + f"{nir_key(nir):02d}").lower())


def test_consistent_qualified_identity() -> None:
    check = check_identity(pid(), ["VALI"], pid(family_names=("Dupont",), given_names=("Jean", "Pierre")), TEST)
    assert check.qualified and not check.warnings


def test_unqualified_identity_is_reported_not_raised() -> None:
    check = check_identity(pid(), ["PROV"], pid(), TEST)
    assert not check.qualified and check.warnings


@pytest.mark.parametrize(
    "override,code",
    [
        ({"ins": None}, AppErrorCode.NO_INS),
        ({"ins": INS[:-2] + "00"}, AppErrorCode.INS_INCOMPLETE),
        ({"ins": INS[:10]}, AppErrorCode.INS_INCOMPLETE),
        ({"ins_oid": INS_NIR_OID}, AppErrorCode.OTHER),  # a production INS on a test gateway
        ({"ins_oid": "1.2.3"}, AppErrorCode.INS_INCOMPLETE),
        ({"sex": "F"}, AppErrorCode.INS_MISMATCH),
        ({"birth_date": "19860512"}, AppErrorCode.INS_MISMATCH),
        ({"birth_date": "19850612"}, AppErrorCode.INS_MISMATCH),
    ],
)
def test_pid_errors(override: dict[str, object], code: AppErrorCode) -> None:
    with pytest.raises(InsError) as exc:
        check_identity(pid(**override), ["VALI"], None, TEST)
    assert exc.value.app_code is code


def test_special_month_is_lenient() -> None:
    nir13 = "1853578006084"  # month 35: unknown month
    ins = nir13 + f"{nir_key(nir13):02d}"
    assert check_identity(pid(ins=ins), ["VALI"], None, TEST).qualified


@pytest.mark.parametrize(
    "override,code",
    [
        ({"ins": None}, AppErrorCode.NO_INS),
        ({"ins": "279035121518989"}, AppErrorCode.INS_MISMATCH),
        ({"family_names": ("MARTIN",)}, AppErrorCode.INS_MISMATCH),
        ({"given_names": ("PAUL",)}, AppErrorCode.INS_MISMATCH),
        ({"birth_date": "19850513"}, AppErrorCode.INS_MISMATCH),
        ({"sex": "F"}, AppErrorCode.INS_MISMATCH),
    ],
)
def test_cda_disagreeing_with_pid(override: dict[str, object], code: AppErrorCode) -> None:
    with pytest.raises(InsError) as exc:
        check_identity(pid(), ["VALI"], pid(**override), TEST)
    assert exc.value.app_code is code


def test_names_normalised() -> None:
    assert normalise_name("  Pàt-Trois ") == normalise_name("PAT TROIS") == "PAT TROIS"
