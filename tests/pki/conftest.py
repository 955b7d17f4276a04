"""Fixtures for the PKI tests: a fresh trust space per test and a factory for odd certificates."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from .pki_testing import PASSPHRASE, CertFactory

from pki.space import TrustSpacePKI


@pytest.fixture
def now() -> datetime:
    # The real clock (seconds precision): interop tests hand the same files to openssl and ssl.
    return datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def space(tmp_path: Path, now: datetime) -> TrustSpacePKI:
    return TrustSpacePKI.create(tmp_path / "space", PASSPHRASE, now=now)


@pytest.fixture
def other_space(tmp_path: Path, now: datetime) -> TrustSpacePKI:
    """A second, unrelated trust space (an untrusted root)."""
    return TrustSpacePKI.create(tmp_path / "other", PASSPHRASE, now=now, label="ROGUE")


@pytest.fixture
def factory(now: datetime) -> CertFactory:
    return CertFactory(now)
