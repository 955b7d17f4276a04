"""Synthetic HL7 messages and CDA documents for the Y tests (no real data needed)."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from mssante.y.ins import INS_NIR_TEST_OID, nir_key
from mssante.y.intake import AuthorisedSender, IntakeConfig
from mssante.y.ins import InsEnvironment

REAL = (Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "real").resolve()
HL7_DIR = REAL / "hl7v2"
NOW = datetime(2026, 11, 23, 19, 0, tzinfo=UTC)

NIR13 = "1850578006084"
INS = NIR13 + f"{nir_key(NIR13):02d}"
FAMILY, GIVEN, BIRTH, SEX = "DUPONT", "JEAN", "19850512", "M"

DEFAULT_FLAGS: dict[str, str] = {
    "MASQUE_PS": "N", "INVISIBLE_PATIENT": "N", "INVISIBLE_REP_LEGAUX": "N", "CONNEXION_SECRETE": "N",
    "MODIF_CONF_CODE": "N", "DESTDMP": "Y", "DESTMSSANTEPS": "Y", "DESTMSSANTEPAT": "Y",
    "ACK_RECEPTION": "Y", "ACK_LECTURE_MSS": "N",
}


def cda(*, ins: str = INS, oid: str = INS_NIR_TEST_OID, family: str = FAMILY, given: str = GIVEN,
        birth: str = BIRTH, sex: str = SEX, doc_id: str = "1.2.3.4.5.6.7", rplc: str | None = None,
        prolog: str = "") -> bytes:
    related = (f'<relatedDocument typeCode="RPLC"><parentDocument><id root="{rplc}"/></parentDocument></relatedDocument>'
               if rplc else "")
    return (prolog + f"""<?xml version="1.0" encoding="UTF-8"?>
<ClinicalDocument xmlns="urn:hl7-org:v3">
  <templateId root="1.2.250.1.213.1.1.1.1"/>
  <id root="{doc_id}"/>
  <code code="11502-2" codeSystem="2.16.840.1.113883.6.1" displayName="CR d'examens biologiques"/>
  <title>Compte rendu de biologie</title>
  <effectiveTime value="20261123150000+0100"/>
  <confidentialityCode code="N" codeSystem="2.16.840.1.113883.5.25" displayName="Normal"/>
  <languageCode code="fr-FR"/>
  <setId root="{doc_id}.0"/><versionNumber value="1"/>
  <recordTarget><patientRole>
    <id root="{oid}" extension="{ins}"/>
    <patient><name><given qualifier="BR">{given}</given><family qualifier="BR">{family}</family></name>
      <administrativeGenderCode code="{sex}" codeSystem="2.16.840.1.113883.5.1"/><birthTime value="{birth}"/></patient>
  </patientRole></recordTarget>
  <author><time value="20261123150000+0100"/><assignedAuthor>
    <id root="1.2.250.1.71.4.2.1" extension="810001234567"/>
    <assignedPerson><name><given>Anne</given><family>BIOLO</family></name></assignedPerson>
    <representedOrganization><id root="1.2.250.1.71.4.2.2" extension="1750000001"/><name>Labo Test</name></representedOrganization>
  </assignedAuthor></author>
  <custodian><assignedCustodian><representedCustodianOrganization><id root="1.2.250.1.71.4.2.2" extension="1750000001"/><name>Labo Test</name></representedCustodianOrganization></assignedCustodian></custodian>
  {related}
  <component><structuredBody><component><section><title>R</title><text>ok</text></section></component></structuredBody></component>
</ClinicalDocument>
""").encode("utf-8")


def oru(*, document: bytes | None = None, flags: Mapping[str, str] | None = None, extra_flags: str = "",
        ins: str = INS, pid_oid: str = INS_NIR_TEST_OID, status: str = "VALI", sex: str = SEX, birth: str = BIRTH,
        family: str = FAMILY, rct: tuple[str, ...] = ("PRT||UC||RCT^^participation|810009876543^MARTIN^Paul^^^^^^&1.2.250.1.71.4.2.1&ISO^D^^^IDNPS||||||||||^^X.400^paul.martin@medecin.mssante.fr",),
        obx11: str = "F", msh2: str = "^~\\&", app: str = "SIL-T", fac: str = "labo-t", nte_fin: bool = False,
        body_ps: str | None = "Bonjour confrère", raw_b64: str | None = None, sep: str = "\r",
        drop: tuple[str, ...] = ()) -> bytes:
    doc = document if document is not None else cda(ins=ins)
    b64 = raw_b64 if raw_b64 is not None else base64.b64encode(doc).decode()
    values = dict(DEFAULT_FLAGS)
    values.update(flags or {})
    segs = [
        f"MSH|{msh2}|{app}|{fac}|PFI|PFI-ORG|202611231500||ORU^R01^ORU_R01|MSG001|P|2.5|||||FRA|UNICODE UTF-8|||2.1^CISIS_CDA_HL7_V2",
        f"PID|||{ins}^^^ASIP-SANTE-INS-NIR&{pid_oid}&ISO^INS||{family}^{GIVEN}^^^^^L||{birth}|{sex}|||||||||||||||||||||||N|{status}",
        "PV1|1|O",
        "ORC|NW|1^LIS|1^labo",
        "OBR|1|1^LIS|1^labo|11502-2^CR d'examens biologiques^LN",
        f"OBX|1|ED|11502-2^CR d'examens biologiques^LN||^TEXT^XML^Base64^{b64}||||||{obx11}|",
        "PRT||UC||SB^^participation|810001234567^BIOLO^Anne^^^^^^&1.2.250.1.71.4.2.1&ISO^D^^^IDNPS|||Labo Test^^^^^&1.2.250.1.71.4.2.2&ISO^FINEG^^^1750000001",
        *rct,
        "PRT||UC||REPLY^^participation|||||||||||^^X.400^secretariat@labo-t.mssante.fr",
    ]
    n = 2
    for name, value in values.items():
        segs.append(f"OBX|{n}|CE|{name}^{name}^MetaDMPMSS||{value}^^expandedYes-NoIndicator||||||F|")
        n += 1
        if name == "DESTMSSANTEPAT" and nte_fin:
            segs.append("NTE|1|||FIN|")
    if extra_flags:
        segs.append(extra_flags)
    if body_ps is not None:
        segs.append(f"OBX|{n}|ED|CORPSMAIL_PS^Corps du mail pour un PS^MetaDMPMSS||^TEXT^^Base64^"
                    f"{base64.b64encode(body_ps.encode()).decode()}||||||F|")
    segs = [s for s in segs if s.split("|", 1)[0] not in drop]
    return (sep.join(segs) + sep).encode("utf-8")


def config(**kw: object) -> IntakeConfig:
    base: dict[str, object] = dict(
        senders=(
            AuthorisedSender("SIL-T", "labo-t", "labo@labo-t.mssante.fr", "Laboratoire Test",
                             structure_ids=frozenset({"1750000001"}), nil="NIL-0001"),
            AuthorisedSender("SIL-Y", "labo", "sil@labo.mssante.fr", "Laboratoire Y"),
            AuthorisedSender("RIS-Y", "Organisation-Y", "ris@orga-y.mssante.fr", "RIS Y"),
        ),
        environment=InsEnvironment.TEST,
        message_id_domain="pfi.test",
        source_oid="1.2.250.1.999.1",
    )
    base.update(kw)
    return IntakeConfig(**base)  # type: ignore[arg-type]


def trust(domain: str) -> bool:
    return domain.endswith(".mssante.fr") or domain == "patient.mssante.fr"


DIRECTORY = {"810009876543": ["paul.martin@medecin.mssante.fr"], "10009876543": ["paul.martin@medecin.mssante.fr"]}


def directory(ident: str) -> list[str]:
    return DIRECTORY.get(ident, [])


def real_file(folder: Path, needle: str) -> bytes:
    found = sorted(p for p in folder.iterdir() if needle in p.name)
    assert found, needle
    return found[0].read_bytes()
