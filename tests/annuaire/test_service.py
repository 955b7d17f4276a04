"""Directory queries: routing lookups (liste rouge included), public search (liste rouge never), cache."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from annuaire.importer import Importer
from annuaire.service import Directory, TTLCache
from tests.annuaire.conftest import DAY0, DAY1


async def _load(engine: AsyncEngine, files: dict[str, Path]) -> None:
    imp = Importer(engine)
    for key in ("mssante", "activite", "own"):
        [rep] = await imp.import_path(files[key], now=DAY0)
        assert rep.ok


async def test_by_address_and_mailboxes_for(engine: AsyncEngine, files: dict[str, Path]) -> None:
    await _load(engine, files)
    async with engine.connect() as conn:
        idnps = (await conn.execute(text(
            "SELECT idnps FROM ann_mailbox WHERE type = 'PER' AND idnps LIKE '8%' GROUP BY idnps "
            "HAVING COUNT(*) > 1 ORDER BY idnps LIMIT 1"))).scalar_one()
        org = (await conn.execute(text("SELECT address FROM ann_mailbox WHERE type = 'ORG' LIMIT 1"))).scalar_one()
    d = Directory(engine)
    boxes = await d.mailboxes_for(idnps)
    assert len(boxes) >= 2 and boxes[0].type == "PER"
    assert [b.address for b in await d.mailboxes_for(idnps[1:])] == [b.address for b in boxes]  # by RPPS
    info = await d.by_address(boxes[0].address.upper())  # case-insensitive
    assert info is not None and info.open and info.idnps == idnps and info.type == "PER" and info.published
    o = await d.by_address(org)
    assert o is not None and o.type == "ORG" and o.structure_id and o.display_name
    assert await d.by_address("nobody@nowhere.mssante.fr") is None
    assert await d.mailboxes_for("not-an-id") == []


async def test_closed_mailbox_known_but_not_open(engine: AsyncEngine, files: dict[str, Path]) -> None:
    await _load(engine, files)
    await Importer(engine).import_path(files["mssante_d1"], now=DAY1)
    async with engine.connect() as conn:
        closed = (await conn.execute(text(
            "SELECT address FROM ann_mailbox WHERE closed_at IS NOT NULL LIMIT 1"))).scalar_one()
    info = await Directory(engine).by_address(closed)
    assert info is not None and not info.open and info.closed_at is not None
    assert info.closed_at.year == DAY1.year and info.closed_at.day == DAY1.day


async def test_liste_rouge_routable_but_never_searchable(engine: AsyncEngine, files: dict[str, Path]) -> None:
    await _load(engine, files)
    async with engine.connect() as conn:
        lr = (await conn.execute(text(
            "SELECT address, family, idnps FROM ann_mailbox WHERE liste_rouge = TRUE LIMIT 1"))).one()
    d = Directory(engine)
    info = await d.by_address(lr.address)
    assert info is not None and info.liste_rouge and info.own and info.open
    assert lr.address in [m.address for m in await d.mailboxes_for(lr.idnps)]
    page = await d.search(lr.address)
    assert lr.address not in [h.address for h in page.hits]
    page = await d.search(name=lr.family, limit=200)
    assert lr.address not in [h.address for h in page.hits]


async def test_search_accents_case_prefix_and_paging(engine: AsyncEngine, files: dict[str, Path]) -> None:
    await _load(engine, files)
    d = Directory(engine)
    a = await d.search(name="lefevre", limit=200)
    b = await d.search(name="LEFÈVRE", limit=200)
    c = await d.search(name="Lefè", limit=200)
    assert a.hits and [h.address for h in a.hits] == [h.address for h in b.hits] == [h.address for h in c.hits]
    assert all("LEF" in h.display_name.upper() for h in a.hits)
    e = await d.search(city="saint-etienne")
    assert e.hits and all("ÉTIENNE" in h.city for h in e.hits)
    p = await d.search(profession="medecin", department="75")
    assert p.hits and all(h.profession == "Médecin" and h.department == "75" for h in p.hits)
    # keyset paging walks every hit exactly once
    seen: list[str] = []
    cursor = None
    while True:
        page = await d.search(type="ORG", limit=7, cursor=cursor)
        seen += [h.address for h in page.hits]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    full = await d.search(type="ORG", limit=200)
    assert seen == [h.address for h in full.hits] and len(seen) > 7
    assert len(set(seen)) == len(seen)


def test_ttl_cache_expires_and_bounds() -> None:
    now = [0.0]
    cache: TTLCache[str, int] = TTLCache(size=2, ttl=10.0, clock=lambda: now[0])
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == (True, 1)
    cache.put("c", 3)  # evicts the least recently used: b
    assert cache.get("b") == (False, None)
    now[0] = 11.0
    assert cache.get("a") == (False, None)


async def test_cache_serves_until_invalidated(engine: AsyncEngine, files: dict[str, Path]) -> None:
    await _load(engine, files)
    async with engine.connect() as conn:
        addr = (await conn.execute(text("SELECT address FROM ann_mailbox WHERE type='PER' LIMIT 1"))).scalar_one()
    d = Directory(engine, cache_ttl=3600)
    assert (await d.by_address(addr)) is not None
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE ann_mailbox SET type = 'CAB' WHERE address = :a"), {"a": addr})
    cached = await d.by_address(addr)
    assert cached is not None and cached.type == "PER"  # stale within the TTL, by design
    d.invalidate()
    fresh = await d.by_address(addr)
    assert fresh is not None and fresh.type == "CAB"


async def test_register_own_liste_rouge_and_unregister(engine: AsyncEngine) -> None:
    d = Directory(engine)
    await d.register_own("Dr.Secret@Operateur.mssante.fr", "PER", now=DAY0, idnps="810003456789",
                         family="LEFÈVRE", given="Zoé", liste_rouge=True)
    info = await d.by_address("dr.secret@operateur.mssante.fr")
    assert info is not None and info.own and info.liste_rouge and info.open and not info.published
    assert [m.address for m in await d.mailboxes_for("10003456789")] == ["dr.secret@operateur.mssante.fr"]
    assert (await d.search(name="lefevre")).hits == []  # liste rouge: never public
    await d.register_own("dr.secret@operateur.mssante.fr", "PER", now=DAY0, idnps="810003456789",
                         family="LEFÈVRE", given="Zoé", liste_rouge=False)
    assert [h.address for h in (await d.search(name="lefèvre")).hits] == ["dr.secret@operateur.mssante.fr"]
    await d.unregister_own("dr.secret@operateur.mssante.fr", now=DAY1)
    info = await d.by_address("dr.secret@operateur.mssante.fr")
    assert info is not None and not info.open and not info.own
    for bad in (("not an address", "PER", ""), ("a@b.mssante.fr", "XYZ", ""), ("a@b.mssante.fr", "PER", "123")):
        try:
            await d.register_own(bad[0], bad[1], now=DAY0, idnps=bad[2])
        except ValueError:
            pass
        else:
            raise AssertionError(f"accepted {bad}")
    await d.close()
