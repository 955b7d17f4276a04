"""Hardened CDA R2 header extraction for XDM/XDS metadata (no I/O, no network, no DTD).

The header fields follow the CI-SIS annex "lien entre l'en-tête CDA et les métadonnées XDS"
as summarised in the ANS guide mapping.md (DocumentEntry table). A DOCTYPE or any entity
declaration is refused outright (CONTRACTS.md XML rule), before and after parsing.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from lxml import etree

from mssante.y.hl7 import AppErrorCode, ErrorCode, Hl7Error, Location

NS = {"cda": "urn:hl7-org:v3"}
IDNPS_OID = "1.2.250.1.71.4.2.1"
STRUCTURE_OID = "1.2.250.1.71.4.2.2"
DEFAULT_MAX_CDA_BYTES = 15 * 1024 * 1024


class CdaError(Hl7Error):
    def __init__(self, message: str, location: Location | None = None, app_code: AppErrorCode | None = None) -> None:
        super().__init__(ErrorCode.APPLICATION_ERROR, message, location or Location("OBX", 1, 5), app_code=app_code)


@dataclass(frozen=True)
class Coded:
    code: str
    scheme: str
    display: str


@dataclass(frozen=True)
class Person:
    id: str | None
    id_root: str | None
    family: str
    given: str
    prefix: str = ""


@dataclass(frozen=True)
class Organization:
    id: str | None
    id_root: str | None
    name: str


@dataclass(frozen=True)
class CdaHeader:
    document_id: str  # uniqueId: root or root^extension (XDS DocumentEntry.uniqueId)
    code: Coded  # LOINC type code (typeCode / X-MSS-CODECDA)
    title: str
    effective_time: str  # raw HL7 TS (creationTime)
    confidentiality: Coded
    language: str
    set_id: str | None
    version_number: int | None
    replaced_document_id: str | None  # relatedDocument[@typeCode=RPLC]/parentDocument/id
    patient_ids: tuple[tuple[str, str], ...]  # (root, extension) of recordTarget/patientRole/id
    patient_family: tuple[str, ...]  # birth name (qualifier BR) first
    patient_given: tuple[str, ...]
    patient_birth_time: str | None
    patient_sex: str | None
    author: Person | None
    author_role: Coded | None  # functionCode
    author_specialty: Coded | None  # assignedAuthor/code
    author_organization: Organization | None
    custodian: Organization | None
    legal_authenticator: Person | None
    service_start: str | None
    service_stop: str | None
    facility_type: Coded | None  # healthCareFacility/code (healthcareFacilityTypeCode)
    practice_setting: Coded | None  # performer/.../standardIndustryClassCode (practiceSettingCode)
    template_ids: tuple[str, ...]
    structured_body: bool  # level 3 (structuredBody) vs level 1 (nonXMLBody)

    def patient_ins(self, oids: tuple[str, ...]) -> tuple[str, str] | None:
        """(INS, OID) from recordTarget/patientRole/id when its root is one of `oids`."""
        for root, ext in self.patient_ids:
            if root in oids and ext:
                return ext, root
        return None


def _parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=False,
    )


_ENTITY = re.compile(rb"<!ENTITY", re.IGNORECASE)  # ASCII case-insensitive, like bytes.upper(), without the copy


def reject_doctype(data: bytes, what: str) -> None:
    head = data[:4096].upper()
    if b"<!DOCTYPE" in head or _ENTITY.search(data) is not None:
        raise CdaError(f"{what} contains a DOCTYPE or an entity declaration")


def parse_xml(data: bytes, what: str, max_bytes: int) -> etree._Element:
    """Parse untrusted XML with entity resolution, network and DTD off; refuse DOCTYPE."""
    if len(data) > max_bytes:
        raise CdaError(f"{what} of {len(data)} bytes exceeds the {max_bytes}-byte limit")
    reject_doctype(data, what)
    try:
        tree = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        text = str(exc).lower()
        if any(k in text for k in ("huge", "too long", "too big", "resource limit")):
            # libxml2's 10 MB text-node ceiling: huge_tree stays off (CONTRACTS.md XML rule)
            raise CdaError(f"{what} holds a text node above the 10 MB XML parser limit") from None
        raise CdaError(f"{what} is not well-formed XML") from None
    if tree.getroottree().docinfo.doctype:
        raise CdaError(f"{what} contains a DOCTYPE")
    return tree


def _attr(el: etree._Element | None, name: str) -> str:
    if el is None:
        return ""
    return str(el.get(name) or "").strip()


@functools.lru_cache(maxsize=128)
def _xpath(path: str) -> etree.XPath:
    """A compiled XPath (compiling one on every call cost a quarter of the header parse)."""
    return etree.XPath(path, namespaces=NS)


def _one(root: etree._Element, path: str) -> etree._Element | None:
    found = _xpath(path)(root)
    return found[0] if isinstance(found, list) and found else None


def _text(el: etree._Element | None) -> str:
    return " ".join("".join(el.itertext()).split()) if el is not None else ""


def _coded(el: etree._Element | None) -> Coded | None:
    if el is None or not _attr(el, "code"):
        return None
    return Coded(_attr(el, "code"), _attr(el, "codeSystem"), _attr(el, "displayName"))


def _ii(el: etree._Element | None) -> tuple[str | None, str | None]:
    if el is None or el.get("nullFlavor"):
        return None, None
    root, ext = _attr(el, "root"), _attr(el, "extension")
    return (ext or None), (root or None)


def _unique_id(el: etree._Element | None) -> str | None:
    if el is None:
        return None
    root, ext = _attr(el, "root"), _attr(el, "extension")
    if not root:
        return None
    return f"{root}^{ext}" if ext else root


def _person(entity: etree._Element | None, person_tag: str) -> Person | None:
    if entity is None:
        return None
    ident, root = _ii(_one(entity, "cda:id"))
    name = _one(entity, f"cda:{person_tag}/cda:name")
    return Person(
        id=ident,
        id_root=root,
        family=_text(_one(name, "cda:family")) if name is not None else "",
        given=_text(_one(name, "cda:given")) if name is not None else "",
        prefix=_text(_one(name, "cda:prefix")) if name is not None else "",
    )


def _organization(el: etree._Element | None) -> Organization | None:
    if el is None:
        return None
    ident, root = _ii(_one(el, "cda:id"))
    return Organization(ident, root, _text(_one(el, "cda:name")))


def parse_cda_header(data: bytes, *, max_bytes: int = DEFAULT_MAX_CDA_BYTES) -> CdaHeader:
    root = parse_xml(data, "the CDA document", max_bytes)
    if etree.QName(root).localname != "ClinicalDocument" or etree.QName(root).namespace != NS["cda"]:
        raise CdaError("the document is not an HL7 CDA R2 ClinicalDocument")
    doc_id = _unique_id(_one(root, "cda:id"))
    if not doc_id:
        raise CdaError("the CDA has no id (XDS uniqueId)")
    code = _coded(_one(root, "cda:code"))
    if code is None:
        raise CdaError("the CDA has no document code")
    conf = _coded(_one(root, "cda:confidentialityCode")) or Coded("N", "2.16.840.1.113883.5.25", "Normal")
    version_el = _one(root, "cda:versionNumber")
    version: int | None = None
    if version_el is not None and _attr(version_el, "value").isdigit():
        version = int(_attr(version_el, "value"))
    patient_role = _one(root, "cda:recordTarget/cda:patientRole")
    if patient_role is None:
        raise CdaError("the CDA has no recordTarget/patientRole", app_code=AppErrorCode.NO_INS)
    ids = tuple(
        (_attr(i, "root"), _attr(i, "extension"))
        for i in _xpath("cda:id")(patient_role)
        if isinstance(i, etree._Element)
    )
    name = _one(patient_role, "cda:patient/cda:name")
    families: list[str] = []
    givens: list[str] = []
    if name is not None:
        fam = [f for f in _xpath("cda:family")(name) if isinstance(f, etree._Element)]
        fam.sort(key=lambda f: 0 if f.get("qualifier") == "BR" else 1)
        families = [_text(f) for f in fam if _text(f)]
        giv = [g for g in _xpath("cda:given")(name) if isinstance(g, etree._Element)]
        givens = [_text(g) for g in giv if _text(g)]
    author_el = _one(root, "cda:author/cda:assignedAuthor")
    perf_org = _one(
        root,
        "cda:documentationOf/cda:serviceEvent/cda:performer/cda:assignedEntity/cda:representedOrganization",
    )
    return CdaHeader(
        document_id=doc_id,
        code=code,
        title=_text(_one(root, "cda:title")),
        effective_time=_attr(_one(root, "cda:effectiveTime"), "value"),
        confidentiality=conf,
        language=_attr(_one(root, "cda:languageCode"), "code") or "fr-FR",
        set_id=_unique_id(_one(root, "cda:setId")),
        version_number=version,
        replaced_document_id=_unique_id(
            _one(root, "cda:relatedDocument[@typeCode='RPLC']/cda:parentDocument/cda:id")
        ),
        patient_ids=ids,
        patient_family=tuple(dict.fromkeys(families)),
        patient_given=tuple(givens),
        patient_birth_time=_attr(_one(patient_role, "cda:patient/cda:birthTime"), "value") or None,
        patient_sex=_attr(_one(patient_role, "cda:patient/cda:administrativeGenderCode"), "code") or None,
        author=_person(author_el, "assignedPerson"),
        author_role=_coded(_one(root, "cda:author/cda:functionCode")),
        author_specialty=_coded(_one(author_el, "cda:code")) if author_el is not None else None,
        author_organization=_organization(_one(author_el, "cda:representedOrganization"))
        if author_el is not None
        else None,
        custodian=_organization(
            _one(root, "cda:custodian/cda:assignedCustodian/cda:representedCustodianOrganization")
        ),
        legal_authenticator=_person(_one(root, "cda:legalAuthenticator/cda:assignedEntity"), "assignedPerson"),
        service_start=_attr(_one(root, "cda:documentationOf/cda:serviceEvent/cda:effectiveTime/cda:low"), "value")
        or None,
        service_stop=_attr(_one(root, "cda:documentationOf/cda:serviceEvent/cda:effectiveTime/cda:high"), "value")
        or None,
        facility_type=_coded(
            _one(root, "cda:componentOf/cda:encompassingEncounter/cda:location/cda:healthCareFacility/cda:code")
        ),
        practice_setting=_coded(_one(perf_org, "cda:standardIndustryClassCode")) if perf_org is not None else None,
        template_ids=tuple(
            _attr(t, "root") for t in _xpath("cda:templateId")(root) if isinstance(t, etree._Element)
        ),
        structured_body=_one(root, "cda:component/cda:structuredBody") is not None,
    )
