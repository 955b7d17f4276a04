"""The real public extractions, when someone has put them in ../shared/data/real (never in the repo)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from annuaire.importer import Importer
from annuaire.reader import open_sources, read_header

REAL = (Path(__file__).resolve().parents[2] / "../shared/data/real").resolve()
PATTERNS = ("Extraction_Correspondance_MSSante_*", "PS_LibreAcces_Personne_activite_*")


def _real_files() -> list[Path]:
    if not REAL.is_dir():
        pytest.skip(f"real data folder {REAL} is absent")
    found = sorted(p for pat in PATTERNS for p in REAL.glob(pat) if p.suffix in (".txt", ".zip"))
    if not found:
        pytest.skip(f"no Annuaire Santé extraction in {REAL} (expected {', '.join(PATTERNS)})")
    return found


def test_real_headers_are_recognised() -> None:
    for path in _real_files():
        for src in open_sources(path):
            assert read_header(src).kind.value in ("mssante", "activite")


@pytest.mark.timeout(1800)
async def test_real_files_import(engine: AsyncEngine) -> None:
    for path in _real_files():
        for rep in await Importer(engine).import_path(path):
            assert rep.ok, rep.error
            assert rep.rows > 0 and rep.bad_count < rep.rows / 100, rep.summary()
