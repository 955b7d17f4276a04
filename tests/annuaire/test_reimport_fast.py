"""The fast paths give exactly the result of staging every row and diffing in SQL: same tables, same
timestamps, same report, on both backends. Fast paths: a re-import skips unchanged rows before staging
(annuaire/snapshot.py); a first load on SQLite inserts straight into the empty live tables.

The day-2 files are edited by hand to hit the corners: duplicates split between an unchanged line
and a changed one in either order, a case-changed address, blank-padded fields, a bad row, vanished
and reappearing rows, a deactivated professional coming back, a structure listed twice differently.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from annuaire.formats import MSS_COLUMNS, PA_COLUMNS
from annuaire.importer import FileReport, Importer
from annuaire.models import AnnuaireBase
from tests.annuaire.conftest import DAY0, DAY1
from tests.annuaire.helpers import TABLES

DAY2 = DAY1 + timedelta(days=1)
KEYS = {"ann_mailbox": "address", "ann_practitioner": "idnps", "ann_structure": "structure_id",
        "ann_activity": "idnps, row_hash", "ann_savoir_faire": "idnps, row_hash"}


async def _dump(engine: AsyncEngine) -> dict[str, list[tuple[object, ...]]]:
    async with engine.connect() as conn:
        return {t: [tuple(r) for r in (await conn.execute(text(f"SELECT * FROM {t} ORDER BY {KEYS[t]}"))).all()]  # noqa: S608
                for t in TABLES}


async def _reset(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(AnnuaireBase.metadata.drop_all)
        await conn.run_sync(AnnuaireBase.metadata.create_all)


def _lines(path: Path) -> tuple[str, list[list[str]]]:
    header, *rows = path.read_text(encoding="utf-8").splitlines()
    return header, [r.split("|") for r in rows]


def _write(path: Path, header: str, rows: list[list[str]]) -> Path:
    path.write_text(header + "\n" + "".join("|".join(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _edited_mss(src: Path, out: Path) -> Path:
    header, rows = _lines(src)
    col = {c: i for i, c in enumerate(MSS_COLUMNS)}
    seen: set[str] = set()
    uniq = []
    for r in rows:  # distinct addresses, so each edit below is about one mailbox
        if r[1].lower() not in seen:
            seen.add(r[1].lower())
            uniq.append(r)
    a, b, c, d, e, f = uniq[:6]
    rest = uniq[6:]
    a2 = list(a)
    a2[col["Service de rattachement"]] = "Autre service"
    b2 = list(b)
    b2[col["Service de rattachement"]] = "Service modifié"
    c2 = list(c)
    c2[1] = c[1].upper()                            # same mailbox, address written in capitals
    d2 = [f" {v} " if v and i not in (1,) else v for i, v in enumerate(d)]  # blank-padded, same content
    bad = list(f)
    bad[4] = "8X" + bad[4][2:]                       # bad IDNPS: reported with its line
    # a: unchanged first, changed later (first wins: nothing); b: changed first, unchanged later (update)
    # e: vanished (closed); the duplicate pairs and the padded row must not close anything
    return _write(out, header, [a, b2, c2, d2, *rest[: len(rest) // 2], bad, a2, b, *rest[len(rest) // 2:]])


def _edited_pa(src: Path, out: Path) -> Path:
    header, rows = _lines(src)
    col = {c: i for i, c in enumerate(PA_COLUMNS)}
    fam, sid, mode = col["Nom d'exercice"], col["Identifiant technique de la structure"], col["Code mode exercice"]
    rsoc = col["Raison sociale site"]
    first_pp = rows[0][2]
    kept = [r for r in rows if r[2] != rows[-1][2]]  # the last professional vanishes (deactivated)
    out_rows = []
    for i, r in enumerate(kept):
        r = list(r)
        if i == 3:
            r[mode] = "S" if r[mode] != "S" else "L"   # one activity changed
        if i == 5:
            r[fam] = r[fam] + "-NOUVEAU"              # a name changed (on all its rows? only this one:
        out_rows.append(r)                           # a non-consecutive repeat, first occurrence wins)
    again = list(rows[0])
    again[fam] = "AUTRE"                             # the first professional listed again, differently
    again[mode] = "B"
    st2 = list(rows[1])
    st2[rsoc] = "AUTRE RAISON SOCIALE"                # a structure listed again, differently: first wins
    st2[mode] = "B" if st2[mode] != "B" else "S"
    assert again[2] == first_pp and st2[sid]
    return _write(out, header, [*out_rows, again, st2])


async def _run(engine: AsyncEngine, fast: bool, steps: list[tuple[Path, object]]) -> list[tuple[object, ...]]:
    imp = Importer(engine, skip_unchanged=fast, direct_first_load=fast)
    out = []
    for path, now in steps:
        [r] = await imp.import_path(path, now=now)  # type: ignore[arg-type]
        assert r.ok, r.error
        out.append(_report(r))
    return out


def _report(r: FileReport) -> tuple[object, ...]:
    return (r.kind, r.rows, r.bad_count, [(e.line, e.reason) for e in r.bad], r.duplicates, r.inserted,
            r.updated, r.closed)


async def test_fast_path_equals_full_staging(engine: AsyncEngine, files: dict[str, Path], tmp_path: Path) -> None:
    mss2 = _edited_mss(files["mssante_d1"], tmp_path / "Extraction_Correspondance_MSSante_202611250300.txt")
    pa2 = _edited_pa(files["activite_d1"], tmp_path / "PS_LibreAcces_Personne_activite_202611250300.txt")
    steps = [(files["mssante"], DAY0), (files["activite"], DAY0), (files["own"], DAY0),
             (files["mssante_d1"], DAY1), (files["activite_d1"], DAY1),
             (mss2, DAY2), (pa2, DAY2),
             (files["mssante"], DAY2 + timedelta(hours=1)),   # closed ones reopen, day-1 ones close
             (files["activite"], DAY2 + timedelta(hours=1)),  # the deactivated professional comes back
             (files["activite"], DAY2 + timedelta(hours=2))]  # same file: nothing
    fast = await _run(engine, True, steps)
    fast_state = await _dump(engine)
    await _reset(engine)
    full = await _run(engine, False, steps)
    assert fast == full
    assert await _dump(engine) == fast_state
    # the edits did what they say
    mss2_report, pa2_report = fast[5], fast[6]
    assert mss2_report[2] == 1 and mss2_report[3][0][1].startswith("IDNPS")
    assert mss2_report[6] == 2  # b (changed first) and c (address in capitals: its row hash changed)
    assert mss2_report[4] >= 2  # the a and b pairs merged
    assert pa2_report[6] >= 1 and pa2_report[7] >= 1
    assert fast[-1][5:] == (0, 0, 0)


async def test_same_file_reimport_stages_nothing(engine: AsyncEngine, files: dict[str, Path]) -> None:
    imp = Importer(engine)
    for key in ("mssante", "activite"):
        [first] = await imp.import_path(files[key], now=DAY0)
        assert first.staged > 0
        [again] = await imp.import_path(files[key], now=DAY1)
        assert again.ok and again.staged == 0 and (again.inserted, again.updated, again.closed) == (0, 0, 0)
        assert again.duplicates == first.duplicates and again.rows == first.rows


async def test_operator_file_first_then_public_same_as_full(engine: AsyncEngine, files: dict[str, Path]) -> None:
    steps = [(files["own"], DAY0), (files["mssante"], DAY0), (files["own"], DAY1), (files["mssante_d1"], DAY1)]
    fast = await _run(engine, True, steps)
    fast_state = await _dump(engine)
    await _reset(engine)
    assert await _run(engine, False, steps) == fast
    assert await _dump(engine) == fast_state


async def test_first_load_refused_midway_leaves_empty_tables_and_indexes(engine: AsyncEngine, files: dict[str, Path],
                                                                         tmp_path: Path) -> None:
    async def indexes() -> list[str]:
        async with engine.connect() as conn:
            return sorted(await conn.run_sync(
                lambda c: [ix["name"] for t in TABLES for ix in __import__("sqlalchemy").inspect(c).get_indexes(t)]))
    before = await indexes()
    for key in ("mssante", "activite"):
        bad = tmp_path / files[key].name
        bad.write_bytes(files[key].read_bytes() + "|".join(["x"] * 3).encode("latin-1") + b"\xe9|\n")
        [rep] = await Importer(engine).import_path(bad, now=DAY0)
        assert not rep.ok and "not UTF-8" in (rep.error or "")
    async with engine.connect() as conn:
        for t in TABLES:
            assert (await conn.execute(text(f"SELECT COUNT(*) FROM {t}"))).scalar_one() == 0  # noqa: S608
    assert await indexes() == before and before


async def test_bad_first_row_of_a_professional_does_not_lose_them(engine: AsyncEngine, files: dict[str, Path],
                                                                 tmp_path: Path) -> None:
    header, rows = _lines(files["activite"])
    sid = PA_COLUMNS.index("Identifiant technique de la structure")
    first = rows[0]
    bad = list(first)
    bad[sid] = "R-1!"
    path = _write(tmp_path / files["activite"].name, header, [bad, first])
    for _ in range(2):  # first load, then a re-import of the same file
        [rep] = await Importer(engine).import_path(path, now=DAY0)
        assert rep.ok and [(e.line, e.reason.split(" ")[1]) for e in rep.bad] == [(2, "structure")]
        async with engine.connect() as conn:
            active = (await conn.execute(text("SELECT active FROM ann_practitioner WHERE idnps = :i"),
                                         {"i": first[2]})).scalar_one()
        assert active


def _parts(path: Path, fast: bool, known: object) -> list[object]:
    """Run one ActivityRows over ``path`` (the importer's loop, without the database); return what it
    would stage and the marks it left in ``known``."""
    from annuaire.reader import decode_fields, iter_lines, open_sources, read_header
    from annuaire.rows import ActivityRows
    out: list[object] = []
    for src in open_sources(path):
        rows = ActivityRows(read_header(src))
        rows.know(known)  # type: ignore[arg-type]
        if fast:
            assert rows.unchanged is not None
        for line, raw in iter_lines(src):
            assert raw is not None
            if fast and rows.unchanged is not None and rows.unchanged(line, raw):
                continue
            parts = rows.parse(line, decode_fields(src, line, raw))
            if parts != (None, None, None, None):  # all unchanged: nothing to stage
                out.append(parts)
    return out


def _known_from(path: Path) -> object:
    from array import array

    from annuaire.rows import KnownActivity
    from annuaire.snapshot import Digests
    hashes: list[set[int]] = [set(), set(), set(), set()]
    for parts in _parts(path, False, KnownActivity()):  # a first load: every part returned
        assert isinstance(parts, tuple)
        for i, (part, pos) in enumerate(zip(parts, (-1, -1, 2, 2), strict=True)):
            if part is not None:
                hashes[i].add(part[pos])  # type: ignore[index]
    p, s, a, f = (Digests(array("q", sorted(h)), keyed=k) for h, k in zip(hashes, (True, True, False, False),
                                                                         strict=True))
    return KnownActivity(p, s, a, f)


def _marks(known: object) -> list[tuple[bytes, list[int] | None]]:
    return [(bytes(d.seen), list(d.first) if d.first is not None else None)
            for d in (known.practitioners, known.structures, known.activities, known.savoir_faire)]  # type: ignore[attr-defined]


def test_raw_line_fast_path_marks_and_stages_like_parse(files: dict[str, Path], tmp_path: Path) -> None:
    """The Personne_activite raw-bytes fast path (ActivityRows.unchanged) against parse alone, on the
    hand-edited file (changed, repeated, vanished rows) plus a bad row whose other parts are all live:
    same staged tuples and errors, same "seen" marks and first lines."""
    header, rows = _lines(files["activite"])
    sid = PA_COLUMNS.index("Identifiant technique de la structure")
    idnps = PA_COLUMNS.index("Identification nationale PP")
    bad_sid, bad_pp = list(rows[7]), list(rows[9])
    bad_sid[sid] = "R-1!"
    bad_pp[idnps] = "8X" + bad_pp[idnps][2:]
    edited = _edited_pa(files["activite_d1"], tmp_path / "edited.txt")
    h2, rows2 = _lines(edited)
    path = _write(tmp_path / files["activite"].name, h2, [bad_sid, bad_pp, *rows2, rows[3], rows[3]])
    known_fast, known_parse = _known_from(files["activite"]), _known_from(files["activite"])
    fast = _parts(path, True, known_fast)
    assert fast == _parts(path, False, known_parse)
    assert _marks(known_fast) == _marks(known_parse)
    assert [e.line for e in fast if not isinstance(e, tuple)][:2] == [2, 3]  # type: ignore[union-attr]


async def test_reimport_refuses_a_non_utf8_line_whose_parts_are_live(engine: AsyncEngine, files: dict[str, Path],
                                                                       tmp_path: Path) -> None:
    """The fast path hashes raw bytes but still checks every line is UTF-8 (the file is refused)."""
    [first] = await Importer(engine).import_path(files["activite"], now=DAY0)
    assert first.ok
    before = await _dump(engine)
    raw = files["activite"].read_bytes().split(b"\n")
    civ = PA_COLUMNS.index("Libellé civilité")  # in no hashed part
    f = raw[5].split(b"|")
    f[civ] = "Mé".encode("latin-1")
    raw[5] = b"|".join(f)
    bad = tmp_path / files["activite"].name
    bad.write_bytes(b"\n".join(raw))
    [rep] = await Importer(engine).import_path(bad, now=DAY1)
    assert not rep.ok and "line 6 is not UTF-8" in (rep.error or "")
    assert await _dump(engine) == before
