"""Small helpers shared by the directory tests (no mocks: real engines, real files)."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

TABLES = ("ann_mailbox", "ann_practitioner", "ann_structure", "ann_activity", "ann_savoir_faire")


async def counts(engine: AsyncEngine) -> dict[str, int]:
    out = {}
    async with engine.connect() as conn:
        for t in TABLES:
            out[t] = int((await conn.execute(text(f"SELECT COUNT(*) FROM {t}"))).scalar_one())  # noqa: S608
    return out


async def snapshot(engine: AsyncEngine) -> list[tuple[object, ...]]:
    """Every mailbox row with its timestamps: proves 'nothing changed'."""
    async with engine.connect() as conn:
        return list((await conn.execute(text(
            "SELECT address, row_hash, published, own, liste_rouge, closed_at, updated_at "
            "FROM ann_mailbox ORDER BY address"))).all())
