"""From a parsed ORU^R01 / MDM^T02/T04/T10 message to a typed `YRequest` (no I/O).

Field meanings follow the ANS guide (profils-messages.md): the document OBX (ED, Base64,
`^TEXT^XML^Base64^`), its PRT participants (SB author, RCT recipients, REPLY), the MetaDMPMSS
OBX flags and the CORPSMAIL_* bodies, `NTE|1|||FIN|` after DESTMSSANTEPAT (SPECS.md §4).
"""

from __future__ import annotations

import base64
import binascii
import enum
import re
from dataclasses import dataclass, field

from mssante.y.flags import ALL_CODES, BODY_CODES, YES_NO_FLAGS
from mssante.y.hl7 import (
    ErrorCode,
    Hl7Error,
    Hl7Limits,
    Location,
    Message,
    Segment,
    components,
    parse_message,
    validate_structure,
)
from mssante.y.ins import ALL_INS_OIDS, Identity

META_SYSTEM = "MetaDMPMSS"
_BASE64 = re.compile(rb"[A-Za-z0-9+/]*={0,2}")


class YAction(enum.Enum):
    SUBMIT = "submit"  # initial transmission
    REPLACE = "replace"  # MDM^T10, OBX-11 = C, or an RPLC relatedDocument
    DELETE = "delete"  # OBX-11 = D (or MDM^T04 with D)


@dataclass(frozen=True)
class HD:
    """Hierarchic designator (MSH-3..6): namespace id, universal id."""

    namespace: str
    universal_id: str = ""

    def __str__(self) -> str:
        return self.namespace or self.universal_id


@dataclass(frozen=True)
class PersonRef:
    id: str
    family: str
    given: str
    id_oid: str  # XCN-9 assigning authority universal id
    id_type: str  # XCN-13 (IDNPS, RPPS, INS...)


@dataclass(frozen=True)
class OrganizationRef:
    name: str
    id: str  # XON-10
    id_oid: str  # XON-6.2
    id_type: str  # XON-7 (FINEG, FINEJ, UF...)


@dataclass(frozen=True)
class Participant:
    role: str  # SB, RCT, REPLY
    person: PersonRef | None
    organization: OrganizationRef | None
    device: str  # PRT-10.1
    address: str | None  # PRT-15.4 when PRT-15.3 = X.400
    location: Location

    @property
    def is_patient(self) -> bool:
        return self.person is not None and (self.person.id_type == "INS" or self.person.id_oid in ALL_INS_OIDS)


@dataclass(frozen=True)
class Document:
    """One CDA carried in an ED OBX (bytes never logged)."""

    set_id: str  # OBX-1
    type_code: str  # OBX-3.1 (LOINC)
    type_label: str  # OBX-3.2
    type_system: str  # OBX-3.3
    data: bytes
    result_status: str  # OBX-11 F / C / D
    location: Location


@dataclass(frozen=True)
class Patient:
    identity: Identity
    identity_status: tuple[str, ...]  # PID-32 repetitions
    other_ids: tuple[tuple[str, str, str], ...]  # (id, assigning authority OID, type) of non-INS PID-3


@dataclass(frozen=True)
class YRequest:
    message_type: str  # ORU^R01, MDM^T02...
    structure: str
    action: YAction
    control_id: str
    processing_id: str
    version: str
    sending_application: HD
    sending_facility: HD
    receiving_application: HD
    receiving_facility: HD
    patient: Patient
    documents: tuple[Document, ...]
    flags: dict[str, bool]
    body_ps: str | None
    body_patient: str | None
    no_reply: bool  # NTE FIN after DESTMSSANTEPAT -> X-MSS-MES: FIN
    author: Participant | None
    recipients: tuple[Participant, ...]
    reply_to: str | None
    txa_unique_id: str | None  # TXA-12 (MDM)
    warnings: tuple[str, ...] = field(default=())


def _hd(seg: Segment, n: int) -> HD:
    return HD(seg.component(n, 1), seg.component(n, 2))


def _decode_base64(raw: str, location: Location, what: str) -> bytes:
    data = raw.strip().encode("ascii", errors="replace")
    data = data.translate(None, b" \t\n\r\x0b\x0c")  # what rb"\s" matches, without a regex pass
    if len(data) % 4 or not _BASE64.fullmatch(data):
        raise Hl7Error(ErrorCode.DATA_TYPE, f"{what} is not valid Base64", location)
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise Hl7Error(ErrorCode.DATA_TYPE, f"{what} is not valid Base64", location) from None


def _patient(pid: Segment) -> Patient:
    ins: str | None = None
    ins_oid: str | None = None
    others: list[tuple[str, str, str]] = []
    for rep in pid.repetitions(3):
        ident, id_type = components(rep, 1), components(rep, 5)
        oid = components(rep, 4, 2)
        if id_type == "INS" or oid in ALL_INS_OIDS:
            if ins is not None and ident != ins:
                raise Hl7Error(ErrorCode.CARDINALITY, "several different INS in PID-3", pid.location(3))
            ins, ins_oid = ident, oid
        elif ident:
            others.append((ident, oid, id_type))
    if not pid.field(3):
        raise Hl7Error(ErrorCode.REQUIRED_FIELD_MISSING, "PID-3 patient identifier is missing", pid.location(3))
    family: list[str] = []
    given: list[str] = []
    names = pid.repetitions(5)
    names.sort(key=lambda r: 0 if components(r, 7) == "L" else 1)
    for rep in names:
        if components(rep, 1):
            family.append(components(rep, 1))
        # XPN-2 first given name, XPN-3 further given names (space separated in France).
        for g in [components(rep, 2)] + components(rep, 3).split(" "):
            if g and g not in given:
                given.append(g)
    birth = pid.component(7)
    if birth and (not birth[:8].isdigit() or len(birth) < 4):
        raise Hl7Error(ErrorCode.DATA_TYPE, "PID-7 birth date is not a date", pid.location(7))
    sex = pid.component(8) or None
    if sex is not None and sex not in ("M", "F", "U", "O", "A", "N"):
        raise Hl7Error(ErrorCode.TABLE_VALUE_NOT_FOUND, "PID-8 sex is not in table 0001", pid.location(8))
    status = tuple(pid.component(32, 1, rep=i) for i in range(len(pid.repetitions(32))))
    identity = Identity(ins, ins_oid, tuple(family), tuple(given), birth[:8] or None, sex)
    return Patient(identity, status, tuple(others))


def _participant(seg: Segment) -> Participant:
    role = seg.component(4, 1)
    person: PersonRef | None = None
    if seg.component(5, 1) or seg.component(5, 2):
        person = PersonRef(
            id=seg.component(5, 1),
            family=seg.component(5, 2),
            given=seg.component(5, 3),
            id_oid=seg.component(5, 9, sub=2) or seg.component(5, 9),
            id_type=seg.component(5, 13),
        )
    organization: OrganizationRef | None = None
    if seg.component(8, 1) or seg.component(8, 10):
        organization = OrganizationRef(
            name=seg.component(8, 1),
            id=seg.component(8, 10),
            id_oid=seg.component(8, 6, sub=2) or seg.component(8, 6),
            id_type=seg.component(8, 7),
        )
    address: str | None = None
    for i in range(len(seg.repetitions(15))):
        if seg.component(15, 3, rep=i).upper() == "X.400" and seg.component(15, 4, rep=i):
            address = seg.component(15, 4, rep=i).strip()
            break
    return Participant(role, person, organization, seg.component(10, 1), address, seg.location(4))


def build_request(msg: Message) -> YRequest:
    """Validate the structure and extract every field a Y delivery needs. Raises Hl7Error."""
    validate_structure(msg)
    msh = msg.msh
    pid = msg.all("PID")[0]
    patient = _patient(pid)
    documents: list[Document] = []
    found: dict[str, bool] = {}
    bodies: dict[str, str] = {}
    warnings: list[str] = []
    no_reply = False
    participants: list[Participant] = []
    last_code = ""
    for seg in msg.segments:
        if seg.name == "PRT":
            participants.append(_participant(seg))
            continue
        if seg.name == "NTE":
            if last_code == "DESTMSSANTEPAT" and "FIN" in (seg.component(3).upper(), seg.component(4).upper()):
                no_reply = True
            continue
        if seg.name != "OBX":
            continue
        value_type = seg.component(2)
        code, label, system = seg.component(3, 1), seg.component(3, 2), seg.component(3, 3)
        last_code = code
        if system == META_SYSTEM:
            if code not in ALL_CODES:
                raise Hl7Error(
                    ErrorCode.TABLE_VALUE_NOT_FOUND, f"unknown MetaDMPMSS code {code}", seg.location(3, 1)
                )
            if code in found or code in bodies:
                raise Hl7Error(ErrorCode.CARDINALITY, f"MetaDMPMSS code {code} appears twice", seg.location(3, 1))
            if code in YES_NO_FLAGS:
                if value_type not in ("CE", "CWE"):
                    raise Hl7Error(ErrorCode.DATA_TYPE, f"{code} must be CE or CWE", seg.location(2))
                value = seg.component(5, 1).upper()
                if value not in ("Y", "N"):
                    raise Hl7Error(
                        ErrorCode.TABLE_VALUE_NOT_FOUND, f"{code} must be Y or N (table 0136)", seg.location(5, 1)
                    )
                found[code] = value == "Y"
            elif code in BODY_CODES:
                if value_type != "ED":
                    raise Hl7Error(ErrorCode.DATA_TYPE, f"{code} must be ED", seg.location(2))
                try:
                    raw = _decode_base64(seg.component(5, 5), seg.location(5, 5), code)
                    bodies[code] = raw.decode("utf-8")
                except (Hl7Error, UnicodeDecodeError):
                    # Only the mail text is lost: warn and fall back to the default body
                    # (the ANS ORU examples carry a truncated CORPSMAIL_PS).
                    warnings.append(f"{code} is not valid Base64 UTF-8 text: default body used")
            continue
        if value_type != "ED":
            continue  # other observations are not ours to interpret (profils-messages.md)
        if seg.component(5, 4).upper() != "BASE64" or seg.component(5, 3).upper() != "XML":
            raise Hl7Error(ErrorCode.DATA_TYPE, "document OBX-5 must be ^TEXT^XML^Base64^<data>", seg.location(5))
        data = _decode_base64(seg.component(5, 5), seg.location(5, 5), f"OBX {seg.component(1)} document")
        if not data:
            raise Hl7Error(ErrorCode.REQUIRED_FIELD_MISSING, "the document OBX carries no data", seg.location(5, 5))
        status = seg.component(11).upper()
        if status not in ("F", "C", "D"):
            raise Hl7Error(ErrorCode.TABLE_VALUE_NOT_FOUND, "OBX-11 must be F, C or D", seg.location(11))
        documents.append(Document(seg.component(1), code, label, system, data, status, seg.location(5, 5)))
    if not documents:
        raise Hl7Error(ErrorCode.SEGMENT_SEQUENCE, "no OBX carries a CDA document", Location("OBX"))
    if msg.message_code == "MDM" and len(documents) != 1:
        raise Hl7Error(ErrorCode.CARDINALITY, "an MDM message carries exactly one document", documents[1].location)
    if len(documents) > 2:
        raise Hl7Error(ErrorCode.CARDINALITY, "an ORU message carries one or two documents", documents[2].location)
    statuses = {d.result_status for d in documents}
    if len(statuses) != 1:
        raise Hl7Error(ErrorCode.APPLICATION_ERROR, "documents of one message disagree on OBX-11", documents[1].location)
    status = statuses.pop()
    if status == "D":
        action = YAction.DELETE
    elif status == "C" or msg.trigger_event == "T10":
        action = YAction.REPLACE
    elif msg.trigger_event == "T04":
        raise Hl7Error(ErrorCode.APPLICATION_ERROR, "MDM^T04 is only used for deletion (OBX-11 = D)", documents[0].location)
    else:
        action = YAction.SUBMIT
    authors = [p for p in participants if p.role == "SB"]
    if len(authors) > 1:
        raise Hl7Error(ErrorCode.CARDINALITY, "more than one PRT SB (sent by)", authors[1].location)
    replies = [p for p in participants if p.role == "REPLY"]
    if len(replies) > 1:
        raise Hl7Error(ErrorCode.CARDINALITY, "more than one PRT REPLY", replies[1].location)
    for p in participants:
        if p.role not in ("SB", "RCT", "REPLY"):
            raise Hl7Error(ErrorCode.TABLE_VALUE_NOT_FOUND, f"unknown PRT-4 participation {p.role}", p.location)
    if replies and not replies[0].address:
        raise Hl7Error(ErrorCode.REQUIRED_FIELD_MISSING, "PRT REPLY without an X.400 address", replies[0].location)
    txa = msg.first("TXA")
    return YRequest(
        message_type=msg.type,
        structure=msg.structure,
        action=action,
        control_id=msg.control_id,
        processing_id=msg.processing_id,
        version=msg.version,
        sending_application=_hd(msh, 3),
        sending_facility=_hd(msh, 4),
        receiving_application=_hd(msh, 5),
        receiving_facility=_hd(msh, 6),
        patient=patient,
        documents=tuple(documents),
        flags=found,
        body_ps=bodies.get("CORPSMAIL_PS"),
        body_patient=bodies.get("CORPSMAIL_PATIENT"),
        no_reply=no_reply,
        author=authors[0] if authors else None,
        recipients=tuple(p for p in participants if p.role == "RCT"),
        reply_to=replies[0].address if replies else None,
        txa_unique_id=(txa.component(12, 1) or None) if txa is not None else None,
        warnings=tuple(warnings),
    )


def parse_request(data: bytes, limits: Hl7Limits | None = None) -> tuple[Message, YRequest]:
    msg = parse_message(data, limits)
    return msg, build_request(msg)
