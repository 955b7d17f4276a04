"""FHIR API over a real socket on loopback; every response validated with fhir.resources R4B models."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.organization import Organization
from fhir.resources.R4B.practitioner import Practitioner
from fhir.resources.R4B.practitionerrole import PractitionerRole
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from annuaire.fhir import add_routes
from annuaire.fhir_resources import EXT_EMAIL_TYPE, EXT_MAILBOX_META, SYS_IDNPS, SYS_RPPS
from annuaire.importer import Importer
from annuaire.service import Directory
from tests.annuaire.conftest import DAY0

MODELS = {"Practitioner": Practitioner, "Organization": Organization, "PractitionerRole": PractitionerRole}


@pytest.fixture
async def server(engine: AsyncEngine, files: dict[str, Path]) -> AsyncIterator[str]:
    imp = Importer(engine)
    for key in ("mssante", "activite", "own"):
        [rep] = await imp.import_path(files[key], now=DAY0)
        assert rep.ok
    app = web.Application()
    add_routes(app, Directory(engine), prefix="/fhir")
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/fhir"
    finally:
        await runner.cleanup()


async def _get(url: str, params: Any = None, method: str = "GET", data: Any = None) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as s:
        async with s.request(method, url, params=params, data=data) as r:
            assert r.headers["Content-Type"].startswith("application/fhir+json")
            return r.status, await r.json(content_type=None)


def _bundle(body: dict[str, Any], rtype: str) -> list[dict[str, Any]]:
    Bundle.model_validate(body)
    assert body["type"] == "searchset"
    for e in body.get("entry", []):
        MODELS[rtype].model_validate(e["resource"])
    return [e["resource"] for e in body.get("entry", [])]


def _mailboxes(resource: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for t in resource.get("telecom", []) if t["system"] == "email"]


async def test_practitioner_read_and_mailbox_telecom(server: str, engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        idnps, addr = (await conn.execute(text(
            "SELECT m.idnps, m.address FROM ann_mailbox m JOIN ann_practitioner p ON p.idnps = m.idnps "
            "WHERE m.type = 'PER' AND m.liste_rouge = FALSE ORDER BY m.address LIMIT 1"))).one()
    status, body = await _get(f"{server}/Practitioner/{idnps}")
    assert status == 200
    Practitioner.model_validate(body)
    assert {"system": SYS_IDNPS, "value": idnps}.items() <= body["identifier"][0].items()
    assert any(i["system"] == SYS_RPPS and i["value"] == idnps[1:] for i in body["identifier"])
    box = next(t for t in _mailboxes(body) if t["value"] == addr)
    urls = [e["url"] for e in box["extension"]]
    assert urls == [EXT_EMAIL_TYPE, EXT_MAILBOX_META]
    assert box["extension"][0]["valueCoding"]["code"] == "MSSANTE"
    meta = {e["url"]: e for e in box["extension"][1]["extension"]}
    assert meta["type"]["valueCodeableConcept"]["coding"][0]["code"] == "PER"
    assert meta["listeRouge"]["valueBoolean"] is False


async def test_search_identifier_name_and_paging(server: str, engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        idnps = (await conn.execute(text("SELECT idnps FROM ann_practitioner WHERE idnps LIKE '8%' LIMIT 1"))).scalar()
    status, body = await _get(f"{server}/Practitioner", {"identifier": f"{SYS_RPPS}|{idnps[1:]}"})
    assert status == 200 and [r["id"] for r in _bundle(body, "Practitioner")] == [idnps]
    status, body = await _get(f"{server}/Practitioner", {"identifier": f"{SYS_IDNPS}|{idnps}"})
    assert [r["id"] for r in _bundle(body, "Practitioner")] == [idnps]
    status, body = await _get(f"{server}/Practitioner", {"family": "lefevre", "_count": "5"})
    first = _bundle(body, "Practitioner")
    assert len(first) == 5 and all(r["name"][0]["family"].startswith("LEFÈVRE") for r in first)
    nxt = [link["url"] for link in body["link"] if link["relation"] == "next"]
    assert nxt and nxt[0].startswith(server + "/Practitioner?")
    # follow every next link: each professional once, in order
    ids = [r["id"] for r in first]
    url: str | None = nxt[0]
    while url:
        status, page = await _get(url)
        assert status == 200
        ids += [r["id"] for r in _bundle(page, "Practitioner")]
        url = next((link["url"] for link in page["link"] if link["relation"] == "next"), None)
    status, whole = await _get(f"{server}/Practitioner", {"family": "LEFÈVRE", "_count": "1000"})
    assert ids == [r["id"] for r in _bundle(whole, "Practitioner")] and len(set(ids)) == len(ids)
    status, body = await _get(f"{server}/Practitioner", {"given:exact": "Hélène", "_count": "3"})
    assert all(r["name"][0]["given"] == ["Hélène"] for r in _bundle(body, "Practitioner"))


async def test_mailbox_search_modifiers_and_type(server: str, engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        addr, idnps = (await conn.execute(text(
            "SELECT m.address, m.idnps FROM ann_mailbox m JOIN ann_practitioner p ON p.idnps = m.idnps "
            "WHERE m.type = 'PER' AND m.liste_rouge = FALSE LIMIT 1"))).one()
        org_addr, sid = (await conn.execute(text(
            "SELECT m.address, m.structure_id FROM ann_mailbox m JOIN ann_structure s "
            "ON s.structure_id = m.structure_id WHERE m.type = 'ORG' LIMIT 1"))).one()
    _, body = await _get(f"{server}/Practitioner", {"mailbox-mss:exact": addr})
    assert [r["id"] for r in _bundle(body, "Practitioner")] == [idnps]
    _, body = await _get(f"{server}/Practitioner", {"mailbox-mss:contains": addr[3:-3], "_count": "50"})
    assert idnps in [r["id"] for r in _bundle(body, "Practitioner")]
    _, body = await _get(f"{server}/Practitioner", {"mailbox-mss": addr[:6], "_count": "50"})
    assert all(any(t["value"].startswith(addr[:6]) for t in _mailboxes(r)) for r in _bundle(body, "Practitioner"))
    _, body = await _get(f"{server}/Organization", {"mailbox-mss": org_addr, "mailbox-mss-type": "ORG"})
    orgs = _bundle(body, "Organization")
    assert [o["id"] for o in orgs] == [sid] and org_addr in [t["value"] for t in _mailboxes(orgs[0])]
    _, body = await _get(f"{server}/PractitionerRole", {"practitioner": f"Practitioner/{idnps}"})
    roles = _bundle(body, "PractitionerRole")
    assert roles and all(r["practitioner"]["reference"] == f"Practitioner/{idnps}" for r in roles)
    status, one = await _get(f"{server}/PractitionerRole/{roles[0]['id']}")
    assert status == 200 and PractitionerRole.model_validate(one) and one["id"] == roles[0]["id"]
    status, body = await _get(f"{server}/Practitioner/_search", method="POST",
                              data={"mailbox-mss:exact": addr})
    assert status == 200 and [r["id"] for r in _bundle(body, "Practitioner")] == [idnps]


async def test_liste_rouge_never_published(server: str, engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        addr = (await conn.execute(text(
            "SELECT address FROM ann_mailbox WHERE liste_rouge = TRUE LIMIT 1"))).scalar_one()
    for params in ({"mailbox-mss:exact": addr}, {"mailbox-mss:contains": addr.split("@")[0]}):
        _, body = await _get(f"{server}/Practitioner", params)
        for r in _bundle(body, "Practitioner"):
            assert addr not in [t["value"] for t in _mailboxes(r)]


@pytest.mark.parametrize("path,params,status,code", [
    ("/Practitioner", {"colour": "blue"}, 400, "not-supported"),
    ("/Practitioner", {"name:fuzzy": "x"}, 400, "not-supported"),
    ("/Practitioner", {"_count": "0"}, 400, "invalid"),
    ("/Practitioner", {"mailbox-mss-type": "XYZ"}, 400, "invalid"),
    ("/Practitioner/899999999999", None, 404, "not-found"),
    ("/Organization/NOPE", None, 404, "not-found"),
    ("/PractitionerRole/bad-id", None, 404, "not-found"),
    ("/Patient", None, 404, "not-found"),
])
async def test_errors_are_operation_outcomes(server: str, path: str, params: Any, status: int, code: str) -> None:
    got, body = await _get(server + path, params)
    assert got == status
    OperationOutcome.model_validate(body)
    assert body["issue"][0]["code"] == code


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "POST"])
async def test_writes_are_405(server: str, method: str) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.request(method, f"{server}/Practitioner/810000000000", json={}) as r:
            assert r.status == 405
            assert "GET" in r.headers["Allow"]
            OperationOutcome.model_validate(await r.json(content_type=None))


async def test_metadata(server: str) -> None:
    status, body = await _get(f"{server}/metadata")
    assert status == 200 and body["resourceType"] == "CapabilityStatement" and body["fhirVersion"] == "4.0.1"
