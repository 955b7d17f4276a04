"""The connector against the reference DMP over real mutual TLS on loopback (TrustSpacePKI certificates)."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from .dmp_support import DMP_HOST, ConnectorFactory, INS, REAL_HL7, AuditSink, Pki, craft_iti41, make_cda, make_request, raw_post
from lxml import etree

from mssante.dmp import ebrim, soap
from mssante.dmp.api import DmpAccepted, DmpAction, DmpRejected, DmpTemporaryFailure
from mssante.dmp.reference import RunningDmp, start_reference_dmp
from mssante.dmp.registry import ReferenceRegistry
from mssante.dmp.tlsconf import client_context, server_context

NS = {"rim": ebrim.NS_RIM, "lcm": ebrim.NS_LCM, "rs": ebrim.NS_RS}
OTHER_INS = "185029911234512"


async def listing(pki: Pki, dmp: RunningDmp, ins: str = INS) -> Any:
    ctx = client_context(pki.space.anchors_path, pki.lab.chain_path, pki.lab.key_path)
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{dmp.base_url}/patients/{ins}/documents", ssl=ctx, server_hostname=DMP_HOST) as r:
            return r.status, await r.json()


def _registry_codes(msg: Any) -> list[str]:
    return [e.get("errorCode") for e in msg.body.iter(f"{{{ebrim.NS_RS}}}RegistryError")]


# ----- happy paths -----


async def test_submission_is_stored_listed_and_audited(dmp: RunningDmp, make_connector: ConnectorFactory, pki_material: Pki) -> None:
    audit = AuditSink()
    c = await make_connector(dmp.base_url, audit=audit)
    cda = make_cda("1001", )
    out = await c.send(make_request(cda))
    assert isinstance(out, DmpAccepted)
    assert out.document_unique_id == "1.2.250.1.999.2.7^1001"
    status, docs = await listing(pki_material, dmp)
    assert status == 200 and len(docs) == 1
    doc = docs[0]
    assert doc["unique_id"] == out.document_unique_id and doc["submission_set_unique_id"] == out.submission_set_unique_id
    assert doc["status"] == ebrim.STATUS_APPROVED and doc["structure_id"] == "11204598"
    assert doc["hash"] == hashlib.sha1(cda, usedforsecurity=False).hexdigest() and doc["size"] == len(cda)
    assert dmp.dmp.registry.content(doc["entry_uuid"]) == cda
    (event,) = audit.events
    assert event["action"] == "dmp.submit" and event["outcome"] == "accepted" and event["actor"] == "801234534765"
    assert event["ins"] == INS and event["document_unique_id"] == out.document_unique_id
    assert "Compte rendu" not in repr(audit.events) and "JVBER" not in repr(audit.events)  # never content


async def test_replacement_deprecates_the_old_version(dmp: RunningDmp, make_connector: ConnectorFactory, pki_material: Pki) -> None:
    c = await make_connector(dmp.base_url)
    v1 = await c.send(make_request(make_cda("2001")))
    assert isinstance(v1, DmpAccepted)
    v2 = await c.send(make_request(make_cda("2002", version=2, replaces=v1.document_unique_id), DmpAction.REPLACE))
    assert isinstance(v2, DmpAccepted), v2
    _, docs = await listing(pki_material, dmp)
    by_uid = {d["unique_id"]: d for d in docs}
    old, new = by_uid[v1.document_unique_id], by_uid[v2.document_unique_id]
    assert old["status"] == ebrim.STATUS_DEPRECATED and old["replaced_by"] == new["entry_uuid"]
    assert new["status"] == ebrim.STATUS_APPROVED and new["replaces"] == old["entry_uuid"]
    # Replacing the old (now deprecated) version again: 900.
    again = await c.send(make_request(make_cda("2003", version=3), DmpAction.REPLACE, replaced_unique_id=v1.document_unique_id))
    assert isinstance(again, DmpRejected) and again.code == "900"


async def test_deletion_uses_iti57_and_is_refused_twice(dmp: RunningDmp, make_connector: ConnectorFactory, pki_material: Pki) -> None:
    audit = AuditSink()
    c = await make_connector(dmp.base_url, audit=audit)
    v1 = await c.send(make_request(make_cda("3001")))
    assert isinstance(v1, DmpAccepted)
    gone = await c.send(make_request(b"", DmpAction.DELETE, replaced_unique_id=v1.document_unique_id))
    assert isinstance(gone, DmpAccepted) and gone.document_unique_id == v1.document_unique_id
    _, docs = await listing(pki_material, dmp)
    assert docs[0]["status"] == "urn:asip:ci-sis:2010:StatusType:Deleted"
    assert dmp.dmp.registry.content(docs[0]["entry_uuid"]) is None  # the content is gone, the trace stays
    twice = await c.send(make_request(b"", DmpAction.DELETE, replaced_unique_id=v1.document_unique_id))
    assert isinstance(twice, DmpRejected) and twice.code == "900"
    assert [e["action"] for e in audit.events] == ["dmp.submit", "dmp.delete", "dmp.delete"]
    assert [e["outcome"] for e in audit.events] == ["accepted", "accepted", "rejected"]


async def test_retry_of_a_stored_submission_is_idempotent(dmp: RunningDmp, make_connector: ConnectorFactory) -> None:
    c = await make_connector(dmp.base_url)
    req = make_request(make_cda("4001"))
    assert isinstance(await c.send(req), DmpAccepted)
    assert isinstance(await c.send(req), DmpAccepted)
    assert len(dmp.dmp.registry.docs) == 1
    changed = await c.send(make_request(make_cda("4001").replace(b"Compte rendu", b"Compte-rendu")))
    assert isinstance(changed, DmpRejected) and changed.code == "XDSNonIdenticalHash"


async def test_concurrent_submissions_share_a_bounded_pool(dmp: RunningDmp, make_connector: ConnectorFactory) -> None:
    c = await make_connector(dmp.base_url, max_concurrency=3)
    outs = await asyncio.gather(*(c.send(make_request(make_cda(f"5{i:03d}"))) for i in range(20)))
    assert all(isinstance(o, DmpAccepted) for o in outs)
    assert len(dmp.dmp.registry.docs) == 20


async def test_ans_example_documents_go_through(dmp: RunningDmp, make_connector: ConnectorFactory, pki_material: Pki) -> None:
    files = sorted(p for p in REAL_HL7.glob("*") if p.suffix.lower() == ".xml") if REAL_HL7.is_dir() else []
    if not files:
        pytest.skip(f"ANS example CDA files not found under {REAL_HL7} (shared/data/real is absent)")
    c = await make_connector(dmp.base_url)
    for f in files:
        out = await c.send(make_request(f.read_bytes()))
        assert isinstance(out, DmpAccepted), (f.name, out)
    _, docs = await listing(pki_material, dmp)
    assert len(docs) == len(files)


# ----- refusals decided by the connector before any network call -----


async def test_local_refusals(dmp: RunningDmp, make_connector: ConnectorFactory) -> None:
    c = await make_connector(dmp.base_url)
    bad_key = await c.send(make_request(make_cda("6001"), ins="279035121518988"))
    assert isinstance(bad_key, DmpRejected) and bad_key.code == "905"
    other = await c.send(make_request(make_cda("6002", ins=OTHER_INS)))
    assert isinstance(other, DmpRejected) and other.code == "904"
    other_oid = await c.send(make_request(make_cda("6005"), ins_oid="1.2.250.1.213.1.4.8"))
    assert isinstance(other_oid, DmpRejected) and other_oid.code == "904"
    no_ins = await c.send(make_request(make_cda("6003").replace(b'root="1.2.250.1.213.1.4.10"', b'root="1.2.3"')))
    assert isinstance(no_ins, DmpRejected) and no_ins.code == "903"
    not_cda = await c.send(make_request(b"<html/>"))
    assert isinstance(not_cda, DmpRejected) and not_cda.code == "906"
    missing = await c.send(make_request(make_cda("6004"), DmpAction.REPLACE, replaced_unique_id="1.2.3.4^nope"))
    assert isinstance(missing, DmpRejected) and missing.code == "900"
    assert dmp.dmp.registry.docs == {}


# ----- authorisation: 901 -----


async def test_another_structure_cannot_replace_or_delete(dmp: RunningDmp, make_connector: ConnectorFactory, pki_material: Pki) -> None:
    lab = await make_connector(dmp.base_url)
    v1 = await lab.send(make_request(make_cda("7001")))
    assert isinstance(v1, DmpAccepted)
    clinic = await make_connector(dmp.base_url, who=pki_material.other)
    as_clinic = {"structure_id": "11204567", "structure_name": "Clinique St Paul"}
    rep = await clinic.send(make_request(make_cda("7002", replaces=v1.document_unique_id), DmpAction.REPLACE, **as_clinic))
    assert isinstance(rep, DmpRejected) and rep.code == "901"
    dele = await clinic.send(make_request(b"", DmpAction.DELETE, replaced_unique_id=v1.document_unique_id, **as_clinic))
    assert isinstance(dele, DmpRejected) and dele.code == "901"


# ----- strict metadata (hand-made requests) -----


def _drop_classification(scheme: str) -> Any:
    def mutate(body: etree._Element) -> None:
        for c in body.xpath(f"//rim:Classification[@classificationScheme='{scheme}']", namespaces=NS):
            c.getparent().remove(c)
    return mutate


def _set_slot(name: str, value: str) -> Any:
    def mutate(body: etree._Element) -> None:
        (v,) = body.xpath(f"//rim:ExtrinsicObject/rim:Slot[@name='{name}']/rim:ValueList/rim:Value", namespaces=NS)
        v.text = value
    return mutate


def _set_external(scheme: str, value: str) -> Any:
    def mutate(body: etree._Element) -> None:
        (e,) = body.xpath(f"//rim:ExternalIdentifier[@identificationScheme='{scheme}']", namespaces=NS)
        e.set("value", value)
    return mutate


def _set_type(code: str) -> Any:
    def mutate(body: etree._Element) -> None:
        (c,) = body.xpath(f"//rim:Classification[@classificationScheme='{ebrim.DE_TYPE}']", namespaces=NS)
        c.set("nodeRepresentation", code)
    return mutate


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (_drop_classification(ebrim.DE_CLASS), "XDSRegistryMetadataError"),
        (_drop_classification(ebrim.DE_CONFIDENTIALITY), "XDSRegistryMetadataError"),
        (_drop_classification(ebrim.SS_CONTENT_TYPE), "XDSRegistryMetadataError"),
        (_set_slot("creationTime", "hier"), "XDSRegistryMetadataError"),
        (_set_slot("hash", "0" * 40), "XDSRepositoryMetadataError"),
        (_set_slot("size", "12"), "XDSRepositoryMetadataError"),
        (_set_external(ebrim.SS_PATIENT_ID, f"{OTHER_INS}^^^&1.2.250.1.213.1.4.10&ISO^NH"), "XDSPatientIdDoesNotMatch"),
        (_set_external(ebrim.DE_PATIENT_ID, "279035121518989^^^&1.2.3.4&ISO^NH"), "XDSUnknownPatientId"),
        (_set_external(ebrim.DE_UNIQUE_ID, "1.2.250.1.999.2.7^other"), "XDSRegistryMetadataError"),
        (_set_type("34133-9"), "XDSRegistryMetadataError"),
    ],
    ids=["no-classCode", "no-confidentiality", "no-contentType", "bad-creationTime", "hash", "size", "ss-patient", "bad-oid",
         "uniqueId-vs-cda", "typeCode-vs-cda"],
)
async def test_metadata_rejections(dmp: RunningDmp, pki_material: Pki, mutate: Any, code: str) -> None:
    ctype, body = craft_iti41(pki_material.lab, make_request(make_cda("8001")), now=datetime.now(UTC), mutate=mutate)
    status, msg = await raw_post(pki_material, dmp.base_url, "/repository", ctype, body)
    assert status == 200 and msg.action == soap.ACTION_ITI41_RESPONSE
    assert _registry_codes(msg)[0] == code
    assert dmp.dmp.registry.docs == {}


async def test_metadata_for_another_patient_than_the_cda(dmp: RunningDmp, pki_material: Pki) -> None:
    """Metadata and VIHF agree on a patient, but the CDA is about another one."""
    ctype, body = craft_iti41(pki_material.lab, make_request(make_cda("8051"), ins=OTHER_INS), now=datetime.now(UTC))
    _, msg = await raw_post(pki_material, dmp.base_url, "/repository", ctype, body)
    assert _registry_codes(msg) == ["XDSPatientIdDoesNotMatch"]


async def test_document_that_is_not_a_cda(dmp: RunningDmp, pki_material: Pki) -> None:
    req = make_request(make_cda("8061"))
    junk = b"x" * len(req.cda)

    def fix_hash(body: etree._Element) -> None:
        (v,) = body.xpath("//rim:ExtrinsicObject/rim:Slot[@name='hash']/rim:ValueList/rim:Value", namespaces=NS)
        v.text = hashlib.sha1(junk, usedforsecurity=False).hexdigest()

    ctype, body = craft_iti41(pki_material.lab, req, now=datetime.now(UTC), document=junk, mutate=fix_hash)
    _, msg = await raw_post(pki_material, dmp.base_url, "/repository", ctype, body)
    assert _registry_codes(msg) == ["XDSRepositoryMetadataError"]


async def test_document_bytes_must_match_hash(dmp: RunningDmp, pki_material: Pki) -> None:
    req = make_request(make_cda("8101"))
    tampered = req.cda.replace(b"PAT-TROIS", b"PAT-TRO1S")  # same size, other hash
    ctype, body = craft_iti41(pki_material.lab, req, now=datetime.now(UTC), document=tampered)
    _, msg = await raw_post(pki_material, dmp.base_url, "/repository", ctype, body)
    assert _registry_codes(msg) == ["XDSRepositoryMetadataError"]


async def test_missing_document_part(dmp: RunningDmp, pki_material: Pki) -> None:
    def drop_include(body: etree._Element) -> None:
        for d in body.findall(f"{{{ebrim.NS_XDSB}}}Document"):
            body.remove(d)
    ctype, body = craft_iti41(pki_material.lab, make_request(make_cda("8201")), now=datetime.now(UTC), mutate=drop_include)
    _, msg = await raw_post(pki_material, dmp.base_url, "/repository", ctype, body)
    assert _registry_codes(msg) == ["XDSMissingDocument"]


async def test_bad_nir_key_is_refused_by_the_dmp(dmp: RunningDmp, pki_material: Pki) -> None:
    bad = "279035121518988"
    req = make_request(make_cda("8301", ins=bad), ins=bad)
    ctype, body = craft_iti41(pki_material.lab, req, now=datetime.now(UTC))
    _, msg = await raw_post(pki_material, dmp.base_url, "/repository", ctype, body)
    assert _registry_codes(msg) == ["XDSUnknownPatientId"]


async def test_rplc_to_an_unknown_entry_is_900(dmp: RunningDmp, pki_material: Pki) -> None:
    def add_rplc(body: etree._Element) -> None:
        rol = body.find(f"{{{ebrim.NS_LCM}}}SubmitObjectsRequest/{{{ebrim.NS_RIM}}}RegistryObjectList")
        de = rol.find(f"{{{ebrim.NS_RIM}}}ExtrinsicObject")
        etree.SubElement(rol, f"{{{ebrim.NS_RIM}}}Association", id="x", associationType=ebrim.ASSOC_RPLC,
                         sourceObject=de.get("id"), targetObject="urn:uuid:00000000-0000-0000-0000-000000000001")
    ctype, body = craft_iti41(pki_material.lab, make_request(make_cda("8401")), now=datetime.now(UTC), mutate=add_rplc)
    _, msg = await raw_post(pki_material, dmp.base_url, "/repository", ctype, body)
    assert _registry_codes(msg) == ["900"]


# ----- the VIHF -----


async def test_vihf_for_another_patient(dmp: RunningDmp, pki_material: Pki) -> None:
    ctype, body = craft_iti41(pki_material.lab, make_request(make_cda("9001")), now=datetime.now(UTC),
                              resource_id=f"{OTHER_INS}^^^&1.2.250.1.213.1.4.10&ISO^NH")
    _, msg = await raw_post(pki_material, dmp.base_url, "/repository", ctype, body)
    assert _registry_codes(msg) == ["XDSPatientIdDoesNotMatch"]


async def test_vihf_with_a_bad_signature(dmp: RunningDmp, pki_material: Pki) -> None:
    ctype, body = craft_iti41(pki_material.lab, make_request(make_cda("9101")), now=datetime.now(UTC),
                              vihf_mutate=lambda raw: raw.replace(b"INDIRECTE", b"DIRECTE!!"))
    status, msg = await raw_post(pki_material, dmp.base_url, "/repository", ctype, body)
    assert status == 400 and msg.fault is not None
    assert msg.fault.subcode == "wsse:FailedAuthentication" and "signature" in msg.fault.reason


async def test_expired_vihf_is_a_permanent_rejection(dmp: RunningDmp, make_connector: ConnectorFactory) -> None:
    c = await make_connector(dmp.base_url)
    c.now = lambda: datetime.now(UTC) - timedelta(minutes=10)
    out = await c.send(make_request(make_cda("9201")))
    assert isinstance(out, DmpRejected) and out.code == "wsse:FailedAuthentication" and "expired" in out.text


async def test_vihf_signed_by_another_structure(dmp: RunningDmp, pki_material: Pki) -> None:
    """TLS as the lab, VIHF signed with the clinic's certificate: refused."""
    ctype, body = craft_iti41(pki_material.other, make_request(make_cda("9301")), now=datetime.now(UTC))
    status, msg = await raw_post(pki_material, dmp.base_url, "/repository", ctype, body, who=pki_material.lab)
    assert status == 400 and msg.fault.subcode == "wsse:FailedAuthentication" and "signer" in msg.fault.reason


async def test_missing_vihf_and_wrong_action(dmp: RunningDmp, pki_material: Pki) -> None:
    env = soap.build_envelope(action=soap.ACTION_ITI41, message_id="m", body=etree.Element("{urn:x}y"))
    status, msg = await raw_post(pki_material, dmp.base_url, "/repository", "application/soap+xml", env)
    assert status == 400 and msg.fault.subcode == "wsse:InvalidSecurity"
    env = soap.build_envelope(action=soap.ACTION_ITI57, message_id="m", body=etree.Element("{urn:x}y"))
    status, msg = await raw_post(pki_material, dmp.base_url, "/repository", "application/soap+xml", env)
    assert status == 400 and msg.fault.subcode == "wsa:ActionNotSupported"


# ----- transport: mutual TLS, outages, HTTP errors -----


async def test_untrusted_client_certificate_never_reaches_the_dmp(dmp: RunningDmp, make_connector: ConnectorFactory, pki_material: Pki) -> None:
    rogue = await make_connector(dmp.base_url, who=pki_material.rogue)
    out = await rogue.send(make_request(make_cda("10001")))
    assert isinstance(out, DmpTemporaryFailure)
    assert dmp.dmp.requests == 0


async def test_untrusted_server_certificate_is_refused(dmp: RunningDmp, make_connector: ConnectorFactory, pki_material: Pki) -> None:
    c = await make_connector(dmp.base_url, anchors_path=pki_material.rogue_anchors)
    out = await c.send(make_request(make_cda("10101")))
    assert isinstance(out, DmpTemporaryFailure) and "TLS" in out.reason
    assert dmp.dmp.requests == 0


async def test_dmp_down_is_a_temporary_failure(make_connector: ConnectorFactory, unused_tcp_port: int) -> None:
    audit = AuditSink()
    c = await make_connector(f"https://127.0.0.1:{unused_tcp_port}", audit=audit)
    out = await c.send(make_request(make_cda("10201")))
    assert isinstance(out, DmpTemporaryFailure) and "network" in out.reason
    assert audit.events[0]["outcome"] == "temporary-failure"


@pytest.mark.parametrize(
    ("status", "ctype", "body", "temporary"),
    [
        (503, "text/plain", b"maintenance", True),
        (500, "application/soap+xml", soap.fault_envelope(code="Receiver", subcode="soap:Server", reason="x", message_id="m"), True),
        (429, "text/plain", b"slow down", True),
        (403, "text/html", b"<html>no</html>", False),
        (400, "application/soap+xml", soap.fault_envelope(code="Sender", subcode="soap:Client", reason="bad", message_id="m"), False),
    ],
)
async def test_http_answers_are_classified(
    make_connector: ConnectorFactory, pki_material: Pki, status: int, ctype: str, body: bytes, temporary: bool
) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=status, body=body, headers={"Content-Type": ctype})

    app = web.Application()
    app.router.add_post("/repository", handler)
    ctx = server_context(pki_material.server.chain_path, pki_material.server.key_path, pki_material.space.anchors_path)  # type: ignore[arg-type]
    runner = web.AppRunner(app)
    await runner.setup()
    import socket

    sock = socket.create_server(("127.0.0.1", 0))
    await web.SockSite(runner, sock, ssl_context=ctx).start()
    try:
        c = await make_connector(f"https://127.0.0.1:{sock.getsockname()[1]}")
        out = await c.send(make_request(make_cda("10301")))
        assert isinstance(out, DmpTemporaryFailure if temporary else DmpRejected), out
    finally:
        await runner.cleanup()


# ----- the store -----


async def test_store_directory_survives_a_restart(dmp: RunningDmp, make_connector: ConnectorFactory, tmp_path: Path) -> None:
    c = await make_connector(dmp.base_url)
    out = await c.send(make_request(make_cda("11001")))
    assert isinstance(out, DmpAccepted)
    reloaded = ReferenceRegistry(tmp_path / "dmp-store")
    (doc,) = reloaded.documents_of(INS)
    assert doc.unique_id == out.document_unique_id and reloaded.content(doc.entry_uuid) == make_cda("11001")


async def test_listing_refuses_a_malformed_ins(dmp: RunningDmp, pki_material: Pki) -> None:
    status, body = await listing(pki_material, dmp, "12345")
    assert status == 400 and "INS" in body["error"]


async def test_second_dmp_instance_is_independent(pki_material: Pki, tmp_path: Path, make_connector: ConnectorFactory) -> None:
    from mssante.dmp.reference import ReferenceDmp

    ctx = server_context(pki_material.server.chain_path, pki_material.server.key_path, pki_material.space.anchors_path)  # type: ignore[arg-type]
    running = await start_reference_dmp(ReferenceDmp(), host="127.0.0.1", port=0, ssl_context=ctx)
    try:
        c = await make_connector(running.base_url)
        assert isinstance(await c.send(make_request(make_cda("12001"))), DmpAccepted)
        assert len(running.dmp.registry.docs) == 1
    finally:
        await running.stop()


async def test_oversized_answer_is_not_buffered(make_connector: ConnectorFactory, pki_material: Pki) -> None:
    import socket

    from mssante.dmp.connector import MAX_RESPONSE_BYTES

    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/soap+xml"})
        await resp.prepare(request)
        chunk = b"x" * 65536
        for _ in range(MAX_RESPONSE_BYTES // len(chunk) + 2):
            await resp.write(chunk)
        return resp

    app = web.Application()
    app.router.add_post("/repository", handler)
    ctx = server_context(pki_material.server.chain_path, pki_material.server.key_path, pki_material.space.anchors_path)  # type: ignore[arg-type]
    runner = web.AppRunner(app)
    await runner.setup()
    sock = socket.create_server(("127.0.0.1", 0))
    await web.SockSite(runner, sock, ssl_context=ctx).start()
    try:
        c = await make_connector(f"https://127.0.0.1:{sock.getsockname()[1]}")
        out = await c.send(make_request(make_cda("16001")))
        assert isinstance(out, DmpRejected) and "larger" in out.text
    finally:
        await runner.cleanup()


async def test_oversized_request_is_a_permanent_refusal(pki_material: Pki, make_connector: ConnectorFactory) -> None:
    from mssante.dmp.reference import ReferenceDmp

    ctx = server_context(pki_material.server.chain_path, pki_material.server.key_path, pki_material.space.anchors_path)  # type: ignore[arg-type]
    running = await start_reference_dmp(ReferenceDmp(max_request_bytes=4096), host="127.0.0.1", port=0, ssl_context=ctx)
    try:
        c = await make_connector(running.base_url)
        out = await c.send(make_request(make_cda("18001")))
        assert isinstance(out, DmpRejected) and out.code == "soap:Client" and "too large" in out.text
    finally:
        await running.stop()


async def test_an_unexpected_failure_is_temporary_with_a_correlation_id(dmp: RunningDmp, make_connector: ConnectorFactory) -> None:
    c = await make_connector(dmp.base_url)

    def broken_clock() -> datetime:
        raise RuntimeError("clock source unavailable")

    c.now = broken_clock
    out = await c.send(make_request(make_cda("19001")))
    assert isinstance(out, DmpTemporaryFailure) and "correlation id dmp-" in out.reason


async def test_no_document_content_in_logs(dmp: RunningDmp, make_connector: ConnectorFactory, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    caplog.set_level(logging.DEBUG, logger="mssante.dmp")
    c = await make_connector(dmp.base_url)
    await c.send(make_request(make_cda("20001")))
    await c.send(make_request(make_cda("20002", ins=OTHER_INS)))  # a refusal path too
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "dmp.submit" in text or "DMP submit" in text
    for secret in ("PAT-TROIS", "DOMINIQUE", "Compte rendu", "JVBER", "CAMPARINI"):
        assert secret not in text
