"""Import of the real formats, incremental semantics, bad rows and bad files, on both backends."""

from __future__ import annotations

import zipfile
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from annuaire.importer import Importer
from annuaire.reader import Limits
from tests.annuaire.conftest import DAY0, DAY1
from tests.annuaire.helpers import counts, snapshot


def _mss_content(path: Path) -> dict[str, str]:
    """Independent reading of an MSSanté extraction: address -> first row text (duplicates merged)."""
    out: dict[str, str] = {}
    with open(path, encoding="utf-8") as fh:
        next(fh)
        for line in fh:
            f = line.rstrip("\n").split("|")
            out.setdefault(f[1].lower(), "|".join(f))
    return out


async def test_initial_import_counts_and_duplicates(engine: AsyncEngine, files: dict[str, Path]) -> None:
    imp = Importer(engine)
    expected = _mss_content(files["mssante"])
    with open(files["mssante"], encoding="utf-8") as fh:
        total_rows = sum(1 for _ in fh) - 1
    [rep] = await imp.import_path(files["mssante"], now=DAY0)
    assert rep.ok and rep.kind == "mssante"
    assert rep.rows == total_rows and rep.bad_count == 0
    assert rep.duplicates == total_rows - len(expected) > 0  # the generator writes some duplicates
    assert rep.inserted == len(expected)
    [rep] = await imp.import_path(files["activite"], now=DAY0)
    assert rep.ok and rep.kind == "activite" and rep.bad_count == 0
    c = await counts(engine)
    assert c["ann_mailbox"] == len(expected)
    assert c["ann_practitioner"] > 0 and c["ann_structure"] > 0 and c["ann_activity"] > c["ann_practitioner"] / 2
    async with engine.connect() as conn:
        multi = (await conn.execute(text(
            "SELECT COUNT(*) FROM (SELECT idnps FROM ann_activity GROUP BY idnps HAVING COUNT(*) > 1) x"))).scalar()
        several = (await conn.execute(text(
            "SELECT COUNT(*) FROM (SELECT idnps FROM ann_mailbox WHERE idnps <> '' GROUP BY idnps "
            "HAVING COUNT(*) > 1) x"))).scalar()
    assert multi and several  # several activities and several mailboxes per professional


async def test_zip_and_txt_give_the_same_result_and_reimport_changes_nothing(
        engine: AsyncEngine, files: dict[str, Path]) -> None:
    imp = Importer(engine)
    [r1] = await imp.import_path(files["mssante_zip"], now=DAY0)
    [r2] = await imp.import_path(files["activite_zip"], now=DAY0)
    assert r1.ok and r2.ok and r1.inserted > 0
    before, before_counts = await snapshot(engine), await counts(engine)
    for key in ("mssante", "activite"):
        [again] = await imp.import_path(files[key], now=DAY1)
        assert again.ok
        assert (again.inserted, again.updated, again.closed) == (0, 0, 0)
    assert await snapshot(engine) == before  # not even updated_at moved
    assert await counts(engine) == before_counts


async def test_next_day_incremental(engine: AsyncEngine, files: dict[str, Path]) -> None:
    imp = Importer(engine)
    await imp.import_path(files["mssante"], now=DAY0)
    await imp.import_path(files["activite"], now=DAY0)
    d0, d1 = _mss_content(files["mssante"]), _mss_content(files["mssante_d1"])
    gone = set(d0) - set(d1)
    new = set(d1) - set(d0)
    changed = {a for a in set(d0) & set(d1) if d0[a] != d1[a]}
    assert gone and new and changed
    [rep] = await imp.import_path(files["mssante_d1"], now=DAY1)
    assert (rep.inserted, rep.updated, rep.closed) == (len(new), len(changed), len(gone))
    async with engine.connect() as conn:
        rows = {r.address: r for r in (await conn.execute(text(
            "SELECT address, closed_at, published, service FROM ann_mailbox"))).all()}
    assert len(rows) == len(set(d0) | set(d1))  # never deleted
    for a in gone:
        assert rows[a].closed_at is not None and not rows[a].published
    for a in new | changed:
        assert rows[a].closed_at is None
    # a vanished mailbox that comes back is reopened
    [back] = await imp.import_path(files["mssante"], now=DAY1)
    assert back.updated >= len(gone)
    async with engine.connect() as conn:
        still_closed = (await conn.execute(text(
            "SELECT COUNT(*) FROM ann_mailbox WHERE closed_at IS NOT NULL"))).scalar()
    assert still_closed == len(new)
    # Personne_activite next day: changed names updated, vanished activities removed, nothing else
    [pa] = await imp.import_path(files["activite_d1"], now=DAY1)
    assert pa.ok and pa.updated > 0 and pa.inserted > 0
    [pa2] = await imp.import_path(files["activite_d1"], now=DAY1)
    assert (pa2.inserted, pa2.updated, pa2.closed) == (0, 0, 0)




def _write(path: Path, header: str, rows: list[str], encoding: str = "utf-8") -> Path:
    path.write_bytes((header + "\n" + "".join(r + "\n" for r in rows)).encode(encoding))
    return path


def _mss_header() -> str:
    from annuaire.formats import MSS_COLUMNS
    return "|".join(MSS_COLUMNS) + "|"


GOOD = ("PER|jean.dupont@medecin.mssante.fr|8|10003456789|810003456789|1|R1000000001||DR|DUPONT|Jean|C|Civil|"
        "10|Médecin|SM54|Médecine Générale|O|CABINET DU PARC||||12||RUE|de l'Église||75013 PARIS|75013||FRANCE|")


async def test_bad_rows_are_reported_and_skipped(engine: AsyncEngine, tmp_path: Path) -> None:
    rows = [
        GOOD,
        GOOD.replace("jean.dupont@", "a@").rsplit("|", 3)[0] + "|",                     # 3: too few columns
        GOOD.replace("jean.dupont@", "b@").replace("|810003456789|", "|81000345678X|"),  # 4: bad IDNPS
        GOOD.replace("jean.dupont@medecin.mssante.fr", "not an address"),               # 5: bad address
        GOOD.replace("PER|jean.dupont@", "XYZ|c@"),                                     # 6: bad type
        GOOD.replace("jean.dupont@", "d@").replace("|8|10003456789|", "|8|1000345678|"),  # 7: bad RPPS
        GOOD.replace("jean.dupont@", "e@").replace("|O|CABINET", "|Z|CABINET"),          # 8: bad O/N
        GOOD.replace("jean.dupont@", "f@").replace("|810003456789|", "|810003456780|"),  # 9: IDNPS != type+id
    ]
    path = _write(tmp_path / "Extraction_Correspondance_MSSante_202611230300.txt", _mss_header(), rows)
    [rep] = await Importer(engine).import_path(path, now=DAY0)
    assert rep.ok and rep.rows == 8 and rep.inserted == 1
    got = {e.line: e.reason for e in rep.bad}
    assert sorted(got) == [3, 4, 5, 6, 7, 8, 9]
    assert "expected 31 columns, found 29" in got[3]
    assert "IDNPS" in got[4] or "identifier" in got[4]
    assert "bad mailbox address" in got[5]
    assert "bad mailbox type" in got[6]
    assert "bad RPPS" in got[7]
    assert "Dématérialisation" in got[8]
    assert "type+identifier" in got[9]


async def _good_state(engine: AsyncEngine, files: dict[str, Path]) -> tuple[object, object]:
    imp = Importer(engine)
    await imp.import_path(files["mssante"], now=DAY0)
    await imp.import_path(files["activite"], now=DAY0)
    return await snapshot(engine), await counts(engine)


async def test_wrong_header_aborts_and_keeps_data(engine: AsyncEngine, files: dict[str, Path],
                                                  tmp_path: Path) -> None:
    before = await _good_state(engine, files)
    bad = tmp_path / "Extraction_Correspondance_MSSante_x.txt"
    bad.write_text(_mss_header().replace("Adresse BAL", "Adresse") + "\n" + GOOD + "\n", encoding="utf-8")
    [rep] = await Importer(engine).import_path(bad, now=DAY1)
    assert not rep.ok and "unrecognised header" in (rep.error or "")
    assert (await snapshot(engine), await counts(engine)) == before


async def test_bad_encoding_midway_rolls_back(engine: AsyncEngine, files: dict[str, Path], tmp_path: Path) -> None:
    before = await _good_state(engine, files)
    # the next-day file, re-encoded in Latin-1 after its first 200 lines: rows were staged, then refused
    lines = files["mssante_d1"].read_text(encoding="utf-8").splitlines(keepends=True)
    data = "".join(lines[:200]).encode() + "".join(lines[200:]).encode("latin-1", errors="replace")
    bad = tmp_path / "Extraction_Correspondance_MSSante_latin1.txt"
    bad.write_bytes(data)
    [rep] = await Importer(engine, batch=50).import_path(bad, now=DAY1)
    assert not rep.ok and "not UTF-8" in (rep.error or "")
    assert (await snapshot(engine), await counts(engine)) == before


async def test_truncated_zip_refused(engine: AsyncEngine, files: dict[str, Path], tmp_path: Path) -> None:
    before = await _good_state(engine, files)
    data = files["activite_zip"].read_bytes()
    for cut in (len(data) // 2, len(data) - 30):
        bad = tmp_path / f"PS_LibreAcces_Personne_activite_{cut}.zip"
        bad.write_bytes(data[:cut])
        reps = await Importer(engine).import_path(bad, now=DAY1)
        assert len(reps) == 1 and not reps[0].ok
        assert "truncated" in (reps[0].error or "") or "damaged" in (reps[0].error or "")
    # a zip whose member data is corrupted (CRC mismatch): detected while streaming
    raw = bytearray(data)
    raw[len(raw) // 2] ^= 0xFF
    bad = tmp_path / "PS_LibreAcces_Personne_activite_crc.zip"
    bad.write_bytes(bytes(raw))
    [rep] = await Importer(engine).import_path(bad, now=DAY1)
    assert not rep.ok
    assert (await snapshot(engine), await counts(engine)) == before


async def test_zip_bomb_refused_before_inflating(engine: AsyncEngine, files: dict[str, Path],
                                                 tmp_path: Path) -> None:
    before = await _good_state(engine, files)
    bomb = tmp_path / "Extraction_Correspondance_MSSante_bomb.zip"
    line = (GOOD + "\n").encode()
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        with zf.open("Extraction_Correspondance_MSSante_bomb.txt", "w") as member:
            member.write((_mss_header() + "\n").encode())
            for _ in range(20):
                member.write(line * 10_000)  # ~30 MB of one repeated row: ratio far above 200:1
    assert bomb.stat().st_size < 1_000_000
    [rep] = await Importer(engine).import_path(bomb, now=DAY1)
    assert not rep.ok and "zip bomb" in (rep.error or "")
    # a bomb that lies about its size is caught while streaming (checked per chunk)
    [rep] = await Importer(engine, limits=Limits(max_ratio=100_000, max_bytes=2_000_000)).import_path(
        bomb, now=DAY1)
    assert not rep.ok and "zip bomb" in (rep.error or "")
    assert (await snapshot(engine), await counts(engine)) == before


async def test_operator_file_liste_rouge_and_ownership(engine: AsyncEngine, files: dict[str, Path]) -> None:
    imp = Importer(engine)
    await imp.import_path(files["mssante"], now=DAY0)
    [rep] = await imp.import_path(files["own"], now=DAY0)
    assert rep.ok and rep.kind == "own" and rep.inserted == 20
    async with engine.connect() as conn:
        lr = (await conn.execute(text(
            "SELECT COUNT(*) FROM ann_mailbox WHERE liste_rouge = TRUE AND own = TRUE"))).scalar()
        assert lr == 2
    # the next public extraction does not list the operator's mailboxes: they stay open
    await imp.import_path(files["mssante_d1"], now=DAY1)
    async with engine.connect() as conn:
        own_closed = (await conn.execute(text(
            "SELECT COUNT(*) FROM ann_mailbox WHERE own = TRUE AND closed_at IS NOT NULL"))).scalar()
    assert own_closed == 0
    [again] = await imp.import_path(files["own"], now=DAY1)
    assert (again.inserted, again.updated, again.closed) == (0, 0, 0)


async def test_truncated_snapshot_cannot_close_the_directory(engine: AsyncEngine, files: dict[str, Path],
                                                            tmp_path: Path) -> None:
    before = await _good_state(engine, files)
    lines = files["mssante"].read_text(encoding="utf-8").splitlines(keepends=True)
    short = tmp_path / "Extraction_Correspondance_MSSante_short.txt"
    short.write_text("".join(lines[:11]), encoding="utf-8")  # header + 10 rows: a cut-off download
    [rep] = await Importer(engine).import_path(short, now=DAY1)
    assert not rep.ok and "would close" in (rep.error or "")
    assert (await snapshot(engine), await counts(engine)) == before
    [rep] = await Importer(engine, max_vanished=1.0).import_path(short, now=DAY1)
    assert rep.ok and rep.closed > 300  # explicitly allowed: closed with a date, still not deleted
    assert (await counts(engine))["ann_mailbox"] == before[1]["ann_mailbox"]  # type: ignore[index]
