"""Write a new Alembic revision for the schema changes since the last one.

    python scripts/new_migration.py "add the relay queue"

It upgrades a throw-away SQLite database to the current head, then lets Alembic compare it
with the models (mssante.store.schema.all_metadata) and write the difference.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from alembic import command
from sqlalchemy import create_engine

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mssante.store.migrate import alembic_config  # noqa: E402


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: new_migration.py MESSAGE", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        engine = create_engine(f"sqlite:///{tmp}/m.db")
        with engine.begin() as conn:
            cfg = alembic_config(conn)
            command.upgrade(cfg, "head")
            command.revision(cfg, message=sys.argv[1], autogenerate=True)
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
