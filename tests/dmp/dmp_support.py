"""Helpers for the DMP tests: test PKI, CDA documents, requests, an audit sink, connector configs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mssante.dmp.api import DmpAction, DmpRequest
from mssante.dmp.connector import DmpConnectorConfig, Iti41Connector
from mssante.dmp.metadata import XdsSettings
from pki.space import Issued, TrustSpacePKI

REPO = Path(__file__).resolve().parents[2]
REAL_HL7 = (REPO / "../shared/data/real").resolve() / "hl7v2"
INS = "279035121518989"  # the ANS examples' test INS (valid key)
INS_OID_TEST = "1.2.250.1.213.1.4.10"
DMP_HOST = "dmp.test"
ConnectorFactory = Callable[..., Awaitable[Iti41Connector]]


@dataclass(frozen=True)
class Pki:
    space: TrustSpacePKI
    server: Issued
    lab: Issued  # structure 11204598 (the author)
    other: Issued  # another structure of the trust space
    rogue: Issued  # an ORG certificate from an unrelated CA
    rogue_anchors: Path


def build_pki(d: Path) -> Pki:
    now = datetime.now(UTC)
    space = TrustSpacePKI.create(d / "space", b"dmp-test-passphrase", now=now, label="DMPTEST")
    server = space.issue_server(
        DMP_HOST, domains=[], org="DMP REFERENCE", structure_id="DMP0001", department="Paris (75)", out_dir=d / "server", now=now
    )
    lab = space.issue_org(
        "PFI LABO", org="Laboratoire des charmes", structure_id="11204598", department="Hauts-de-Seine (92)", out_dir=d / "lab", now=now
    )
    other = space.issue_org(
        "PFI CLINIQUE", org="Clinique St Paul", structure_id="11204567", department="Paris (75)", out_dir=d / "other", now=now
    )
    rogue_space = TrustSpacePKI.create(d / "rogue-space", b"rogue-passphrase", now=now, label="ROGUE")
    rogue = rogue_space.issue_org(
        "PFI LABO", org="Laboratoire des charmes", structure_id="11204598", department="Hauts-de-Seine (92)", out_dir=d / "rogue", now=now
    )
    return Pki(space, server, lab, other, rogue, rogue_space.anchors_path)


@dataclass
class AuditSink:
    events: list[dict[str, Any]] = field(default_factory=list)

    async def __call__(self, action: str, actor: str, outcome: str, **fields: Any) -> None:
        self.events.append({"action": action, "actor": actor, "outcome": outcome, **fields})


def connector_config(pki: Pki, base_url: str, who: Issued | None = None, **overrides: Any) -> DmpConnectorConfig:
    who = who or pki.lab
    cfg = DmpConnectorConfig(
        repository_url=f"{base_url}/repository",
        registry_url=f"{base_url}/registry",
        client_cert_path=who.chain_path,
        client_key_path=who.key_path,  # type: ignore[arg-type]
        anchors_path=pki.space.anchors_path,
        xds=XdsSettings(source_id="1.2.250.1.999.1.1"),
        server_hostname=DMP_HOST,
        total_timeout_s=20,
        connect_timeout_s=5,
    )
    return replace(cfg, **overrides)


CDA_TEMPLATE = """<?xml version="1.0" encoding="UTF-8"?>
<ClinicalDocument xmlns="urn:hl7-org:v3">
  <realmCode code="FR"/>
  <typeId root="2.16.840.1.113883.1.3" extension="POCD_HD000040"/>
  <templateId root="2.16.840.1.113883.2.8.2.1"/>
  <templateId root="1.2.250.1.213.1.1.1.1"/>
  <templateId root="1.3.6.1.4.1.19376.1.2.20"/>
  <id root="{doc_root}" extension="{doc_ext}"/>
  <code code="11502-2" displayName="CR d'examens biologiques" codeSystem="2.16.840.1.113883.6.1"/>
  <title>Compte rendu d'examens biologiques</title>
  <effectiveTime value="20210104160527+0100"/>
  <confidentialityCode code="N" displayName="Normal" codeSystem="2.16.840.1.113883.5.25"/>
  <languageCode code="fr-FR"/>
  <setId root="1.2.250.1.213.1.1.9"/>
  <versionNumber value="{version}"/>
  <recordTarget><patientRole>
    <id extension="{ins}" root="1.2.250.1.213.1.4.10"/>
    <id extension="1234567890121" root="1.2.3.4.567.8.9.10"/>
    <patient><name><given>DOMINIQUE</given><family>PAT-TROIS</family></name>
      <administrativeGenderCode code="F" codeSystem="2.16.840.1.113883.5.1"/><birthTime value="19790328"/></patient>
  </patientRole></recordTarget>
  <author><time value="20210104160527+0100"/>
    <assignedAuthor>
      <id root="1.2.250.1.71.4.2.1" extension="801234534765"/>
      <code code="G15_10/SM03" displayName="Médecin - Biologie médicale (SM)" codeSystem="1.2.250.1.213.1.1.4.5"/>
      <assignedPerson><name><given>Marcel</given><family>CAMPARINI</family></name></assignedPerson>
      <representedOrganization><id root="1.2.250.1.71.4.2.2" extension="11204598"/><name>Laboratoire des charmes</name></representedOrganization>
    </assignedAuthor>
  </author>
  <custodian><assignedCustodian><representedCustodianOrganization>
    <id root="1.2.250.1.71.4.2.2" extension="11204598"/><name>Laboratoire des charmes</name>
  </representedCustodianOrganization></assignedCustodian></custodian>
  <legalAuthenticator><time value="20210104160527+0100"/><signatureCode code="S"/>
    <assignedEntity><id root="1.2.250.1.71.4.2.1" extension="801234534765"/>
      <assignedPerson><name><given>Marcel</given><family>CAMPARINI</family></name></assignedPerson>
    </assignedEntity>
  </legalAuthenticator>
  <documentationOf><serviceEvent>
    <effectiveTime><low value="20210104092200+0100"/><high value="20210104160500+0100"/></effectiveTime>
    <performer typeCode="PRF"><assignedEntity><id root="1.2.250.1.71.4.2.1" extension="801234534765"/>
      <representedOrganization>
        <standardIndustryClassCode code="AMBULATOIRE" displayName="Ambulatoire" codeSystem="1.2.250.1.213.1.1.4.9"/>
      </representedOrganization></assignedEntity></performer>
  </serviceEvent></documentationOf>
  {related}
  <componentOf><encompassingEncounter><effectiveTime value="20210104"/>
    <location><healthCareFacility>
      <code code="SA25" displayName="Laboratoire de biologie médicale" codeSystem="1.2.250.1.71.4.2.4"/>
    </healthCareFacility></location>
  </encompassingEncounter></componentOf>
  <component><nonXMLBody><text mediaType="application/pdf" representation="B64">JVBERi0xLjQKJcOkw7zDtsOfCg==</text></nonXMLBody></component>
</ClinicalDocument>
"""


def make_cda(doc_ext: str = "1", *, ins: str = INS, version: int = 1, replaces: str | None = None,
             doc_root: str = "1.2.250.1.999.2.7") -> bytes:
    related = ""
    if replaces:
        root, _, ext = replaces.partition("^")
        ext_attr = f' extension="{ext}"' if ext else ""
        related = f'<relatedDocument typeCode="RPLC"><parentDocument><id root="{root}"{ext_attr}/></parentDocument></relatedDocument>'
    return CDA_TEMPLATE.format(doc_root=doc_root, doc_ext=doc_ext, ins=ins, version=version, related=related).encode()


def make_request(cda: bytes, action: DmpAction = DmpAction.SUBMIT, **overrides: Any) -> DmpRequest:
    base = DmpRequest(
        action=action,
        cda=cda,
        ins=INS,
        ins_oid=INS_OID_TEST,
        author_idnps="801234534765",
        author_family="CAMPARINI",
        author_given="Marcel",
        structure_id="11204598",
        structure_name="Laboratoire des charmes",
        correlation_id="leg-1",
    )
    return replace(base, **overrides)


# ----- hand-made requests, for the rejection paths the connector itself never produces -----

def craft_iti41(
    who: Issued,
    req: DmpRequest,
    *,
    now: datetime,
    mutate: Any = None,
    document: bytes | None = None,
    resource_id: str | None = None,
    vihf_mutate: Any = None,
) -> tuple[str, bytes]:
    """(Content-Type, body) of an ITI-41 MTOM request built from the library's pieces, then altered."""
    from cryptography.hazmat.primitives import serialization
    from lxml import etree

    from mssante.dmp import ebrim, soap
    from mssante.dmp.ins import patient_id_cx
    from mssante.dmp.metadata import build_submission, parse_cda_header
    from mssante.dmp.vihf import VihfSubject, build_vihf
    from mssante.dmp.xmlsafe import parse_xml

    sub = build_submission(req, parse_cda_header(req.cda), XdsSettings("1.2.250.1.999.1.1"), now=now)
    body = ebrim.provide_and_register(sub)
    if mutate is not None:
        mutate(body)
    assert who.key_path is not None
    key = serialization.load_pem_private_key(who.key_path.read_bytes(), password=None)
    vihf = build_vihf(
        VihfSubject(req.author_idnps, "CAMPARINI Marcel", req.structure_id, "SA25^1.2.250.1.71.4.2.4"),
        patient_resource_id=resource_id or patient_id_cx(req.ins, req.ins_oid),
        cert=who.cert,
        key=key,  # type: ignore[arg-type]
        now=now,
    )
    if vihf_mutate is not None:
        vihf = parse_xml(vihf_mutate(etree.tostring(vihf)))
    env = soap.build_envelope(action=soap.ACTION_ITI41, message_id="urn:uuid:crafted", body=body, security=vihf)
    return soap.mtom_package(
        env, [soap.Attachment(sub.content_id, "text/xml", req.cda if document is None else document)], action=soap.ACTION_ITI41
    )


async def raw_post(pki: Pki, base_url: str, path: str, ctype: str, payload: bytes, who: Issued | None = None) -> tuple[int, Any]:
    """POST with mutual TLS and read the SOAP answer (status, SoapMessage)."""
    import aiohttp

    from mssante.dmp import soap
    from mssante.dmp.tlsconf import client_context

    who = who or pki.lab
    ctx = client_context(pki.space.anchors_path, who.chain_path, who.key_path)
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{base_url}{path}", data=payload, headers={"Content-Type": ctype}, ssl=ctx, server_hostname=DMP_HOST) as r:
            return r.status, soap.parse_soap(r.headers.get("Content-Type", ""), await r.read())


def ins_for(i: int) -> str:
    """A distinct valid INS-NIR per index (for benchmarks: one patient per submission)."""
    from mssante.dmp.ins import nir_key

    nir = f"1790351{i % 1_000_000:06d}"
    return nir + f"{nir_key(nir):02d}"
