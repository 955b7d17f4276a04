"""Alembic environment: runs on the connection handed over by mssante.store.migrate."""

from __future__ import annotations

from alembic import context

from mssante.store.schema import all_metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through mssante.store.migrate (it passes the connection)")

context.configure(
    connection=connection,
    target_metadata=all_metadata(),
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER most things in place
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
