"""The MetaDMPMSS flag matrix as data (SPECS.md §4; ANS guide regles-gestion-mssante.md).

`MATRIX` lists every allowed combination of the routing flags. Any combination not matched by
exactly one row is refused. `decide_routing` turns validated flags into the legs to create and
into the DMP confidentiality codes (ANS guide mapping.md: "confidentialityCode: first occurrence
from the CDA, the others from the OBX with OBX-3.3 = MetaDMPMSS").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from mssante.y.hl7 import ErrorCode, Hl7Error, Location

# ANS guide meta-dmp-mss.md: the MetaDMPMSS table.
RESTRICTION_FLAGS = ("MASQUE_PS", "INVISIBLE_PATIENT", "INVISIBLE_REP_LEGAUX", "CONNEXION_SECRETE", "MODIF_CONF_CODE")
DESTINATION_FLAGS = ("DESTDMP", "DESTMSSANTEPS", "DESTMSSANTEPAT")
ACK_FLAGS = ("ACK_RECEPTION", "ACK_LECTURE_MSS")
ROUTING_FLAGS = RESTRICTION_FLAGS + DESTINATION_FLAGS  # the ones the matrix constrains
YES_NO_FLAGS = ROUTING_FLAGS + ACK_FLAGS
BODY_CODES = ("CORPSMAIL_PS", "CORPSMAIL_PATIENT")
ALL_CODES = YES_NO_FLAGS + BODY_CODES
# Required flags (profils-messages.md: "Ces métadonnées sont requises sauf ... corps du mail";
# ACK_LECTURE_MSS is marked Usage = Optional). ACK_RECEPTION is treated as optional, default N.
REQUIRED_FLAGS = ROUTING_FLAGS
FLAG_DEFAULTS: dict[str, bool] = {"ACK_RECEPTION": False, "ACK_LECTURE_MSS": False}

Y, N, ANY = True, False, None


@dataclass(frozen=True)
class MatrixCase:
    case: int
    requires: Mapping[str, bool | None]  # flag -> required value, None = N or Y
    ps_leg: bool
    patient_leg: bool
    meaning: str
    note: str = ""

    def matches(self, flags: Mapping[str, bool]) -> bool:
        return all(want is None or flags[name] is want for name, want in self.requires.items())


def _row(**kw: bool | None) -> dict[str, bool | None]:
    assert set(kw) == set(ROUTING_FLAGS), set(ROUTING_FLAGS) ^ set(kw)
    return kw


MATRIX: tuple[MatrixCase, ...] = (
    MatrixCase(
        1,
        _row(MASQUE_PS=N, INVISIBLE_PATIENT=N, INVISIBLE_REP_LEGAUX=N, CONNEXION_SECRETE=ANY,
             MODIF_CONF_CODE=ANY, DESTDMP=ANY, DESTMSSANTEPS=Y, DESTMSSANTEPAT=Y),
        ps_leg=True, patient_leg=True,
        meaning="send to the PS recipients and to the patient",
        note="SPECS.md lets CONNEXION_SECRETE be N or Y; the ANS page requires N",
    ),
    MatrixCase(
        2,
        _row(MASQUE_PS=N, INVISIBLE_PATIENT=Y, INVISIBLE_REP_LEGAUX=ANY, CONNEXION_SECRETE=ANY,
             MODIF_CONF_CODE=ANY, DESTDMP=ANY, DESTMSSANTEPS=Y, DESTMSSANTEPAT=N),
        ps_leg=True, patient_leg=False,
        meaning="send to the PS recipients only",
        note=("deviation: INVISIBLE_REP_LEGAUX may be Y (SPECS.md says N). ANS's own MDM example sends Y; "
              "no mail reaches the patient or the representatives in this case, so it only tightens the DMP"),
    ),
    MatrixCase(
        3,
        _row(MASQUE_PS=ANY, INVISIBLE_PATIENT=N, INVISIBLE_REP_LEGAUX=ANY, CONNEXION_SECRETE=N,
             MODIF_CONF_CODE=ANY, DESTDMP=N, DESTMSSANTEPS=N, DESTMSSANTEPAT=Y),
        ps_leg=False, patient_leg=True,
        meaning="send to the patient only",
    ),
    MatrixCase(
        0,
        _row(MASQUE_PS=ANY, INVISIBLE_PATIENT=ANY, INVISIBLE_REP_LEGAUX=ANY, CONNEXION_SECRETE=ANY,
             MODIF_CONF_CODE=ANY, DESTDMP=Y, DESTMSSANTEPS=N, DESTMSSANTEPAT=N),
        ps_leg=False, patient_leg=False,
        meaning="DMP only, no MSSanté exchange",
        note="outside the MSSanté matrix (which only governs MSSanté exchanges): our choice, documented",
    ),
)

# DMP confidentiality codes for the restriction flags: TRE_A07 StatutVisibiliteDocument,
# OID 1.2.250.1.213.1.1.4.13 (JDV_J58 ConfidentialityCode-DMP). CONNEXION_SECRETE is not a
# document code: it is the VIHF "confidentiality-code" attribute of the connection (mapping.md,
# VIHF table); MODIF_CONF_CODE asks for a change of an existing document's codes. Neither
# becomes a DocumentEntry code.
VISIBILITY_OID = "1.2.250.1.213.1.1.4.13"
CONFIDENTIALITY_FOR_FLAG: dict[str, tuple[str, str]] = {
    "MASQUE_PS": ("MASQUE_PS", "Masqué aux professionnels de santé"),
    "INVISIBLE_PATIENT": ("INVISIBLE_PATIENT", "Non visible par le patient"),
    "INVISIBLE_REP_LEGAUX": ("INVISIBLE_REPRESENTANTS_LEGAUX", "Non visible par les représentants légaux du patient"),
}


@dataclass(frozen=True)
class Code:
    code: str
    scheme: str
    display: str


@dataclass(frozen=True)
class Routing:
    case: int
    dmp_leg: bool
    ps_leg: bool
    patient_leg: bool
    ack_reception: bool
    ack_lecture: bool
    restrictions: frozenset[str]  # restriction flags set to Y
    confidentiality: tuple[Code, ...]  # extra DMP/XDM confidentiality codes, in table order


class FlagError(Hl7Error):
    pass


def complete_flags(found: Mapping[str, bool]) -> dict[str, bool]:
    """Apply defaults, refuse unknown or missing flags (101 missing, 103 unknown)."""
    for name in found:
        if name not in YES_NO_FLAGS:
            raise FlagError(ErrorCode.TABLE_VALUE_NOT_FOUND, f"unknown MetaDMPMSS flag {name}", Location("OBX", 1, 3, 1))
    missing = [name for name in REQUIRED_FLAGS if name not in found]
    if missing:
        raise FlagError(
            ErrorCode.REQUIRED_FIELD_MISSING, "missing MetaDMPMSS flag(s): " + ", ".join(missing), Location("OBX", 1, 3)
        )
    flags = dict(FLAG_DEFAULTS)
    flags.update(found)
    return flags


def matching_cases(flags: Mapping[str, bool]) -> list[MatrixCase]:
    return [case for case in MATRIX if case.matches(flags)]


def decide_routing(found: Mapping[str, bool]) -> Routing:
    flags = complete_flags(found)
    cases = matching_cases(flags)
    if len(cases) != 1:
        shown = " ".join(f"{name}={'Y' if flags[name] else 'N'}" for name in ROUTING_FLAGS)
        raise FlagError(
            ErrorCode.APPLICATION_ERROR,
            f"flag combination not allowed by the MSSanté matrix (regles-gestion-mssante): {shown}",
            Location("OBX", 1, 5),
        )
    case = cases[0]
    restrictions = frozenset(name for name in RESTRICTION_FLAGS if flags[name])
    confidentiality = tuple(
        Code(CONFIDENTIALITY_FOR_FLAG[name][0], VISIBILITY_OID, CONFIDENTIALITY_FOR_FLAG[name][1])
        for name in RESTRICTION_FLAGS
        if name in CONFIDENTIALITY_FOR_FLAG and flags[name]
    )
    return Routing(
        case=case.case,
        dmp_leg=flags["DESTDMP"],
        ps_leg=case.ps_leg,
        patient_leg=case.patient_leg,
        ack_reception=flags["ACK_RECEPTION"],
        ack_lecture=flags["ACK_LECTURE_MSS"],
        restrictions=restrictions,
        confidentiality=confidentiality,
    )
