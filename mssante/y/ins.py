"""INS (Identité Nationale de Santé) checks for Y deliveries (SPECS.md §4 "Identity rules").

- The INS-NIR is 13 characters plus a 2-digit key, key = 97 - (NIR mod 97); for Corsica the
  department "2A" counts as 19 and "2B" as 18.
- Only a qualified INS (PID-32 identity status VALI) may address the patient or feed the DMP.
- The INS must be consistent with the PID and CDA birth date, sex and names.
Errors map to the application codes 902-906 (ANS guide error-codes.md).
"""

from __future__ import annotations

import enum
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

from mssante.y.hl7 import AppErrorCode, ErrorCode, Hl7Error, Location

# OIDs of the INS (ANS guide profils-messages.md PRT-5.9; SPECS.md §3).
INS_NIR_OID = "1.2.250.1.213.1.4.8"
INS_NIA_OID = "1.2.250.1.213.1.4.9"
INS_NIR_TEST_OID = "1.2.250.1.213.1.4.10"
INS_NIA_TEST_OID = "1.2.250.1.213.1.4.11"
ALL_INS_OIDS = (INS_NIR_OID, INS_NIA_OID, INS_NIR_TEST_OID, INS_NIA_TEST_OID)


class InsEnvironment(enum.Enum):
    """Which INS OIDs this gateway accepts: production INS never mixes with test INS."""

    PRODUCTION = "production"
    TEST = "test"

    @property
    def oids(self) -> tuple[str, str]:
        if self is InsEnvironment.PRODUCTION:
            return (INS_NIR_OID, INS_NIA_OID)
        return (INS_NIR_TEST_OID, INS_NIA_TEST_OID)

    @property
    def nir_oid(self) -> str:
        return self.oids[0]


QUALIFIED_STATUSES = frozenset({"VALI"})
_NIR = re.compile(r"[0-9]{5}(?:[0-9]{2}|2A|2B)[0-9]{6}[0-9]{2}")


class InsError(Hl7Error):
    def __init__(self, app_code: AppErrorCode, message: str, location: Location | None = None) -> None:
        super().__init__(ErrorCode.APPLICATION_ERROR, message, location, app_code=app_code)


def nir_numeric(nir13: str) -> int:
    """The 13-character NIR as a number, Corsica's 2A -> 19 and 2B -> 18 (SPECS.md §4)."""
    if len(nir13) != 13:
        raise ValueError("a NIR has 13 characters before its key")
    dept = nir13[5:7].upper()
    if dept == "2A":
        nir13 = nir13[:5] + "19" + nir13[7:]
    elif dept == "2B":
        nir13 = nir13[:5] + "18" + nir13[7:]
    if not nir13.isdigit():
        raise ValueError("a NIR is made of digits (and 2A/2B for Corsica)")
    return int(nir13)


def nir_key(nir13: str) -> int:
    """key = 97 - (NIR mod 97)."""
    return 97 - nir_numeric(nir13) % 97


def is_valid_ins(ins: str) -> bool:
    if not _NIR.fullmatch(ins.upper()):
        return False
    return nir_key(ins[:13]) == int(ins[13:])


# Sex digit (1st character). 1/2 for the NIR; 3/4 and 7/8 are used for foreign-born and
# temporary (NIA) numbers. Parity gives the sex.
_SEX_OF_DIGIT = {"1": "M", "2": "F", "3": "M", "4": "F", "7": "M", "8": "F"}


def sex_of_ins(ins: str) -> str | None:
    return _SEX_OF_DIGIT.get(ins[:1])


def _month_is_special(mm: int) -> bool:
    # 20-42 and 50+ are used when the month of birth is unknown or for some registrations
    # (a lenient reading: the spec only asks for consistency when a real month is encoded).
    return mm < 1 or 20 <= mm <= 42 or mm >= 50 or 13 <= mm <= 19


def normalise_name(name: str) -> str:
    """Upper case, accents removed, hyphens/apostrophes/spaces collapsed: the INS comparison form."""
    decomposed = unicodedata.normalize("NFKD", name)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return re.sub(r"[\s\-'’]+", " ", stripped).strip().upper()


@dataclass(frozen=True)
class Identity:
    """The identity traits we compare (from PID or from the CDA recordTarget)."""

    ins: str | None
    ins_oid: str | None
    family_names: tuple[str, ...]  # birth name first when known
    given_names: tuple[str, ...]
    birth_date: str | None  # YYYYMMDD (may be shorter: YYYY or YYYYMM)
    sex: str | None  # M / F / U / O


@dataclass(frozen=True)
class InsCheck:
    """Outcome of `check_identity`: qualified says whether patient/DMP legs may go out."""

    qualified: bool
    warnings: tuple[str, ...]


def check_ins_format(ins: str | None, oid: str | None, env: InsEnvironment, where: Location) -> str:
    """PID INS present, well formed, right key, right environment. Returns the upper-cased INS."""
    if not ins:
        raise InsError(AppErrorCode.NO_INS, "no INS in PID-3 (identifier type INS)", where)
    ins = ins.upper()
    if not _NIR.fullmatch(ins):
        raise InsError(AppErrorCode.INS_INCOMPLETE, "the INS must have 15 characters (13 + key)", where)
    if nir_key(ins[:13]) != int(ins[13:]):
        raise InsError(AppErrorCode.INS_INCOMPLETE, "the INS key does not match 97 - (NIR mod 97)", where)
    if oid not in env.oids:
        if oid in ALL_INS_OIDS:
            raise InsError(AppErrorCode.OTHER, f"INS OID {oid} does not belong to the {env.value} environment", where)
        raise InsError(AppErrorCode.INS_INCOMPLETE, "the INS assigning authority is not an INS OID", where)
    return ins


def _birth_ok(ins: str, birth: str | None) -> bool:
    if not birth or len(birth) < 4 or not birth[:4].isdigit():
        return True  # nothing to compare against: completeness is checked elsewhere
    if ins[1:3] != birth[2:4]:
        return False
    mm = int(ins[3:5])
    if _month_is_special(mm) or len(birth) < 6 or not birth[4:6].isdigit():
        return True
    return mm == int(birth[4:6])


def _names_match(pid_names: Iterable[str], cda_names: Iterable[str]) -> bool:
    a = {normalise_name(n) for n in pid_names if n}
    b = {normalise_name(n) for n in cda_names if n}
    return bool(a & b)


def check_identity(
    pid: Identity,
    status: Iterable[str],
    cda: Identity | None,
    env: InsEnvironment,
    *,
    qualified_statuses: frozenset[str] = QUALIFIED_STATUSES,
) -> InsCheck:
    """All INS rules of SPECS.md §4. Raises InsError (902-906) on an inconsistent identity.

    An *unqualified* but consistent identity does not raise: it returns qualified=False and the
    caller must then refuse the patient and DMP legs (it may still send to professionals).
    """
    pid_loc = Location("PID", 1, 3)
    ins = check_ins_format(pid.ins, pid.ins_oid, env, pid_loc)
    warnings: list[str] = []
    expected_sex = sex_of_ins(ins)
    if pid.sex in ("M", "F") and expected_sex and pid.sex != expected_sex:
        raise InsError(AppErrorCode.INS_MISMATCH, "PID-8 sex does not match the INS", Location("PID", 1, 8))
    if not _birth_ok(ins, pid.birth_date):
        raise InsError(AppErrorCode.INS_MISMATCH, "PID-7 birth date does not match the INS", Location("PID", 1, 7))
    if not pid.family_names or not pid.given_names or not pid.birth_date or pid.sex not in ("M", "F", "U", "O"):
        incomplete = True
    else:
        incomplete = False
    if cda is not None:
        doc_loc = Location("OBX", 1, 5)
        if not cda.ins:
            raise InsError(AppErrorCode.NO_INS, "the CDA recordTarget carries no INS", doc_loc)
        if cda.ins.upper() != ins or (cda.ins_oid and cda.ins_oid != pid.ins_oid):
            raise InsError(AppErrorCode.INS_MISMATCH, "the CDA names a different patient than PID-3", doc_loc)
        check_traits(pid, cda)
        if not cda.family_names or not cda.birth_date or not cda.sex:
            incomplete = True
    statuses = {s.upper() for s in status if s}
    qualified = bool(statuses & qualified_statuses) and not incomplete
    if not qualified:
        warnings.append("identity not qualified (PID-32 is not VALI or traits are incomplete)")
    return InsCheck(qualified=qualified, warnings=tuple(warnings))


def check_traits(pid: Identity, cda: Identity) -> None:
    """Birth date, sex and names of the CDA recordTarget must agree with PID (904)."""
    doc_loc = Location("OBX", 1, 5)
    if cda.birth_date and pid.birth_date and cda.birth_date[:8] != pid.birth_date[:8]:
        raise InsError(AppErrorCode.INS_MISMATCH, "CDA birthTime differs from PID-7", doc_loc)
    if cda.sex in ("M", "F") and pid.sex in ("M", "F") and cda.sex != pid.sex:
        raise InsError(AppErrorCode.INS_MISMATCH, "CDA administrativeGenderCode differs from PID-8", doc_loc)
    if cda.family_names and pid.family_names and not _names_match(pid.family_names, cda.family_names):
        raise InsError(AppErrorCode.INS_MISMATCH, "CDA family name differs from PID-5", doc_loc)
    if cda.given_names and pid.given_names and not _names_match(pid.given_names[:1], cda.given_names):
        raise InsError(AppErrorCode.INS_MISMATCH, "CDA given name differs from PID-5", doc_loc)


def birth_date_of(value: str) -> date | None:
    try:
        return date(int(value[0:4]), int(value[4:6]), int(value[6:8]))
    except (ValueError, IndexError):
        return None
