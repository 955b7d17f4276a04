"""INS-NIR checks and the HL7 CX forms the DMP uses for the patient identifier.

SPECS.md §4 "Identity rules": the INS-NIR is 13 characters plus a 2-digit key,
key = 97 - (NIR mod 97); for Corsica the department 2A counts as 19 and 2B as 18.
SPECS.md §3: patientId = <INS>^^^&<OID>&ISO^NH.
"""

from __future__ import annotations

import re

INS_OID_PRODUCTION = "1.2.250.1.213.1.4.8"
INS_OID_TEST = "1.2.250.1.213.1.4.10"
INS_OIDS = frozenset({INS_OID_PRODUCTION, INS_OID_TEST})

_NIR_RE = re.compile(r"^[1-478][0-9]{4}(?:[0-9]{2}|2A|2B)[0-9]{6}[0-9]{2}$")
_CX_RE = re.compile(r"^([^^&]+)\^\^\^&([0-9.]+)&ISO(?:\^([A-Z]+))?$")


class InsError(ValueError):
    """An INS that is malformed or whose key does not match."""


def nir_key(nir13: str) -> int:
    """The control key of a 13-character NIR (Corsica: 2A -> 19, 2B -> 18)."""
    digits = nir13.upper().replace("2A", "19", 1) if nir13[5:7].upper() == "2A" else nir13
    digits = digits.upper().replace("2B", "18", 1) if nir13[5:7].upper() == "2B" else digits
    if len(digits) != 13 or not digits.isdigit():
        raise InsError("NIR must be 13 characters (digits, or 2A/2B for Corsica)")
    return 97 - (int(digits) % 97)


def check_ins(ins: str) -> None:
    """Raise InsError unless ins is a 15-character INS-NIR with a valid key."""
    if not _NIR_RE.match(ins.upper()):
        raise InsError("INS must be 13 characters plus a 2-digit key")
    if int(ins[13:]) != nir_key(ins[:13]):
        raise InsError("INS key does not match (key = 97 - NIR mod 97)")


def is_valid_ins(ins: str) -> bool:
    try:
        check_ins(ins)
    except InsError:
        return False
    return True


def patient_id_cx(ins: str, oid: str) -> str:
    """XDS patientId in HL7 CX form (SPECS.md §3)."""
    return f"{ins}^^^&{oid}&ISO^NH"


def parse_patient_id_cx(value: str) -> tuple[str, str]:
    """(id, assigning authority OID) from a CX patient id; the ^NH type is optional."""
    m = _CX_RE.match(value.strip())
    if not m:
        raise InsError("patientId is not of the form <id>^^^&<OID>&ISO[^NH]")
    if m.group(3) not in (None, "NH"):
        raise InsError("patientId identifier type must be NH")
    return m.group(1), m.group(2)
