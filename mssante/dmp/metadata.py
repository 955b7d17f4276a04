"""CDA R2 header -> XDS metadata for the DMP (pure: no I/O, time is a parameter).

Sources (SPECS.md §4 "The DMP leg"):
- ANS guide ansforge/IG-hl7v2-volet-transmission-document-cda-r2, page `mapping.md`
  ("Mapping XDS": lot de soumission and fiche tables) and `lien-entete-cda-meta-xds.md`
  (CI-SIS annex "Lien entre l'en-tête CDA et les métadonnées XDS").
- Restriction flags -> confidentialityCode: TRE_A07-StatutVisibiliteDocument (1.2.250.1.213.1.1.4.13).
The full mapping table is written down in docs/dmp.md; every rule below names its row.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone

from lxml import etree

from .api import DmpAction, DmpRequest
from .ins import INS_OIDS, patient_id_cx
from .xmlsafe import UnsafeXmlError, parse_xml

HL7 = "urn:hl7-org:v3"
_NS = {"h": HL7}

OID_IDNPS = "1.2.250.1.71.4.2.1"
OID_STRUCTURE = "1.2.250.1.71.4.2.2"
OID_CONFIDENTIALITY_HL7 = "2.16.840.1.113883.5.25"
OID_VISIBILITY = "1.2.250.1.213.1.1.4.13"  # TRE_A07-StatutVisibiliteDocument
OID_IHE_FORMAT = "1.3.6.1.4.1.19376.1.2.3"  # TRE_A11-IheFormatCode
OID_CLASS = "1.2.250.1.213.1.1.4.1"  # TRE_A03-ClasseDocument (JDV_J57-ClassCode-DMP)
OID_LOINC = "2.16.840.1.113883.6.1"

# Restriction flag (HL7 OBX MetaDMPMSS, SPECS.md §4) -> DMP confidentialityCode (TRE_A07).
# CONNEXION_SECRETE is not a document code: it goes into the VIHF
# (resource:patient:hl7:confidentiality-code, mapping.md "Mapping VIHF"). MODIF_CONF_CODE only
# says that a replacement changes the confidentiality levels; it adds no code of its own.
RESTRICTION_CODES: Mapping[str, tuple[str, str]] = {
    "MASQUE_PS": ("MASQUE_PS", "Masqué aux professionnels de santé"),
    "INVISIBLE_PATIENT": ("INVISIBLE_PATIENT", "Non visible par le patient"),
    "INVISIBLE_REP_LEGAUX": ("INVISIBLE_REPRESENTANTS_LEGAUX", "Non visible par les représentants légaux du patient"),
}
KNOWN_RESTRICTIONS = frozenset(RESTRICTION_CODES) | {"CONNEXION_SECRETE", "MODIF_CONF_CODE"}

# formatCode of a CDA level 1 (nonXMLBody) from its mediaType: ASS_A12-CorresMediaTypeCDANonStructure.
FORMAT_BY_MEDIA_TYPE: Mapping[str, str] = {
    "application/pdf": "urn:ihe:iti:xds-sd:pdf:2008",
    "text/plain": "urn:ihe:iti:xds-sd:text:2008",
    "text/rtf": "urn:ihe:iti-fr:xds-sd:rtf:2010",
    "image/jpeg": "urn:ihe:iti-fr:xds-sd:jpeg:2010",
}
# formatCode of a structured CDA from its CI-SIS template: a subset of ASS_A11-CorresModeleCDA-XdsFormatCode.
# Extend it through XdsSettings.format_by_template.
FORMAT_BY_TEMPLATE: Mapping[str, str] = {
    "1.2.250.1.213.1.1.1.55": "urn:ihe:lab:xd-lab:2008",  # CR-BIO (compte rendu de biologie)
}
# classCode from the document type (ASS_X04-CorrespondanceType-Classe), a subset [partial; extend via settings].
CLASS_BY_TYPE: Mapping[str, tuple[str, str]] = {
    "11502-2": ("10", "Compte rendu"),  # CR d'examens biologiques
    "18748-4": ("10", "Compte rendu"),  # CR d'imagerie médicale
    "11526-1": ("10", "Compte rendu"),  # CR d'anatomie et de cytologie pathologiques
    "34874-8": ("10", "Compte rendu"),  # CR opératoire
    "11490-0": ("10", "Compte rendu"),  # Lettre de liaison à la sortie
    "11488-4": ("10", "Compte rendu"),  # CR de consultation
    "34133-9": ("11", "Synthèse"),
    "60591-5": ("11", "Synthèse"),  # Volet de synthèse médicale
}


class CdaHeaderError(ValueError):
    """The CDA header lacks an element the XDS mapping requires, or is not a CDA at all."""


@dataclass(frozen=True)
class Code:
    code: str
    scheme: str  # codingScheme slot (an OID)
    display: str = ""


@dataclass(frozen=True)
class CdaPerson:
    id_root: str
    id_ext: str
    family: str
    given: str
    specialty: Code | None = None  # assignedAuthor/code -> authorSpecialty
    role: Code | None = None  # author/functionCode -> authorRole


@dataclass(frozen=True)
class CdaHeader:
    unique_id: str
    type_code: Code
    title: str
    effective_time: str
    confidentiality: Code
    language: str
    ins: str | None
    ins_oid: str | None
    local_patient_id: tuple[str, str] | None  # (extension, root): IPP for sourcePatientId
    author: CdaPerson
    author_org_id: str | None
    author_org_name: str | None
    legal_authenticator: CdaPerson | None
    service_start: str | None
    service_stop: str | None
    practice_setting: Code | None
    facility_type: Code | None
    template_ids: tuple[str, ...]
    non_xml_media_type: str | None
    replaced_ids: tuple[str, ...]  # relatedDocument[@typeCode=RPLC]/parentDocument/id


def _attr(el: etree._Element | None, name: str) -> str | None:
    if el is None:
        return None
    v = el.get(name)
    return v.strip() if v and v.strip() else None


def _first(root: etree._Element, path: str) -> etree._Element | None:
    return root.find(path, _NS)  # ElementPath: cheaper than XPath for these fixed child paths


def _text(el: etree._Element | None) -> str:
    return " ".join("".join(el.itertext()).split()) if el is not None else ""


def _ii(el: etree._Element | None) -> str | None:
    """CI-SIS uniqueId of an II: root, or root^extension when an extension is present."""
    root = _attr(el, "root")
    if root is None:
        return None
    ext = _attr(el, "extension")
    return f"{root}^{ext}" if ext else root


def _code(el: etree._Element | None) -> Code | None:
    code = _attr(el, "code")
    scheme = _attr(el, "codeSystem")
    if code is None or scheme is None:
        return None
    return Code(code, scheme, _attr(el, "displayName") or "")


def _person(el: etree._Element | None, *, with_role: etree._Element | None = None) -> CdaPerson | None:
    if el is None:
        return None
    pid = _first(el, "h:id")
    root, ext = _attr(pid, "root"), _attr(pid, "extension")
    if root is None or ext is None:
        return None
    name = _first(el, "h:assignedPerson/h:name")
    return CdaPerson(
        id_root=root,
        id_ext=ext,
        family=_text(_first(name, "h:family")) if name is not None else "",
        given=_text(_first(name, "h:given")) if name is not None else "",
        specialty=_code(_first(el, "h:code")),
        role=_code(with_role),
    )


def parse_cda_header(cda: bytes) -> CdaHeader:
    """Read the header fields the XDS mapping needs (mapping.md "Fiche" table)."""
    try:
        root = parse_xml(cda)
    except UnsafeXmlError as exc:
        raise CdaHeaderError(f"CDA is not acceptable XML: {exc}") from None
    if root.tag != f"{{{HL7}}}ClinicalDocument":
        raise CdaHeaderError("root element is not hl7:ClinicalDocument")
    unique_id = _ii(_first(root, "h:id"))
    if unique_id is None:
        raise CdaHeaderError("ClinicalDocument/id@root is missing (uniqueId)")
    type_code = _code(_first(root, "h:code"))
    if type_code is None:
        raise CdaHeaderError("ClinicalDocument/code is missing (typeCode)")
    effective = _attr(_first(root, "h:effectiveTime"), "value")
    if effective is None:
        raise CdaHeaderError("ClinicalDocument/effectiveTime is missing (creationTime)")
    conf = _code(_first(root, "h:confidentialityCode"))
    if conf is None:
        raise CdaHeaderError("ClinicalDocument/confidentialityCode is missing")
    language = _attr(_first(root, "h:languageCode"), "code")
    if language is None:
        raise CdaHeaderError("ClinicalDocument/languageCode is missing")
    title = _text(_first(root, "h:title"))
    if not title:
        raise CdaHeaderError("ClinicalDocument/title is missing")
    ins = ins_oid = None
    local: tuple[str, str] | None = None
    for pid in root.findall("h:recordTarget/h:patientRole/h:id", _NS):
        r, e = _attr(pid, "root"), _attr(pid, "extension")
        if r in INS_OIDS and e and ins is None:
            ins, ins_oid = e, r
        elif r and e and local is None and r not in INS_OIDS:
            local = (e, r)
    author_el = _first(root, "h:author/h:assignedAuthor")
    author = _person(author_el, with_role=_first(root, "h:author/h:functionCode"))
    if author is None:
        raise CdaHeaderError("author/assignedAuthor/id is missing (authorPerson)")
    org = _first(root, "h:author/h:assignedAuthor/h:representedOrganization")
    low = _attr(_first(root, "h:documentationOf/h:serviceEvent/h:effectiveTime/h:low"), "value")
    high = _attr(_first(root, "h:documentationOf/h:serviceEvent/h:effectiveTime/h:high"), "value")
    return CdaHeader(
        unique_id=unique_id,
        type_code=type_code,
        title=title,
        effective_time=effective,
        confidentiality=conf,
        language=language,
        ins=ins,
        ins_oid=ins_oid,
        local_patient_id=local,
        author=author,
        author_org_id=_attr(_first(org, "h:id"), "extension") if org is not None else None,
        author_org_name=_text(_first(org, "h:name")) or None if org is not None else None,
        legal_authenticator=_person(_first(root, "h:legalAuthenticator/h:assignedEntity")),
        service_start=low,
        service_stop=high,
        practice_setting=_code(
            _first(
                root,
                "h:documentationOf/h:serviceEvent/h:performer/h:assignedEntity/"
                "h:representedOrganization/h:standardIndustryClassCode",
            )
        ),
        facility_type=_code(_first(root, "h:componentOf/h:encompassingEncounter/h:location/h:healthCareFacility/h:code")),
        template_ids=tuple(t.get("root", "") for t in root.findall("h:templateId", _NS)),
        non_xml_media_type=_attr(_first(root, "h:component/h:nonXMLBody/h:text"), "mediaType"),
        replaced_ids=tuple(
            i
            for i in (
                _ii(e)
                for e in root.findall("h:relatedDocument[@typeCode='RPLC']/h:parentDocument/h:id", _NS)
            )
            if i
        ),
    )


def hl7_ts_to_xds_utc(value: str) -> str:
    """HL7 TS (YYYYMMDD[hhmm[ss]][+zzzz]) -> XDS DTM in UTC (ITI TF-3 §4.2.3.1.7: UTC, no offset)."""
    v = value.strip()
    sign_at = max(v.find("+"), v.find("-"))
    digits, offset = (v[:sign_at], v[sign_at:]) if sign_at > 0 else (v, "")
    digits = digits.split(".")[0]
    if not digits.isdigit() or len(digits) < 4 or len(digits) > 14 or len(digits) % 2:
        raise CdaHeaderError(f"not an HL7 timestamp: {value!r}")
    if not offset:
        return digits
    if len(offset) != 5 or not offset[1:].isdigit():
        raise CdaHeaderError(f"bad timezone offset in {value!r}")
    if len(digits) < 10:  # a date without hours: a timezone does not move it
        return digits
    padded = digits.ljust(14, "0")
    tz = timezone((1 if offset[0] == "+" else -1) * timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5])))
    try:
        local = datetime.strptime(padded, "%Y%m%d%H%M%S").replace(tzinfo=tz)
    except ValueError:
        raise CdaHeaderError(f"not a valid date: {value!r}") from None
    return local.astimezone(UTC).strftime("%Y%m%d%H%M%S")[: len(digits)]


_HL7_ESCAPES = (("\\", "\\E\\"), ("|", "\\F\\"), ("^", "\\S\\"), ("&", "\\T\\"), ("~", "\\R\\"))


def hl7_escape(value: str) -> str:
    """Escape HL7 v2 delimiters inside a component (HL7 v2.5 §2.7: \\F\\ \\S\\ \\T\\ \\R\\ \\E\\)."""
    for raw, escaped in _HL7_ESCAPES:
        value = value.replace(raw, escaped)
    return value


def xcn(person_id: str, family: str, given: str, root: str = OID_IDNPS) -> str:
    """authorPerson / legalAuthenticator in XCN form (SPECS.md §3):
    <IDNPS>^<NOM>^<Prénom>^^^^^^&1.2.250.1.71.4.2.1&ISO^D^^^IDNPS."""
    id_type = "IDNPS" if root == OID_IDNPS else "EI"
    e = hl7_escape
    return f"{e(person_id)}^{e(family)}^{e(given)}^^^^^^&{root}&ISO^D^^^{id_type}"


def xon(name: str, structure_id: str) -> str:
    """authorInstitution in XON form: <raison sociale>^^^^^&1.2.250.1.71.4.2.2&ISO^IDNST^^^<id>."""
    return f"{hl7_escape(name)}^^^^^&{OID_STRUCTURE}&ISO^IDNST^^^{hl7_escape(structure_id)}"


def cwe(code: Code) -> str:
    """authorRole / authorSpecialty as code^display^OID (CI-SIS CWE form)."""
    return f"{hl7_escape(code.code)}^{hl7_escape(code.display)}^{code.scheme}"


@dataclass(frozen=True)
class XdsSettings:
    """PFI parameters the message and CDA do not carry (mapping.md "Proposition", stratégie 1)."""

    source_id: str  # XDSSubmissionSet.sourceId: the PFI's OID
    content_type: Code = Code("07", "1.2.250.1.213.1.1.4.4", "Consultation externe")  # [unverified] JDV_J59
    default_facility_type: Code | None = None  # healthcareFacilityTypeCode when the CDA has none
    default_practice_setting: Code | None = None
    format_by_template: Mapping[str, str] = field(default_factory=dict)
    class_by_type: Mapping[str, tuple[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class DocumentEntry:
    entry_uuid: str
    unique_id: str
    patient_id: str
    source_patient_id: str
    mime_type: str
    hash_sha1: str
    size: int
    creation_time: str
    language: str
    title: str
    service_start: str | None
    service_stop: str | None
    legal_authenticator: str | None
    author_person: str
    author_institution: str
    author_role: str | None
    author_specialty: str | None
    class_code: Code
    type_code: Code
    format_code: Code
    confidentiality: tuple[Code, ...]
    facility_type: Code
    practice_setting: Code


@dataclass(frozen=True)
class SubmissionSet:
    entry_uuid: str
    unique_id: str
    source_id: str
    patient_id: str
    submission_time: str
    content_type: Code
    author_person: str
    author_institution: str
    title: str = ""


@dataclass(frozen=True)
class Submission:
    """One ITI-41 ProvideAndRegisterDocumentSet-b: a SubmissionSet, one DocumentEntry, its document."""

    submission_set: SubmissionSet
    document: DocumentEntry
    content_id: str  # MTOM Content-ID of the document part (without <>)
    replaces_entry_uuid: str | None = None  # RPLC target (the replaced DocumentEntry's entryUUID)


def _uuid_urn(new_uuid: Callable[[], uuid.UUID]) -> str:
    return f"urn:uuid:{new_uuid()}"


def oid_from_uuid(u: uuid.UUID) -> str:
    """A globally unique OID for a submission set: 2.25.<uuid as integer> (ITU-T X.667)."""
    return f"2.25.{u.int}"


def confidentiality_codes(header_code: Code, restrictions: frozenset[str]) -> tuple[Code, ...]:
    """mapping.md "confidentialityCode": first occurrence from the CDA, the others from the flags."""
    unknown = restrictions - KNOWN_RESTRICTIONS
    if unknown:
        raise CdaHeaderError(f"unknown restriction flags: {sorted(unknown)}")
    codes = [Code(header_code.code, header_code.scheme or OID_CONFIDENTIALITY_HL7, header_code.display)]
    for flag in sorted(restrictions):
        if flag in RESTRICTION_CODES:
            code, label = RESTRICTION_CODES[flag]
            codes.append(Code(code, OID_VISIBILITY, label))
    return tuple(codes)


def format_code(header: CdaHeader, settings: XdsSettings) -> Code:
    if header.non_xml_media_type is not None:  # CDA level 1: ASS_A12
        fmt = FORMAT_BY_MEDIA_TYPE.get(header.non_xml_media_type)
        if fmt is None:
            raise CdaHeaderError(f"no formatCode for nonXMLBody mediaType {header.non_xml_media_type!r}")
        return Code(fmt, OID_IHE_FORMAT)
    table = {**FORMAT_BY_TEMPLATE, **settings.format_by_template}
    for tid in header.template_ids:
        if tid in table:
            return Code(table[tid], OID_IHE_FORMAT)
    raise CdaHeaderError("no formatCode mapping for the CDA templateIds (ASS_A11); add one to the settings")


def class_code(header: CdaHeader, settings: XdsSettings) -> Code:
    table = {**CLASS_BY_TYPE, **settings.class_by_type}
    found = table.get(header.type_code.code)
    if found is None:
        raise CdaHeaderError(f"no classCode mapping for typeCode {header.type_code.code} (ASS_X04)")
    return Code(found[0], OID_CLASS, found[1])


def build_submission(
    request: DmpRequest,
    header: CdaHeader,
    settings: XdsSettings,
    *,
    now: datetime,
    new_uuid: Callable[[], uuid.UUID] = uuid.uuid4,
    replaces_entry_uuid: str | None = None,
) -> Submission:
    """The ITI-41 metadata for one document (mapping.md "Lot de soumission" and "Fiche")."""
    if request.action is DmpAction.DELETE:
        raise ValueError("a deletion is not an ITI-41 submission")
    patient_id = patient_id_cx(request.ins, request.ins_oid)
    author_institution = xon(request.structure_name, request.structure_id)
    facility = header.facility_type or settings.default_facility_type
    if facility is None:
        raise CdaHeaderError("healthCareFacility/code is missing (healthcareFacilityTypeCode)")
    practice = header.practice_setting or settings.default_practice_setting
    if practice is None:
        raise CdaHeaderError("standardIndustryClassCode is missing (practiceSettingCode)")
    if header.service_start is None:
        raise CdaHeaderError("serviceEvent/effectiveTime/low is missing (serviceStartTime)")
    local = header.local_patient_id
    source_patient_id = f"{local[0]}^^^&{local[1]}&ISO^PI" if local else patient_id
    la = header.legal_authenticator
    a = header.author
    document = DocumentEntry(
        entry_uuid=_uuid_urn(new_uuid),
        unique_id=request.document_unique_id or header.unique_id,
        patient_id=patient_id,
        source_patient_id=source_patient_id,
        mime_type="text/xml",
        hash_sha1=hashlib.sha1(request.cda, usedforsecurity=False).hexdigest(),  # ITI TF-3 4.2.3.2.11
        size=len(request.cda),
        creation_time=hl7_ts_to_xds_utc(header.effective_time),
        language=header.language,
        title=header.title,
        service_start=hl7_ts_to_xds_utc(header.service_start),
        service_stop=hl7_ts_to_xds_utc(header.service_stop) if header.service_stop else None,
        legal_authenticator=xcn(la.id_ext, la.family, la.given, la.id_root) if la else None,
        author_person=xcn(a.id_ext, a.family, a.given, a.id_root),
        # mapping.md note: the DMP requires the same authorInstitution on the fiche and the lot.
        author_institution=author_institution,
        author_role=cwe(a.role) if a.role else None,
        author_specialty=cwe(a.specialty) if a.specialty else None,
        class_code=class_code(header, settings),
        type_code=Code(header.type_code.code, header.type_code.scheme, header.type_code.display),
        format_code=format_code(header, settings),
        confidentiality=confidentiality_codes(header.confidentiality, request.restrictions),
        facility_type=facility,
        practice_setting=practice,
    )
    ss_uuid = new_uuid()
    submission_set = SubmissionSet(
        entry_uuid=f"urn:uuid:{ss_uuid}",
        unique_id=oid_from_uuid(ss_uuid),
        source_id=settings.source_id,
        patient_id=patient_id,
        submission_time=now.astimezone(UTC).strftime("%Y%m%d%H%M%S"),
        content_type=settings.content_type,
        author_person=xcn(request.author_idnps, request.author_family, request.author_given),
        author_institution=author_institution,
    )
    return Submission(
        submission_set=submission_set,
        document=document,
        content_id=f"{new_uuid().hex}@mssante.dmp",
        replaces_entry_uuid=replaces_entry_uuid,
    )
