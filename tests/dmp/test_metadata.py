"""CDA header -> XDS metadata, checked row by row against the ANS mapping tables (mapping.md)."""

from __future__ import annotations

import hashlib
import itertools
import uuid
from datetime import UTC, datetime

import pytest
from .dmp_support import INS, REAL_HL7, make_cda, make_request
from lxml import etree

from mssante.dmp import ebrim
from mssante.dmp.api import DmpAction
from mssante.dmp.metadata import (
    CdaHeaderError,
    Code,
    XdsSettings,
    build_submission,
    confidentiality_codes,
    hl7_ts_to_xds_utc,
    parse_cda_header,
)

NS = {"rim": ebrim.NS_RIM, "xdsb": ebrim.NS_XDSB, "lcm": ebrim.NS_LCM, "xop": ebrim.NS_XOP}
NOW = datetime(2026, 11, 23, 18, 30, 0, tzinfo=UTC)


def fixed_uuid_factory() -> object:
    counter = itertools.count(1)
    return lambda: uuid.UUID(int=next(counter))


def test_header_fields_from_the_ans_style_cda() -> None:
    h = parse_cda_header(make_cda("77"))
    assert h.unique_id == "1.2.250.1.999.2.7^77"  # id@root^id@extension (CI-SIS)
    assert h.type_code == Code("11502-2", "2.16.840.1.113883.6.1", "CR d'examens biologiques")
    assert h.ins == INS and h.ins_oid == "1.2.250.1.213.1.4.10"
    assert h.local_patient_id == ("1234567890121", "1.2.3.4.567.8.9.10")
    assert h.author.id_ext == "801234534765" and h.author.family == "CAMPARINI"
    assert h.non_xml_media_type == "application/pdf"


def test_doctype_and_entities_are_refused() -> None:
    evil = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><ClinicalDocument xmlns="urn:hl7-org:v3">&e;</ClinicalDocument>'
    with pytest.raises(CdaHeaderError, match="DOCTYPE"):
        parse_cda_header(evil)


def test_not_a_cda_and_missing_fields_are_typed_errors() -> None:
    with pytest.raises(CdaHeaderError, match="ClinicalDocument"):
        parse_cda_header(b"<foo/>")
    with pytest.raises(CdaHeaderError, match="effectiveTime"):
        parse_cda_header(make_cda().replace(b'<effectiveTime value="20210104160527+0100"/>', b""))
    with pytest.raises(CdaHeaderError, match="not acceptable XML"):
        parse_cda_header(b"<ClinicalDocument")


def test_hl7_times_become_utc() -> None:
    assert hl7_ts_to_xds_utc("20210104160527+0100") == "20210104150527"
    assert hl7_ts_to_xds_utc("20210101003000+0200") == "20201231223000"
    assert hl7_ts_to_xds_utc("20210104") == "20210104"
    assert hl7_ts_to_xds_utc("202101041605-0500") == "202101042105"
    with pytest.raises(CdaHeaderError):
        hl7_ts_to_xds_utc("yesterday")


def test_restriction_flags_become_confidentiality_codes() -> None:
    n = Code("N", "2.16.840.1.113883.5.25", "Normal")
    codes = confidentiality_codes(n, frozenset({"MASQUE_PS", "INVISIBLE_REP_LEGAUX", "CONNEXION_SECRETE"}))
    assert codes[0] == n
    assert {(c.code, c.scheme) for c in codes[1:]} == {
        ("MASQUE_PS", "1.2.250.1.213.1.1.4.13"),
        ("INVISIBLE_REPRESENTANTS_LEGAUX", "1.2.250.1.213.1.1.4.13"),
    }
    with pytest.raises(CdaHeaderError, match="unknown restriction"):
        confidentiality_codes(n, frozenset({"MASQUE_TOUT"}))


def _slot(el: etree._Element, name: str) -> list[str]:
    return [v.text or "" for v in el.xpath(f"rim:Slot[@name='{name}']/rim:ValueList/rim:Value", namespaces=NS)]


def _class(el: etree._Element, scheme: str) -> list[tuple[str, str, str]]:
    out = []
    for c in el.xpath(f"rim:Classification[@classificationScheme='{scheme}']", namespaces=NS):
        scheme_values = _slot(c, "codingScheme")
        name = c.xpath("rim:Name/rim:LocalizedString/@value", namespaces=NS)
        out.append((c.get("nodeRepresentation"), scheme_values[0] if scheme_values else "", name[0] if name else ""))
    return out


def _ext(el: etree._Element, scheme: str) -> str:
    return str(el.xpath(f"rim:ExternalIdentifier[@identificationScheme='{scheme}']/@value", namespaces=NS)[0])


def test_one_request_field_by_field_against_the_mapping_tables() -> None:
    cda = make_cda("42")
    req = make_request(cda, restrictions=frozenset({"INVISIBLE_PATIENT"}))
    sub = build_submission(req, parse_cda_header(cda), XdsSettings(source_id="1.2.250.1.999.1.1"), now=NOW,
                           new_uuid=fixed_uuid_factory())  # type: ignore[arg-type]
    root = etree.fromstring(etree.tostring(ebrim.provide_and_register(sub)))
    rol = root.find("lcm:SubmitObjectsRequest/rim:RegistryObjectList", NS)
    assert rol is not None
    de = rol.find("rim:ExtrinsicObject", NS)
    ss = rol.find("rim:RegistryPackage", NS)
    assert de is not None and ss is not None
    patient = "279035121518989^^^&1.2.250.1.213.1.4.10&ISO^NH"
    # --- Fiche (DocumentEntry) ---
    assert de.get("objectType") == "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1"
    assert de.get("id", "").startswith("urn:uuid:")  # entryUUID
    assert de.get("mimeType") == "text/xml"  # mimeType: CDA -> text/xml
    assert _ext(de, "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab") == "1.2.250.1.999.2.7^42"  # uniqueId <- id
    assert _ext(de, "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427") == patient  # patientId <- PID-3 (INS)
    assert _slot(de, "sourcePatientId") == ["1234567890121^^^&1.2.3.4.567.8.9.10&ISO^PI"]  # IPP when known
    assert _slot(de, "creationTime") == ["20210104150527"]  # effectiveTime, in UTC
    assert _slot(de, "serviceStartTime") == ["20210104082200"]  # serviceEvent/effectiveTime/low
    assert _slot(de, "serviceStopTime") == ["20210104150500"]  # serviceEvent/effectiveTime/high
    assert _slot(de, "languageCode") == ["fr-FR"]
    assert _slot(de, "hash") == [hashlib.sha1(cda, usedforsecurity=False).hexdigest()]
    assert _slot(de, "size") == [str(len(cda))]
    assert _slot(de, "legalAuthenticator") == ["801234534765^CAMPARINI^Marcel^^^^^^&1.2.250.1.71.4.2.1&ISO^D^^^IDNPS"]
    assert de.xpath("rim:Name/rim:LocalizedString/@value", namespaces=NS) == ["Compte rendu d'examens biologiques"]
    author = de.find("rim:Classification[@classificationScheme='urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d']", NS)
    assert author is not None and author.get("nodeRepresentation") == ""
    assert _slot(author, "authorPerson") == ["801234534765^CAMPARINI^Marcel^^^^^^&1.2.250.1.71.4.2.1&ISO^D^^^IDNPS"]
    assert _slot(author, "authorInstitution") == ["Laboratoire des charmes^^^^^&1.2.250.1.71.4.2.2&ISO^IDNST^^^11204598"]
    assert _slot(author, "authorSpecialty") == ["G15_10/SM03^Médecin - Biologie médicale (SM)^1.2.250.1.213.1.1.4.5"]
    assert _class(de, "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a") == [("10", "1.2.250.1.213.1.1.4.1", "Compte rendu")]
    assert _class(de, "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983") == [
        ("11502-2", "2.16.840.1.113883.6.1", "CR d'examens biologiques")
    ]
    assert _class(de, "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d") == [
        ("urn:ihe:iti:xds-sd:pdf:2008", "1.3.6.1.4.1.19376.1.2.3", "urn:ihe:iti:xds-sd:pdf:2008")
    ]
    assert _class(de, "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f") == [
        ("N", "2.16.840.1.113883.5.25", "Normal"),
        ("INVISIBLE_PATIENT", "1.2.250.1.213.1.1.4.13", "Non visible par le patient"),
    ]
    assert _class(de, "urn:uuid:f33fb8ac-18af-42cc-ae0e-ed0b0bdb91e1") == [
        ("SA25", "1.2.250.1.71.4.2.4", "Laboratoire de biologie médicale")
    ]
    assert _class(de, "urn:uuid:cccf5598-8b07-4b77-a05e-ae952c785ead") == [("AMBULATOIRE", "1.2.250.1.213.1.1.4.9", "Ambulatoire")]
    # --- Lot de soumission (SubmissionSet) ---
    assert _slot(ss, "submissionTime") == ["20261123183000"]
    ss_author = ss.find("rim:Classification[@classificationScheme='urn:uuid:a7058bb9-b4e4-4307-ba5b-e3f0ab85e12d']", NS)
    assert ss_author is not None
    assert _slot(ss_author, "authorPerson") == ["801234534765^CAMPARINI^Marcel^^^^^^&1.2.250.1.71.4.2.1&ISO^D^^^IDNPS"]
    assert _slot(ss_author, "authorInstitution") == _slot(author, "authorInstitution")  # same on lot and fiche
    assert _class(ss, "urn:uuid:aa543740-bdda-424e-8c96-df4873be8500")[0][0] == "07"  # contentTypeCode (PFI setting)
    assert _ext(ss, "urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446") == patient
    assert _ext(ss, "urn:uuid:554ac39e-e3fe-47fe-b233-965d2a147832") == "1.2.250.1.999.1.1"  # sourceId
    assert _ext(ss, "urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8").startswith("2.25.")  # uniqueId (OID)
    node = rol.find("rim:Classification[@classificationNode='urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd']", NS)
    assert node is not None and node.get("classifiedObject") == ss.get("id")
    # --- HasMember association and the MTOM document reference ---
    (assoc,) = rol.findall("rim:Association", NS)
    assert assoc.get("associationType") == "urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember"
    assert (assoc.get("sourceObject"), assoc.get("targetObject")) == (ss.get("id"), de.get("id"))
    assert _slot(assoc, "SubmissionSetStatus") == ["Original"]
    doc = root.find("xdsb:Document", NS)
    assert doc is not None and doc.get("id") == de.get("id")
    assert doc.find("xop:Include", NS).get("href") == f"cid:{sub.content_id}"  # type: ignore[union-attr]


def test_replacement_adds_an_rplc_association() -> None:
    cda = make_cda("43", replaces="1.2.250.1.999.2.7^42")
    h = parse_cda_header(cda)
    assert h.replaced_ids == ("1.2.250.1.999.2.7^42",)
    sub = build_submission(make_request(cda, DmpAction.REPLACE), h, XdsSettings("1.2.3"), now=NOW,
                           replaces_entry_uuid="urn:uuid:00000000-0000-0000-0000-00000000abcd")
    rol = ebrim.provide_and_register(sub).find("lcm:SubmitObjectsRequest/rim:RegistryObjectList", NS)
    rplc = rol.find("rim:Association[@associationType='urn:ihe:iti:2007:AssociationType:RPLC']", NS)  # type: ignore[union-attr]
    assert rplc is not None
    assert rplc.get("sourceObject") == sub.document.entry_uuid
    assert rplc.get("targetObject") == "urn:uuid:00000000-0000-0000-0000-00000000abcd"


def test_unmapped_document_type_is_a_typed_error_unless_configured() -> None:
    cda = make_cda().replace(b'code="11502-2"', b'code="99999-9"')
    with pytest.raises(CdaHeaderError, match="classCode"):
        build_submission(make_request(cda), parse_cda_header(cda), XdsSettings("1.2.3"), now=NOW)
    sub = build_submission(make_request(cda), parse_cda_header(cda), XdsSettings("1.2.3", class_by_type={"99999-9": ("10", "CR")}), now=NOW)
    assert sub.document.class_code.code == "10"


def test_real_ans_examples_map_without_error() -> None:
    files = sorted(p for p in REAL_HL7.glob("*") if p.suffix.lower() == ".xml") if REAL_HL7.is_dir() else []
    if not files:
        pytest.skip(f"ANS example CDA files not found under {REAL_HL7}")
    for f in files:
        cda = f.read_bytes()
        h = parse_cda_header(cda)
        sub = build_submission(make_request(cda), h, XdsSettings("1.2.3"), now=NOW)
        assert sub.document.patient_id.startswith(INS)
        assert sub.document.format_code.code in ("urn:ihe:iti:xds-sd:pdf:2008", "urn:ihe:lab:xd-lab:2008")


def test_hl7_delimiters_in_names_are_escaped() -> None:
    from mssante.dmp.metadata import hl7_escape, xon

    assert hl7_escape("A&B^C\\D|E~F") == "A\\T\\B\\S\\C\\E\\D\\F\\E\\R\\F"
    assert xon("Labo A&B", "11204598") == "Labo A\\T\\B^^^^^&1.2.250.1.71.4.2.2&ISO^IDNST^^^11204598"
