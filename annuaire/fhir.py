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

import base64
import json
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from multidict import MultiDict, MultiDictProxy

from annuaire import fhir_resources as fr
from annuaire.formats import norm
from annuaire.reads import Reader, like_contains, prefix_cond
from annuaire.service import Directory

log = logging.getLogger("annuaire.fhir")
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


PUBLIC_BOX = "m.closed_at IS NULL AND m.liste_rouge = FALSE"  # SPECS.md §5: liste rouge never published


class Where:
    """SQL condition fragments with ``?`` parameters (values always bound)."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.params: list[Any] = []

    def add(self, sql: str, *params: Any) -> None:
        self.parts.append(sql)
        self.params.extend(params)

    def sql(self) -> str:
        return " AND ".join(self.parts) if self.parts else "1 = 1"


def _string_cond(w: Where, norm_cols: list[str], raw_cols: list[str], mod: str, value: str) -> None:
    """FHIR string search: default starts-with, :contains, :exact; accent/case-insensitive except :exact."""
    if mod == "exact":
        w.add("(" + " OR ".join(f"{c} = ?" for c in raw_cols) + ")", *([value] * len(raw_cols)))
        return
    if mod == "contains":
        pattern = like_contains(norm(value))
        w.add("(" + " OR ".join(f"{c} LIKE ?" for c in norm_cols) + ")", *([pattern] * len(norm_cols)))
        return
    conds = [prefix_cond(c, norm(value)) for c in norm_cols]
    w.add("(" + " OR ".join(sql for sql, _ in conds) + ")", *[p for _, ps in conds for p in ps])


def _mailbox_cond(w: Where, name: str, mod: str, value: str) -> None:
    """mailbox-mss (:exact, :contains) and mailbox-mss-type, on alias m (SPECS.md §5)."""
    alts = [v.strip() for v in value.split(",") if v.strip()]
    if not alts:
        raise FhirError(400, "invalid", f"empty value for {name}")
    if name == "mailbox-mss-type":
        if any(a.upper() not in ("PER", "ORG", "APP", "CAB") for a in alts):
            raise FhirError(400, "invalid", "mailbox-mss-type must be PER, ORG, APP or CAB")
        w.add("m.type IN (" + ", ".join("?" * len(alts)) + ")", *[a.upper() for a in alts])
        return
    alts = [a.lower() for a in alts]
    if mod == "exact":
        w.add("(" + " OR ".join("m.address = ?" for _ in alts) + ")", *alts)
    elif mod == "contains":
        w.add("(" + " OR ".join("m.address LIKE ?" for _ in alts) + ")", *[like_contains(a) for a in alts])
    else:
        conds = [prefix_cond("m.address", a) for a in alts]
        w.add("(" + " OR ".join(sql for sql, _ in conds) + ")", *[p for _, ps in conds for p in ps])


def _in(n: int) -> str:
    return "(" + ", ".join("?" * n) + ")"


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
                if len(self.ids) > MAX_COUNT:
                    raise FhirError(400, "invalid", f"at most {MAX_COUNT} _id values")
            elif name not in allowed:
                raise FhirError(400, "not-supported", f"unknown search parameter {key!r} for {rtype}")
            elif mod not in allowed[name]:
                raise FhirError(400, "not-supported", f"unsupported modifier {key!r}")
            else:
                self.items.append((name, mod, value))
            self.passthrough.append((key, value))

    def mailbox_where(self, w: Where) -> bool:
        found = False
        for n, m, v in self.items:
            if n.startswith("mailbox-mss"):
                _mailbox_cond(w, n, m, v)
                found = True
        return found


class FhirApi:
    def __init__(self, directory: Directory, *, prefix: str = "/fhir", base_url: str | None = None) -> None:
        self.reader: Reader = directory.reader
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

    async def _search_practitioners(self, p: Params) -> tuple[list[str], str | None]:
        w = Where()
        for name, mod, value in p.items:
            if name == "identifier":
                _pp_identifier(w, value)
            elif name == "name":
                _string_cond(w, ["p.norm_family", "p.norm_given"], ["p.family", "p.given"], mod, value)
            elif name == "family":
                _string_cond(w, ["p.norm_family"], ["p.family"], mod, value)
            elif name == "given":
                _string_cond(w, ["p.norm_given"], ["p.given"], mod, value)
        mw = Where()
        if p.mailbox_where(mw):
            w.add(f"p.idnps IN (SELECT m.idnps FROM ann_mailbox m WHERE {PUBLIC_BOX} AND {mw.sql()})",  # noqa: S608
                  *mw.params)
        if p.ids:
            w.add("p.idnps IN " + _in(len(p.ids)), *p.ids)
        # A family search walks the (norm_family, idnps) index: keyset paging stays O(page) however
        # many professionals share a prefix. Otherwise the order is the IDNPS.
        by_family = any(n == "family" and m != "exact" for n, m, _ in p.items)
        if p.cursor:
            if by_family:
                try:
                    c_fam, c_id = base64.urlsafe_b64decode(p.cursor.encode()).decode().split("\x00")
                except (ValueError, UnicodeDecodeError):
                    raise FhirError(400, "invalid", "bad _cursor") from None
                w.add("(p.norm_family > ? OR (p.norm_family = ? AND p.idnps > ?))", c_fam, c_fam, c_id)
            else:
                w.add("p.idnps > ?", p.cursor)
        order = "p.norm_family, p.idnps" if by_family else "p.idnps"
        rows = await self.reader.fetch(f"SELECT p.idnps, p.norm_family FROM ann_practitioner p WHERE {w.sql()} "  # noqa: S608
                                       f"ORDER BY {order} LIMIT ?", [*w.params, p.count + 1])
        keys = [r["idnps"] for r in rows]
        nxt = None
        if len(rows) > p.count:
            last = rows[p.count - 1]
            nxt = (base64.urlsafe_b64encode(f"{last['norm_family']}\x00{last['idnps']}".encode()).decode()
                   if by_family else last["idnps"])
        return keys[:p.count], nxt

    async def _search_organizations(self, p: Params) -> tuple[list[str], str | None]:
        w = Where()
        for name, mod, value in p.items:
            if name == "identifier":
                _org_identifier(w, value)
            elif name == "name":
                _string_cond(w, ["s.norm_name"], ["s.name"], mod, value)
        mw = Where()
        if p.mailbox_where(mw):
            w.add(f"s.structure_id IN (SELECT m.structure_id FROM ann_mailbox m WHERE {PUBLIC_BOX} "  # noqa: S608
                  f"AND m.type <> 'PER' AND {mw.sql()})", *mw.params)
        if p.ids:
            w.add("s.structure_id IN " + _in(len(p.ids)), *p.ids)
        if p.cursor:
            w.add("s.structure_id > ?", p.cursor)
        rows = await self.reader.fetch(f"SELECT s.structure_id FROM ann_structure s WHERE {w.sql()} "  # noqa: S608
                                       "ORDER BY s.structure_id LIMIT ?", [*w.params, p.count + 1])
        keys = [r["structure_id"] for r in rows]
        return keys[:p.count], (keys[p.count - 1] if len(keys) > p.count else None)

    async def _search_roles(self, p: Params) -> tuple[list[tuple[str, int]], str | None]:
        w = Where()
        for name, _mod, value in p.items:
            ref = value.rsplit("/", 1)[-1]
            if name == "practitioner":
                w.add("a.idnps = ?", ref)
            elif name == "organization":
                w.add("a.structure_id = ?", ref)
        mw = Where()
        if p.mailbox_where(mw):
            w.add(f"a.idnps IN (SELECT m.idnps FROM ann_mailbox m WHERE {PUBLIC_BOX} AND {mw.sql()})",  # noqa: S608
                  *mw.params)
        if p.ids:
            keys = [k for k in (fr.parse_role_id(i) for i in p.ids) if k]
            if not keys:
                return [], None
            w.add("(" + " OR ".join("(a.idnps = ? AND a.row_hash = ?)" for _ in keys) + ")",
                  *[x for k in keys for x in k])
        if p.cursor:
            c_id, _, c_h = p.cursor.partition("~")
            try:
                h = int(c_h)
            except ValueError:
                raise FhirError(400, "invalid", "bad _cursor") from None
            w.add("(a.idnps > ? OR (a.idnps = ? AND a.row_hash > ?))", c_id, c_id, h)
        rows = await self.reader.fetch(f"SELECT a.idnps, a.row_hash FROM ann_activity a WHERE {w.sql()} "  # noqa: S608
                                       "ORDER BY a.idnps, a.row_hash LIMIT ?", [*w.params, p.count + 1])
        keys = [(r["idnps"], int(r["row_hash"])) for r in rows]
        nxt = f"{keys[p.count - 1][0]}~{keys[p.count - 1][1]}" if len(keys) > p.count else None
        return keys[:p.count], nxt

    # --- rendering (batched: a few indexed queries per page) ---------------------------------
    async def _practitioners(self, ids: list[str]) -> list[dict[str, Any]]:
        if not ids:
            return []
        q = _in(len(ids))
        ps = {r.idnps: r for r in await self.reader.fetch(
            f"SELECT * FROM ann_practitioner WHERE idnps IN {q}", ids)}  # noqa: S608
        boxes: dict[str, list[Any]] = defaultdict(list)
        for m in await self.reader.fetch(f"SELECT * FROM ann_mailbox m WHERE m.idnps IN {q} AND {PUBLIC_BOX} "  # noqa: S608
                                         "ORDER BY CASE WHEN m.type = 'PER' THEN 0 ELSE 1 END, m.address", ids):
            boxes[m.idnps].append(m)
        sfs: dict[str, list[Any]] = defaultdict(list)
        for sf in await self.reader.fetch(f"SELECT * FROM ann_savoir_faire WHERE idnps IN {q}", ids):  # noqa: S608
            sfs[sf.idnps].append(sf)
        return [fr.practitioner(i, ps.get(i), boxes.get(i, []), sfs.get(i, []))
                for i in ids if i in ps or i in boxes]

    async def _organizations(self, ids: list[str]) -> list[dict[str, Any]]:
        if not ids:
            return []
        q = _in(len(ids))
        ss = {r.structure_id: r for r in await self.reader.fetch(
            f"SELECT * FROM ann_structure WHERE structure_id IN {q}", ids)}  # noqa: S608
        boxes: dict[str, list[Any]] = defaultdict(list)
        for m in await self.reader.fetch(f"SELECT * FROM ann_mailbox m WHERE m.structure_id IN {q} "  # noqa: S608
                                         f"AND m.type <> 'PER' AND {PUBLIC_BOX} ORDER BY m.address", ids):
            boxes[m.structure_id].append(m)
        return [fr.organization(i, ss.get(i), boxes.get(i, [])) for i in ids if i in ss or i in boxes]

    async def _roles(self, keys: list[tuple[str, int]]) -> list[dict[str, Any]]:
        if not keys:
            return []
        idnps = sorted({k[0] for k in keys})
        q = _in(len(idnps))
        acts = {(a.idnps, int(a.row_hash)): a for a in await self.reader.fetch(
            f"SELECT * FROM ann_activity WHERE idnps IN {q}", idnps)}  # noqa: S608
        ps = {r.idnps: r for r in await self.reader.fetch(
            f"SELECT * FROM ann_practitioner WHERE idnps IN {q}", idnps)}  # noqa: S608
        boxes: dict[tuple[str, str], list[Any]] = defaultdict(list)
        for m in await self.reader.fetch(f"SELECT * FROM ann_mailbox m WHERE m.idnps IN {q} AND {PUBLIC_BOX} "  # noqa: S608
                                         "ORDER BY m.address", idnps):
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


def _system_value(value: str) -> tuple[str, str]:
    system, sep, val = value.partition("|")
    if not sep:
        system, val = "", value
    if not val:
        raise FhirError(400, "invalid", "identifier needs a value (system|value)")
    return system, val


def _pp_identifier(w: Where, value: str) -> None:
    system, val = _system_value(value)
    if system == fr.SYS_IDNPS:
        w.add("p.idnps = ?", val)
    elif system == fr.SYS_RPPS:
        w.add("p.idnps = ?", "8" + val)
    elif system == fr.SYS_ADELI:
        w.add("p.idnps = ?", "0" + val)
    elif system == "":
        w.add("p.idnps IN (?, ?, ?)", val, "8" + val, "0" + val)
    else:
        w.add("1 = 0")  # an identifier system we do not hold matches nothing


def _org_identifier(w: Where, value: str) -> None:
    system, val = _system_value(value)
    if system == fr.SYS_STRUCTURE:
        w.add("s.structure_id = ?", val)
    elif system == fr.SYS_FINESS:
        w.add("s.finess = ?", val)
    elif system == fr.SYS_SIRET:
        w.add("s.siret = ?", val)
    elif system == "":
        w.add("(s.structure_id = ? OR s.finess = ? OR s.siret = ?)", val, val, val)
    else:
        w.add("1 = 0")


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
