"""Directory queries used by the gateway (routing) and by the FHIR API (publishing).

Routing (``by_address``, ``mailboxes_for``) sees every mailbox, liste rouge included.
Publishing (``search`` and everything in annuaire/fhir.py) never returns a liste-rouge mailbox
(SPECS.md §5, ``listeRouge`` in as-ext-mailbox-mss-metadata; docs/annuaire.md).

Lookups go through a small in-process LRU cache with a short TTL (default 10 s): the SMTP
path asks the same few addresses over and over. Negative answers are cached too. The TTL bounds
staleness after an import done by another process; ``invalidate()`` clears it at once.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, and_, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from annuaire.formats import canonical_address, idnps_of, norm, row_hash, valid_address
from annuaire.models import Activity, Mailbox, Practitioner, SavoirFaire, Structure
from annuaire.reads import Reader, reader_for

K = TypeVar("K")
V = TypeVar("V")

PUBLIC_MAILBOX_TYPES = ("PER", "ORG", "APP", "CAB")


class TTLCache(Generic[K, V]):
    """Bounded LRU with a per-entry deadline; ``clock`` is injectable (monotonic seconds)."""

    def __init__(self, size: int, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.size, self.ttl, self.clock = size, ttl, clock
        self._d: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self.hits = self.misses = 0

    def get(self, key: K) -> tuple[bool, V | None]:
        item = self._d.get(key)
        if item is not None and item[0] > self.clock():
            self._d.move_to_end(key)
            self.hits += 1
            return True, item[1]
        self.misses += 1
        return False, None

    def put(self, key: K, value: V) -> None:
        self._d[key] = (self.clock() + self.ttl, value)
        self._d.move_to_end(key)
        if len(self._d) > self.size:
            self._d.popitem(last=False)

    def discard(self, key: K) -> None:
        self._d.pop(key, None)

    def clear(self) -> None:
        self._d.clear()


@dataclass(frozen=True, slots=True)
class MailboxInfo:
    """What routing needs to know about one address."""

    address: str
    type: str                  # PER | ORG | APP | CAB
    open: bool
    closed_at: datetime | None
    idnps: str                 # owner professional ('' for ORG/APP)
    structure_id: str          # owner structure
    display_name: str
    service: str
    liste_rouge: bool
    own: bool                  # one of this operator's mailboxes
    published: bool            # present in the last public extraction


@dataclass(frozen=True, slots=True)
class SearchHit:
    address: str
    type: str
    display_name: str
    profession: str
    city: str
    department: str
    idnps: str
    structure_id: str
    service: str


@dataclass(frozen=True, slots=True)
class SearchPage:
    hits: list[SearchHit]
    next_cursor: str | None


_INFO_SQL = ("SELECT address, type, closed_at, idnps, structure_id, civility, given, family, org_name, "
             "service, liste_rouge, own, published FROM ann_mailbox WHERE ")
SQL_BY_ADDRESS = _INFO_SQL + "address = ?"
SQL_BY_IDNPS = _INFO_SQL + "idnps = ?"


def _aware(ts: datetime | str | None) -> datetime | None:
    if isinstance(ts, str):  # raw sqlite3 returns the stored text
        ts = datetime.fromisoformat(ts)
    if ts is not None and ts.tzinfo is None:
        return ts.replace(tzinfo=UTC)  # SQLite keeps naive UTC
    return ts


def _info(r: Any) -> MailboxInfo:
    name = " ".join(x for x in (r.given, r.family) if x) or r.org_name
    return MailboxInfo(address=r.address, type=r.type, open=r.closed_at is None, closed_at=_aware(r.closed_at),
                       idnps=r.idnps, structure_id=r.structure_id, display_name=name, service=r.service,
                       liste_rouge=bool(r.liste_rouge), own=bool(r.own), published=bool(r.published))


def like_prefix(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


class Directory:
    def __init__(self, engine: AsyncEngine, *, cache_ttl: float = 10.0, cache_size: int = 200_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.engine = engine
        self.reader: Reader = reader_for(engine)
        self._addr: TTLCache[str, MailboxInfo | None] = TTLCache(cache_size, cache_ttl, clock)
        self._owner: TTLCache[str, tuple[MailboxInfo, ...]] = TTLCache(cache_size, cache_ttl, clock)

    async def close(self) -> None:
        """Release the read connections (the engine stays the caller's)."""
        await self.reader.close()

    def invalidate(self) -> None:
        self._addr.clear()
        self._owner.clear()

    async def by_address(self, addr: str) -> MailboxInfo | None:
        """None = unknown to the directory. Liste-rouge mailboxes are known (routing needs them)."""
        key = canonical_address(addr)
        hit, value = self._addr.get(key)
        if hit:
            return value
        rows = await self.reader.fetch(SQL_BY_ADDRESS, (key,))
        info = _info(rows[0]) if rows else None
        self._addr.put(key, info)
        return info

    async def mailboxes_for(self, ident: str, *, include_closed: bool = False) -> list[MailboxInfo]:
        """Mailboxes of a professional by IDNPS, RPPS or ADELI; PER first, then by address."""
        idnps = idnps_of(ident)
        if idnps is None:
            return []
        hit, value = self._owner.get(idnps)
        if not hit:
            rows = await self.reader.fetch(SQL_BY_IDNPS, (idnps,))
            value = tuple(sorted((_info(r) for r in rows), key=lambda m: (m.type != "PER", m.address)))
            self._owner.put(idnps, value)
        assert value is not None
        return [m for m in value if include_closed or m.open]

    async def search(self, text: str = "", *, name: str = "", profession: str = "", city: str = "",
                     department: str = "", type: str = "", limit: int = 20,  # noqa: A002
                     cursor: str | None = None) -> SearchPage:
        """Public search over open, non-liste-rouge mailboxes; every criterion is an
        accent- and case-insensitive prefix; results ordered by address, keyset-paged."""
        limit = max(1, min(limit, 200))
        conds: list[ColumnElement[bool]] = [Mailbox.closed_at.is_(None), Mailbox.liste_rouge.is_(False)]
        if text:
            t = like_prefix(norm(text))
            conds.append(or_(Mailbox.norm_family.like(t, escape="\\"), Mailbox.norm_given.like(t, escape="\\"),
                             Mailbox.norm_org.like(t, escape="\\"),
                             Mailbox.address.like(like_prefix(text.strip().lower()), escape="\\")))
        if name:
            n = like_prefix(norm(name))
            conds.append(or_(Mailbox.norm_family.like(n, escape="\\"), Mailbox.norm_given.like(n, escape="\\"),
                             Mailbox.norm_org.like(n, escape="\\")))
        if profession:
            conds.append(Mailbox.norm_profession.like(like_prefix(norm(profession)), escape="\\"))
        if city:
            conds.append(Mailbox.norm_city.like(like_prefix(norm(city)), escape="\\"))
        if department:
            conds.append(Mailbox.department == department.strip().upper())
        if type:
            conds.append(Mailbox.type == type.strip().upper())
        if cursor:
            conds.append(Mailbox.address > cursor)
        stmt = (select(Mailbox.address, Mailbox.type, Mailbox.given, Mailbox.family, Mailbox.org_name,
                       Mailbox.profession_label, Mailbox.l6, Mailbox.postal_code, Mailbox.department,
                       Mailbox.idnps, Mailbox.structure_id, Mailbox.service)
                .where(and_(*conds)).order_by(Mailbox.address).limit(limit + 1))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        hits = [SearchHit(r.address, r.type, " ".join(x for x in (r.given, r.family) if x) or r.org_name,
                          r.profession_label, r.l6, r.department, r.idnps, r.structure_id, r.service)
                for r in rows[:limit]]
        return SearchPage(hits, hits[-1].address if len(rows) > limit else None)

    # --- records for publishing and the CLI ----------------------------------------------------

    async def practitioner(self, idnps: str) -> dict[str, Any] | None:
        ident = idnps_of(idnps)
        if ident is None:
            return None
        async with self.engine.connect() as conn:
            p = (await conn.execute(select(Practitioner.__table__).where(Practitioner.idnps == ident))).first()
            boxes = (await conn.execute(select(Mailbox.__table__).where(Mailbox.idnps == ident)
                                        .order_by(Mailbox.type != "PER", Mailbox.address))).all()
            acts = (await conn.execute(select(Activity.__table__).where(Activity.idnps == ident))).all()
            sfs = (await conn.execute(select(SavoirFaire.__table__).where(SavoirFaire.idnps == ident))).all()
        if p is None and not boxes:
            return None
        return {"practitioner": p, "mailboxes": list(boxes), "activities": list(acts), "savoir_faire": list(sfs)}

    async def stats(self) -> dict[str, int]:
        out: dict[str, int] = {}
        async with self.engine.connect() as conn:
            for label, stmt in (
                    ("practitioners", select(func.count()).select_from(Practitioner)),
                    ("practitioners_active", select(func.count()).where(Practitioner.active.is_(True))),
                    ("structures", select(func.count()).select_from(Structure)),
                    ("activities", select(func.count()).select_from(Activity)),
                    ("mailboxes", select(func.count()).select_from(Mailbox)),
                    ("mailboxes_open", select(func.count()).where(Mailbox.closed_at.is_(None))),
                    ("mailboxes_closed", select(func.count()).where(Mailbox.closed_at.is_not(None))),
                    ("mailboxes_liste_rouge", select(func.count()).where(Mailbox.liste_rouge.is_(True))),
                    ("mailboxes_own", select(func.count()).where(Mailbox.own.is_(True)))):
                out[label] = int((await conn.execute(stmt)).scalar_one())
            for typ, n in (await conn.execute(select(Mailbox.type, func.count()).where(
                    Mailbox.closed_at.is_(None)).group_by(Mailbox.type))).all():
                out[f"open_{typ}"] = int(n)
        return out

    # --- this operator's own mailboxes (the gateway calls these when it creates/closes one) ---------

    async def register_own(self, address: str, type: str, *, now: datetime,  # noqa: A002
                           idnps: str = "", family: str = "", given: str = "", service: str = "",
                           structure_id: str = "", org_name: str = "", profession_label: str = "",
                           liste_rouge: bool = False) -> None:
        """Declare (or update) one of this operator's mailboxes; liste rouge is an operator-side
        flag (docs/annuaire.md): routable, exported to the national directory with listeRouge=true,
        never returned by public search."""
        addr = canonical_address(address)
        if not valid_address(addr) or type not in PUBLIC_MAILBOX_TYPES:
            raise ValueError(f"bad mailbox {address!r} / type {type!r}")
        if idnps and idnps_of(idnps) != idnps:
            raise ValueError(f"bad IDNPS {idnps!r}")
        fields = [type, addr, idnps[:1], idnps[1:], idnps, "", structure_id, service, "", family, given]
        values = {"type": type, "idnps": idnps, "id_type": idnps[:1], "id_pp": idnps[1:],
                  "structure_id": structure_id, "service": service, "family": family, "given": given,
                  "org_name": org_name, "profession_label": profession_label, "norm_family": norm(family),
                  "norm_given": norm(given), "norm_org": norm(org_name), "norm_profession": norm(profession_label),
                  "row_hash": row_hash(fields), "own": True, "liste_rouge": liste_rouge, "closed_at": None,
                  "updated_at": now}
        async with self.engine.begin() as conn:
            res = await conn.execute(update(Mailbox).where(Mailbox.address == addr).values(**values))
            if not res.rowcount:
                await conn.execute(insert(Mailbox).values(address=addr, published=False, first_seen=now, **values))
        self._forget(addr)

    async def unregister_own(self, address: str, *, now: datetime) -> None:
        """The operator closed this mailbox: closed with a date unless the public extraction still lists it."""
        addr = canonical_address(address)
        async with self.engine.begin() as conn:
            await conn.execute(update(Mailbox).where(Mailbox.address == addr, Mailbox.published.is_(False))
                               .values(own=False, closed_at=now, updated_at=now))
            await conn.execute(update(Mailbox).where(Mailbox.address == addr, Mailbox.published.is_(True))
                               .values(own=False, liste_rouge=False, updated_at=now))
        self._forget(addr)

    def _forget(self, addr: str) -> None:
        self._addr.discard(addr)
        self._owner.clear()  # the owner's list changed; cheap to rebuild

    async def own_mailboxes(self, domains: Sequence[str] = ()) -> list[Any]:
        """This operator's mailboxes (own flag), optionally restricted to some domains; open only."""
        conds: list[ColumnElement[bool]] = [Mailbox.own.is_(True), Mailbox.closed_at.is_(None)]
        if domains:
            conds.append(or_(*[Mailbox.address.like("%@" + d.lower()) for d in domains]))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(Mailbox.__table__).where(and_(*conds))
                                       .order_by(Mailbox.address))).all()
        return list(rows)
