from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from mssante.store import migrate
from mssante.store.db import make_engine
from mssante.store.schema import all_metadata


async def test_migrations_build_the_whole_schema_on_both_backends(db_url):
    engine = make_engine(db_url)
    await migrate.upgrade(engine)
    await migrate.upgrade(engine)  # idempotent
    assert await migrate.current_revision(engine) == migrate.head_revision()

    def _diff(conn):
        ctx = MigrationContext.configure(conn, opts={"compare_type": False})
        return compare_metadata(ctx, all_metadata())

    def _tables(conn):
        return set(inspect(conn).get_table_names())

    async with engine.connect() as conn:
        diff = await conn.run_sync(_diff)
        tables = await conn.run_sync(_tables)
    await engine.dispose()
    # The models and the migrations agree: a model change without a migration fails here.
    assert diff == [], f"models differ from migrations; run scripts/new_migration.py: {diff[:5]}"
    assert {"mailbox", "folder", "message", "blob", "audit_event"} <= tables
