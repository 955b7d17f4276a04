"""Shared fixtures: databases on both backends, free ports, the real data folder."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest


from .pgserver import PgServer, find_bindir  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = (REPO.parent / "shared" / "data" / "real").resolve()

_counter = itertools.count()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PgServer]:
    bindir = find_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed; .ci/run installs them")
    server = PgServer(bindir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(postgres_server: PgServer) -> str:
    """A fresh, empty PostgreSQL database for this test."""
    return postgres_server.create_database(f"t{next(_counter)}_{id(object()) % 100000}")


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database on each backend (the same test runs on both)."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 't.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def real_data() -> Path:
    """The public ANS files in ../shared/data/real (never copied into the repo)."""
    if not REAL_DATA.is_dir():
        pytest.skip(f"real data folder {REAL_DATA} is absent")
    return REAL_DATA
