"""FHIR R4 read/search subset compatible with Annuaire Santé API v2 (SPECS.md §5), on aiohttp.

Resources: Practitioner, PractitionerRole, Organization (+ ``metadata``). Only GET and
``POST <Type>/_search`` are allowed (SPECS.md §5: "Only GET and _search"); anything else is 405.
Errors are OperationOutcome: 400 unknown parameter/modifier or bad value, 404 unknown id or type,
405 other methods. Paging is keyset-based: ``_count`` (1..1000, default 50) and an opaque
``_cursor`` carried by the ``next`` link. Liste-rouge and closed mailboxes are never published.

``add_routes(app, directory, prefix="/fhir", base_url=None)`` mounts it on the gateway's HTTP
port; ``make_app`` builds the standalone app used by ``mssante annuaire serve``.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from multidict import MultiDict, MultiDictProxy
from sqlalchemy import ColumnElement, and_, false, or_, select

from annuaire import fhir_resources as fr
from annuaire.formats import norm
from annuaire.models import Activity, Mailbox, Practitioner, SavoirFaire, Structure
from annuaire.service import Directory, like_prefix

log = logging.getLogger("annuaire.fhir")
# Core tables: rows are read as named tuples (attribute access), no ORM session needed.
PT, MT, ST, AT, SFT = (Practitioner.__table__, Mailbox.__table__, Structure.__table__, Activity.__table__,
                       SavoirFaire.__table__)
FHIR_JSON = "application/fhir+json"
DEFAULT_COUNT, MAX_COUNT = 50, 1000

COMMON = {"_count", "_format", "_cursor", "_id"}
STRING_MODS = {"", "exact", "contains"}
PARAMS: dict[str, dict[str, set[str]]] = {  # resource -> param -> allowed modifiers
    "Practitioner": {"identifier": {""}, "name": STRING_MODS, "family": STRING_MODS, "given": STRING_MODS,
                     "mailbox-mss": STRING_MODS, "mailbox-mss-type": {""}},
    "Organization": {"identifier": {""}, "name": STRING_MODS, "mailbox-mss": STRING_MODS,
                     "mailbox-mss-type": {""}},
    "PractitionerRole": {"practitioner": {""}, "organization": {""}, "mailbox-mss": STRING_MODS,
                         "mailbox-mss-type": {""}},
}


class FhirError(Exception):
    def __init__(self, status: int, code: str, diagnostics: str) -> None:
        super().__init__(diagnostics)
        self.status, self.code, self.diagnostics = status, code, diagnostics


def _json(data: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode(),
                        status=status, content_type=FHIR_JSON, charset="utf-8", headers=headers)


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _string_cond(cols: list[Any], raw_cols: list[Any], mod: str, value: str) -> ColumnElement[bool]:
    """FHIR string search: default starts-with, :contains, :exact; accent/case-insensitive except :exact."""
    if mod == "exact":
        return or_(*[c == value for c in raw_cols])
    n = norm(value)
    pattern = f"%{_esc(n)}%" if mod == "contains" else like_prefix(n)
    return or_(*[c.like(pattern, escape="\\") for c in cols])


def _public_mailbox() -> list[ColumnElement[bool]]:
    return [Mailbox.closed_at.is_(None), Mailbox.liste_rouge.is_(False)]


def _mailbox_cond(name: str, mod: str, value: str) -> ColumnElement[bool]:
    alts = [v.strip() for v in value.split(",") if v.strip()]
    if not alts:
        raise FhirError(400, "invalid", f"empty value for {name}")
    if name == "mailbox-mss-type":
        bad = [a for a in alts if a.upper() not in ("PER", "ORG", "APP", "CAB")]
        if bad:
            raise FhirError(400, "invalid", "mailbox-mss-type must be PER, ORG, APP or CAB")
        return Mailbox.type.in_([a.upper() for a in alts])
    conds = []
    for a in alts:
        a = a.lower()
        if mod == "exact":
            conds.append(Mailbox.address == a)
        elif mod == "contains":
            conds.append(Mailbox.address.like(f"%{_esc(a)}%", escape="\\"))
        else:
            conds.append(Mailbox.address.like(like_prefix(a), escape="\\"))
    return or_(*conds)


class Params:
    """Validated search parameters of one request."""

    def __init__(self, rtype: str, query: MultiDictProxy[str] | MultiDict[str]) -> None:
        allowed = PARAMS[rtype]
        self.items: list[tuple[str, str, str]] = []
        self.count = DEFAULT_COUNT
        self.cursor = ""
        self.ids: list[str] = []
        self.passthrough: list[tuple[str, str]] = []
        for key, value in query.items():
            name, _, mod = key.partition(":")
            if name == "_count":
                if not value.isdigit() or not 1 <= int(value) <= MAX_COUNT:
                    raise FhirError(400, "invalid", f"_count must be an integer between 1 and {MAX_COUNT}")
                self.count = int(value)
            elif name == "_format":
                if value not in ("json", "application/fhir+json", "application/json"):
                    raise FhirError(400, "not-supported", "only JSON is supported")
            elif name == "_cursor":
                self.cursor = value
                continue
            elif name == "_id":
                self.ids.extend(v for v in value.split(",") if v)
            elif name not in allowed:
                raise FhirError(400, "not-supported", f"unknown search parameter {key!r} for {rtype}")
            elif mod not in allowed[name]:
                raise FhirError(400, "not-supported", f"unsupported modifier {key!r}")
            else:
                self.items.append((name, mod, value))
            self.passthrough.append((key, value))

    def mailbox_conds(self) -> list[ColumnElement[bool]]:
        conds = [_mailbox_cond(n, m, v) for n, m, v in self.items if n.startswith("mailbox-mss")]
        return conds


class FhirApi:
    def __init__(self, directory: Directory, *, prefix: str = "/fhir", base_url: str | None = None) -> None:
        self.engine = directory.engine
        self.prefix = prefix.rstrip("/")
        self.base_url = base_url.rstrip("/") if base_url else None

    def base(self, request: web.Request) -> str:
        return self.base_url or f"{request.scheme}://{request.host}{self.prefix}"

    # --- dispatch ---------------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.Response:
        try:
            return await self._dispatch(request)
        except FhirError as exc:
            return _json(fr.outcome(exc.code, exc.diagnostics), exc.status,
                         {"Allow": "GET, POST"} if exc.status == 405 else None)
        except Exception:  # a server fault: logged here, never sent to the client
            log.exception("FHIR request failed")
            return _json(fr.outcome("exception", "internal error"), 500)

    async def _dispatch(self, request: web.Request) -> web.Response:
        parts = [p for p in request.match_info.get("tail", "").split("/") if p]
        if request.method == "POST" and len(parts) == 2 and parts[1] == "_search":
            form = await request.post()
            query: MultiDict[str] = MultiDict(request.rel_url.query)
            for k, v in form.items():
                if isinstance(v, str):
                    query.add(k, v)
            return await self._search(request, parts[0], query)
        if request.method not in ("GET", "HEAD"):
            raise FhirError(405, "not-supported", f"method {request.method} not allowed: "
                                                  "the directory is read-only (GET and _search)")
        if parts == ["metadata"]:
            return _json(self._capability())
        if not parts or parts[0] not in PARAMS:
            raise FhirError(404, "not-found", f"unknown resource type {parts[0] if parts else ''!r}")
        if len(parts) == 1:
            return await self._search(request, parts[0], request.rel_url.query)
        if len(parts) == 2 and parts[1] != "_search":
            if request.rel_url.query:
                raise FhirError(400, "not-supported", "no parameters are supported on read")
            res = await self._read(parts[0], parts[1])
            if res is None:
                raise FhirError(404, "not-found", f"{parts[0]}/{parts[1]} is not known")
            return _json(res)
        if len(parts) == 2:
            return await self._search(request, parts[0], request.rel_url.query)
        raise FhirError(404, "not-found", "unknown path")

    # --- read -------------------------------------------------------------------------------
    async def _read(self, rtype: str, rid: str) -> dict[str, Any] | None:
        if rtype == "Practitioner":
            res = await self._practitioners([rid])
        elif rtype == "Organization":
            res = await self._organizations([rid])
        else:
            key = fr.parse_role_id(rid)
            if key is None:
                return None
            res = await self._roles([key])
        return res[0] if res else None

    # --- search -----------------------------------------------------------------------------
    async def _search(self, request: web.Request, rtype: str, query: Any) -> web.Response:
        if rtype not in PARAMS:
            raise FhirError(404, "not-found", f"unknown resource type {rtype!r}")
        params = Params(rtype, query)
        if rtype == "Practitioner":
            keys, nxt = await self._search_practitioners(params)
            resources = await self._practitioners(keys)
        elif rtype == "Organization":
            keys, nxt = await self._search_organizations(params)
            resources = await self._organizations(keys)
        else:
            rkeys, nxt = await self._search_roles(params)
            resources = await self._roles(rkeys)
        base = self.base(request)
        url = f"{base}/{rtype}"
        self_url = url + ("?" + urlencode(params.passthrough) if params.passthrough else "")
        next_url = None
        if nxt:
            next_url = url + "?" + urlencode([*params.passthrough, ("_cursor", nxt)])
        entries = [(f"{base}/{rtype}/{r['id']}", r) for r in resources]
        return _json(fr.bundle(entries, self_url, next_url))

    async def _page(self, stmt: Any, count: int) -> list[Any]:
        async with self.engine.connect() as conn:
            return list((await conn.execute(stmt.limit(count + 1))).all())

    async def _search_practitioners(self, p: Params) -> tuple[list[str], str | None]:
        conds: list[ColumnElement[bool]] = []
        for name, mod, value in p.items:
            if name == "identifier":
                conds.append(_pp_identifier(value))
            elif name == "name":
                conds.append(_string_cond([Practitioner.norm_family, Practitioner.norm_given],
                                          [Practitioner.family, Practitioner.given], mod, value))
            elif name == "family":
                conds.append(_string_cond([Practitioner.norm_family], [Practitioner.family], mod, value))
            elif name == "given":
                conds.append(_string_cond([Practitioner.norm_given], [Practitioner.given], mod, value))
        mconds = p.mailbox_conds()
        if mconds:
            conds.append(Practitioner.idnps.in_(select(Mailbox.idnps).where(*mconds, *_public_mailbox())))
        if p.ids:
            conds.append(Practitioner.idnps.in_(p.ids))
        if p.cursor:
            conds.append(Practitioner.idnps > p.cursor)
        rows = await self._page(select(Practitioner.idnps).where(*conds).order_by(Practitioner.idnps), p.count)
        keys = [r[0] for r in rows]
        return keys[:p.count], (keys[p.count - 1] if len(keys) > p.count else None)

    async def _search_organizations(self, p: Params) -> tuple[list[str], str | None]:
        conds: list[ColumnElement[bool]] = []
        for name, mod, value in p.items:
            if name == "identifier":
                conds.append(_org_identifier(value))
            elif name == "name":
                conds.append(_string_cond([Structure.norm_name], [Structure.name], mod, value))
        mconds = p.mailbox_conds()
        if mconds:
            conds.append(Structure.structure_id.in_(
                select(Mailbox.structure_id).where(*mconds, *_public_mailbox(), Mailbox.type != "PER")))
        if p.ids:
            conds.append(Structure.structure_id.in_(p.ids))
        if p.cursor:
            conds.append(Structure.structure_id > p.cursor)
        rows = await self._page(select(Structure.structure_id).where(*conds).order_by(Structure.structure_id),
                                p.count)
        keys = [r[0] for r in rows]
        return keys[:p.count], (keys[p.count - 1] if len(keys) > p.count else None)

    async def _search_roles(self, p: Params) -> tuple[list[tuple[str, int]], str | None]:
        conds: list[ColumnElement[bool]] = []
        for name, _mod, value in p.items:
            ref = value.rsplit("/", 1)[-1]
            if name == "practitioner":
                conds.append(Activity.idnps == ref)
            elif name == "organization":
                conds.append(Activity.structure_id == ref)
        mconds = p.mailbox_conds()
        if mconds:
            conds.append(Activity.idnps.in_(select(Mailbox.idnps).where(*mconds, *_public_mailbox())))
        if p.ids:
            keys = [k for k in (fr.parse_role_id(i) for i in p.ids) if k]
            conds.append(or_(*[and_(Activity.idnps == a, Activity.row_hash == b) for a, b in keys]) if keys
                         else false())
        if p.cursor:
            c_id, _, c_h = p.cursor.partition("~")
            try:
                h = int(c_h)
            except ValueError:
                raise FhirError(400, "invalid", "bad _cursor") from None
            conds.append(or_(Activity.idnps > c_id, and_(Activity.idnps == c_id, Activity.row_hash > h)))
        rows = await self._page(select(Activity.idnps, Activity.row_hash).where(*conds)
                                .order_by(Activity.idnps, Activity.row_hash), p.count)
        keys = [(r[0], int(r[1])) for r in rows]
        nxt = f"{keys[p.count - 1][0]}~{keys[p.count - 1][1]}" if len(keys) > p.count else None
        return keys[:p.count], nxt

    # --- rendering (batched: a few queries per page) -----------------------------------------
    async def _practitioners(self, ids: list[str]) -> list[dict[str, Any]]:
        if not ids:
            return []
        async with self.engine.connect() as conn:
            ps = {r.idnps: r for r in (await conn.execute(
                select(PT).where(PT.c.idnps.in_(ids)))).all()}
            boxes: dict[str, list[Any]] = defaultdict(list)
            for m in (await conn.execute(select(MT).where(
                    Mailbox.idnps.in_(ids), *_public_mailbox()).order_by(Mailbox.type != "PER",
                                                                         Mailbox.address))).all():
                boxes[m.idnps].append(m)
            sfs: dict[str, list[Any]] = defaultdict(list)
            for s in (await conn.execute(select(SFT).where(SavoirFaire.idnps.in_(ids)))).all():
                sfs[s.idnps].append(s)
        return [fr.practitioner(i, ps.get(i), boxes.get(i, []), sfs.get(i, []))
                for i in ids if i in ps or i in boxes]

    async def _organizations(self, ids: list[str]) -> list[dict[str, Any]]:
        if not ids:
            return []
        async with self.engine.connect() as conn:
            ss = {r.structure_id: r for r in (await conn.execute(
                select(ST).where(Structure.structure_id.in_(ids)))).all()}
            boxes: dict[str, list[Any]] = defaultdict(list)
            for m in (await conn.execute(select(MT).where(
                    Mailbox.structure_id.in_(ids), Mailbox.type != "PER", *_public_mailbox())
                    .order_by(Mailbox.address))).all():
                boxes[m.structure_id].append(m)
        return [fr.organization(i, ss.get(i), boxes.get(i, [])) for i in ids if i in ss or i in boxes]

    async def _roles(self, keys: list[tuple[str, int]]) -> list[dict[str, Any]]:
        if not keys:
            return []
        idnps = sorted({k[0] for k in keys})
        async with self.engine.connect() as conn:
            acts = {(a.idnps, int(a.row_hash)): a for a in (await conn.execute(
                select(AT).where(Activity.idnps.in_(idnps)))).all()}
            ps = {r.idnps: r for r in (await conn.execute(
                select(PT).where(Practitioner.idnps.in_(idnps)))).all()}
            boxes: dict[tuple[str, str], list[Any]] = defaultdict(list)
            for m in (await conn.execute(select(MT).where(
                    Mailbox.idnps.in_(idnps), *_public_mailbox()).order_by(Mailbox.address))).all():
                boxes[(m.idnps, m.structure_id)].append(m)
        out = []
        for k in keys:
            a = acts.get(k)
            if a is not None:
                out.append(fr.practitioner_role(a, ps.get(a.idnps), boxes.get((a.idnps, a.structure_id), [])))
        return out

    def _capability(self) -> dict[str, Any]:
        return {"resourceType": "CapabilityStatement", "status": "active", "date": fr.instant(None),
                "kind": "instance", "fhirVersion": "4.0.1", "format": ["json"],
                "rest": [{"mode": "server", "resource": [
                    {"type": t, "interaction": [{"code": "read"}, {"code": "search-type"}],
                     "searchParam": [{"name": n, "type": "string"} for n in sorted(PARAMS[t])]}
                    for t in PARAMS]}]}


def _pp_identifier(value: str) -> ColumnElement[bool]:
    system, sep, val = value.partition("|")
    if not sep:
        system, val = "", value
    if not val:
        raise FhirError(400, "invalid", "identifier needs a value (system|value)")
    if system == fr.SYS_IDNPS:
        return Practitioner.idnps == val
    if system == fr.SYS_RPPS:
        return Practitioner.idnps == "8" + val
    if system == fr.SYS_ADELI:
        return Practitioner.idnps == "0" + val
    if system == "":
        return Practitioner.idnps.in_([val, "8" + val, "0" + val])
    return false()


def _org_identifier(value: str) -> ColumnElement[bool]:
    system, sep, val = value.partition("|")
    if not sep:
        system, val = "", value
    if not val:
        raise FhirError(400, "invalid", "identifier needs a value (system|value)")
    if system == fr.SYS_STRUCTURE:
        return Structure.structure_id == val
    if system == fr.SYS_FINESS:
        return Structure.finess == val
    if system == fr.SYS_SIRET:
        return Structure.siret == val
    if system == "":
        return or_(Structure.structure_id == val, Structure.finess == val, Structure.siret == val)
    return false()


def add_routes(app: web.Application, directory: Directory, *, prefix: str = "/fhir",
               base_url: str | None = None) -> None:
    """Mount the FHIR API under ``prefix`` (the gateway calls this on its HTTP app)."""
    api = FhirApi(directory, prefix=prefix, base_url=base_url)
    handler: Callable[[web.Request], Awaitable[web.Response]] = api.handle
    app.router.add_route("*", api.prefix + "/{tail:.*}", handler)


def make_app(directory: Directory, *, prefix: str = "/fhir", base_url: str | None = None) -> web.Application:
    app = web.Application(client_max_size=64 * 1024)
    add_routes(app, directory, prefix=prefix, base_url=base_url)
    return app
