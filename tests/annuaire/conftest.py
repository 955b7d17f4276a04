"""Directory test fixtures: an engine on each backend (shared ``db_url``) and synthetic files."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from annuaire.db import create_schema, make_engine
from annuaire.synthetic import Spec, generate

DAY0 = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)
DAY1 = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    eng = make_engine(db_url)
    await create_schema(eng)
    try:
        yield eng
    finally:
        await eng.dispose()


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """Day 0 and day 1 extractions (small), plus an operator file with liste-rouge entries."""
    d0 = generate(tmp_path / "d0", Spec(mss_rows=400, pa_rows=600, own_rows=20), make_zip=True)
    d1 = generate(tmp_path / "d1", Spec(mss_rows=400, pa_rows=600, day=1, ts="202611240300"))
    out = {k: v for k, v in d0.items()}
    out.update({k + "_d1": v for k, v in d1.items()})
    return out
