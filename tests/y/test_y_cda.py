"""Hardened CDA parsing: refusals, and header extraction from the ANS documents."""

from __future__ import annotations

from pathlib import Path

import pytest
from .y_factory import INS, cda, real_file

from mssante.y.cda import CdaError, parse_cda_header
from mssante.y.ins import INS_NIR_TEST_OID


def test_header_fields() -> None:
    h = parse_cda_header(cda(rplc="9.8.7"))
    assert h.document_id == "1.2.3.4.5.6.7" and h.replaced_document_id == "9.8.7"
    assert h.code.code == "11502-2" and h.title == "Compte rendu de biologie"
    assert h.patient_ins((INS_NIR_TEST_OID,)) == (INS, INS_NIR_TEST_OID)
    assert h.author is not None and h.author.id == "810001234567"
    assert h.author_organization is not None and h.author_organization.id == "1750000001"
    assert h.custodian is not None and h.language == "fr-FR" and h.version_number == 1 and h.structured_body


@pytest.mark.parametrize("needle", ["CR_Bio_CDA_Niv1_v1", "CR_Bio_CDA_Niv3_v1", "CR_Radio_CDAN1_v1", "Electrophorese"])
def test_ans_documents(real_hl7: Path, needle: str) -> None:
    h = parse_cda_header(real_file(real_hl7, needle))
    assert h.patient_ins((INS_NIR_TEST_OID,)) == ("279035121518989", INS_NIR_TEST_OID)
    assert h.patient_family == ("PAT-TROIS",) and h.patient_birth_time == "19790328" and h.patient_sex == "F"
    assert h.facility_type is not None and h.practice_setting is not None


def test_not_xml() -> None:
    with pytest.raises(CdaError, match="not well-formed"):
        parse_cda_header(b"Document medcial au format CDA niveau 1")


def test_doctype_refused() -> None:
    with pytest.raises(CdaError, match="DOCTYPE"):
        parse_cda_header(cda().replace(b"<ClinicalDocument", b"<!DOCTYPE ClinicalDocument>\n<ClinicalDocument", 1))


def test_entities_refused() -> None:
    evil = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><x>&xxe;</x>'
    with pytest.raises(CdaError):
        parse_cda_header(evil)
    bomb = b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><l>&b;</l>'
    with pytest.raises(CdaError):
        parse_cda_header(bomb)


def test_size_limit_and_wrong_root() -> None:
    with pytest.raises(CdaError, match="limit"):
        parse_cda_header(cda(), max_bytes=100)
    with pytest.raises(CdaError, match="ClinicalDocument"):
        parse_cda_header(b"<html/>")
    with pytest.raises(CdaError, match="no id"):
        parse_cda_header(cda().replace(b'<id root="1.2.3.4.5.6.7"/>', b""))


def test_huge_text_node_has_a_clear_error() -> None:
    doc = cda().replace(b"<text>ok</text>", b"<text>" + b"x" * (11 * 1024 * 1024) + b"</text>")
    with pytest.raises(CdaError, match="10 MB"):
        parse_cda_header(doc)
