"""Pure FHIR R4 resource builders compatible with Annuaire Santé API v2 (SPECS.md §5).

No I/O: rows in, JSON-ready dicts out. A mailbox is a ``telecom`` entry with system=email, the
fr-core email-type extension = MSSANTE and the as-ext-mailbox-mss-metadata extension
(ansforge/IG-fhir-annuaire input/fsh/extensions/ASMailboxMetadataExtension.fsh: type, description,
service, listeRouge; examples in input/fsh/examples/BAL/AsExamplePractitionerBalMssPer.fsh).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, TypeAlias

# Rows of the ann_* tables (SQLAlchemy Core rows or ORM objects: attribute access only).
Mailbox: TypeAlias = Any
Practitioner: TypeAlias = Any
Structure: TypeAlias = Any
Activity: TypeAlias = Any
SavoirFaire: TypeAlias = Any

EXT_EMAIL_TYPE = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-contact-point-email-type"
EXT_MAILBOX_META = "https://interop.esante.gouv.fr/ig/fhir/annuaire/StructureDefinition/as-ext-mailbox-mss-metadata"
CS_MESSAGERIE = "https://mos.esante.gouv.fr/NOS/TRE_R256-TypeMessagerie/FHIR/TRE-R256-TypeMessagerie"
CS_TYPE_BAL = "https://mos.esante.gouv.fr/NOS/TRE_R257-TypeBAL/FHIR/TRE-R257-TypeBAL"
CS_ID_TYPE = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203"
CS_PROFESSION = "https://mos.esante.gouv.fr/NOS/TRE_G15-ProfessionSante/FHIR/TRE-G15-ProfessionSante"
CS_CATEGORIE = ("https://mos.esante.gouv.fr/NOS/TRE_R09-CategorieProfessionnelle/FHIR/"
                "TRE-R09-CategorieProfessionnelle")
CS_SAVOIR_FAIRE = "https://mos.esante.gouv.fr/NOS/TRE_R38-SpecialiteOrdinale/FHIR/TRE-R38-SpecialiteOrdinale"
CS_MODE = "https://mos.esante.gouv.fr/NOS/TRE_R23-ModeExercice/FHIR/TRE-R23-ModeExercice"
CS_FONCTION = "https://mos.esante.gouv.fr/NOS/TRE_R21-Fonction/FHIR/TRE-R21-Fonction"
CS_SECTEUR = "https://mos.esante.gouv.fr/NOS/TRE_R02-SecteurActivite/FHIR/TRE-R02-SecteurActivite"

# Identifier systems (SPECS.md §5)
SYS_IDNPS = "urn:oid:1.2.250.1.71.4.2.1"
SYS_STRUCTURE = "urn:oid:1.2.250.1.71.4.2.2"
SYS_RPPS = "https://rpps.esante.gouv.fr"
SYS_ADELI = "https://adeli.esante.gouv.fr"
SYS_FINESS = "https://finess.esante.gouv.fr"
SYS_SIRET = "https://sirene.fr"

PROFILE_BASE = "https://interop.esante.gouv.fr/ig/fhir/annuaire/StructureDefinition/"


def instant(ts: datetime | str | None) -> str:
    if isinstance(ts, str):  # raw sqlite3 rows carry the stored text
        ts = datetime.fromisoformat(ts)
    ts = ts or datetime.now(UTC)
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def role_id(idnps: str, row_hash: int) -> str:
    return f"{idnps}-{row_hash & 0xFFFFFFFFFFFFFFFF:016x}"


def parse_role_id(rid: str) -> tuple[str, int] | None:
    idnps, _, h = rid.partition("-")
    if not idnps or len(h) != 16:
        return None
    try:
        v = int(h, 16)
    except ValueError:
        return None
    return idnps, v - (1 << 64) if v >= (1 << 63) else v


def _coding(system: str, code: str, display: str = "") -> dict[str, Any]:
    c: dict[str, Any] = {"system": system, "code": code}
    if display:
        c["display"] = display
    return c


def mailbox_telecom(m: Mailbox) -> dict[str, Any]:
    """A mailbox as a ContactPoint (SPECS.md §5; AS Mailbox Metadata extension)."""
    meta: list[dict[str, Any]] = [
        {"url": "type", "valueCodeableConcept": {"coding": [_coding(CS_TYPE_BAL, m.type)]}}]
    description = " ".join(x for x in (m.given, m.family) if x) if m.type == "PER" else (m.org_name or m.enseigne)
    if description:
        meta.append({"url": "description", "valueString": description})
    if m.service:
        meta.append({"url": "service", "valueString": m.service})
    meta.append({"url": "listeRouge", "valueBoolean": bool(m.liste_rouge)})
    return {"extension": [
        {"url": EXT_EMAIL_TYPE, "valueCoding": _coding(CS_MESSAGERIE, "MSSANTE")},
        {"url": EXT_MAILBOX_META, "extension": meta}],
        "system": "email", "value": m.address}


def _pp_identifiers(idnps: str) -> list[dict[str, Any]]:
    ids: list[dict[str, Any]] = [{"use": "official", "type": {"coding": [_coding(CS_ID_TYPE, "IDNPS")]},
                                  "system": SYS_IDNPS, "value": idnps}]
    if idnps.startswith("8"):
        ids.append({"use": "official", "type": {"coding": [_coding(CS_ID_TYPE, "RPPS")]},
                    "system": SYS_RPPS, "value": idnps[1:]})
    elif idnps.startswith("0"):
        ids.append({"use": "official", "type": {"coding": [_coding(CS_ID_TYPE, "ADELI")]},
                    "system": SYS_ADELI, "value": idnps[1:]})
    return ids


def practitioner(idnps: str, p: Practitioner | None, boxes: Iterable[Mailbox],
                 sfs: Iterable[SavoirFaire] = ()) -> dict[str, Any]:
    """Practitioner; ``p`` may be None for a professional known only from the MSSanté extraction."""
    boxes = list(boxes)
    first = boxes[0] if boxes else None
    family = p.family if p else (first.family if first else "")
    given = p.given if p else (first.given if first else "")
    name: dict[str, Any] = {"use": "official"}
    if family:
        name["family"] = family
    if given:
        name["given"] = [given]
    civ = p.civ_ex_label if p else (first.civility if first else "")
    if civ:
        name["prefix"] = [civ]
    res: dict[str, Any] = {"resourceType": "Practitioner", "id": idnps,
                           "meta": {"lastUpdated": instant(p.updated_at if p else (first.updated_at if first else None)),
                                    "profile": [PROFILE_BASE + "as-practitioner"]},
                           "identifier": _pp_identifiers(idnps),
                           "active": bool(p.active) if p else True}
    if len(name) > 1:
        res["name"] = [name]
    telecom = [mailbox_telecom(m) for m in boxes]
    if telecom:
        res["telecom"] = telecom
    quals: list[dict[str, Any]] = []
    prof_code = p.profession_code if p else (first.profession_code if first else "")
    prof_label = p.profession_label if p else (first.profession_label if first else "")
    if prof_code:
        codings = [_coding(CS_PROFESSION, prof_code, prof_label)]
        cat = p.category_code if p else (first.category_code if first else "")
        if cat:
            codings.append(_coding(CS_CATEGORIE, cat))
        quals.append({"code": {"coding": codings}})
    for s in sfs:
        quals.append({"code": {"coding": [_coding(CS_SAVOIR_FAIRE, s.code, s.label)]}})
    if quals:
        res["qualification"] = quals
    return res


def _address(s: Structure) -> dict[str, Any]:
    addr: dict[str, Any] = {"use": "work"}
    lines = [x for x in (s.complement, s.street) if x]
    if lines:
        addr["line"] = lines
    if s.city:
        addr["city"] = s.city
    if s.postal_code:
        addr["postalCode"] = s.postal_code
    if s.country:
        addr["country"] = s.country
    return addr


def organization(sid: str, s: Structure | None, boxes: Iterable[Mailbox]) -> dict[str, Any]:
    boxes = list(boxes)
    first = boxes[0] if boxes else None
    ids: list[dict[str, Any]] = [{"use": "official", "system": SYS_STRUCTURE, "value": sid}]
    if s and s.finess:
        ids.append({"use": "official", "system": SYS_FINESS, "value": s.finess})
    if s and s.siret:
        ids.append({"use": "official", "system": SYS_SIRET, "value": s.siret})
    res: dict[str, Any] = {"resourceType": "Organization", "id": sid,
                           "meta": {"lastUpdated": instant(s.updated_at if s else (first.updated_at if first else None)),
                                    "profile": [PROFILE_BASE + "as-organization"]},
                           "identifier": ids, "active": True}
    name = s.name if s else (first.org_name if first else "")
    if name:
        res["name"] = name
    if s and s.enseigne:
        res["alias"] = [s.enseigne]
    telecom = [mailbox_telecom(m) for m in boxes]
    if s and s.phone:
        telecom.append({"system": "phone", "value": s.phone})
    if telecom:
        res["telecom"] = telecom
    if s:
        addr = _address(s)
        if len(addr) > 1:
            res["address"] = [addr]
    return res


def practitioner_role(a: Activity, p: Practitioner | None, boxes: Iterable[Mailbox]) -> dict[str, Any]:
    res: dict[str, Any] = {"resourceType": "PractitionerRole", "id": role_id(a.idnps, a.row_hash),
                           "meta": {"lastUpdated": instant(a.updated_at),
                                    "profile": [PROFILE_BASE + "as-practitionerrole"]},
                           "active": True, "practitioner": {"reference": f"Practitioner/{a.idnps}"}}
    if a.structure_id:
        res["organization"] = {"reference": f"Organization/{a.structure_id}"}
    codes: list[dict[str, Any]] = []
    if p and p.profession_code:
        codes.append({"coding": [_coding(CS_PROFESSION, p.profession_code, p.profession_label)]})
    if a.function_code:
        codes.append({"coding": [_coding(CS_FONCTION, a.function_code, a.function_label)]})
    if a.mode_code:
        codes.append({"coding": [_coding(CS_MODE, a.mode_code, a.mode_label)]})
    if codes:
        res["code"] = codes
    if a.sector_code:
        res["specialty"] = [{"coding": [_coding(CS_SECTEUR, a.sector_code, a.sector_label)]}]
    telecom = [mailbox_telecom(m) for m in boxes]
    if telecom:
        res["telecom"] = telecom
    return res


def bundle(entries: list[tuple[str, dict[str, Any]]], self_url: str, next_url: str | None) -> dict[str, Any]:
    links = [{"relation": "self", "url": self_url}]
    if next_url:
        links.append({"relation": "next", "url": next_url})
    return {"resourceType": "Bundle", "type": "searchset",
            "meta": {"lastUpdated": instant(None)}, "link": links,
            "entry": [{"fullUrl": full, "resource": r, "search": {"mode": "match"}} for full, r in entries]}


def outcome(code: str, diagnostics: str, severity: str = "error") -> dict[str, Any]:
    return {"resourceType": "OperationOutcome",
            "issue": [{"severity": severity, "code": code, "diagnostics": diagnostics}]}
