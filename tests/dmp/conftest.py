"""DMP leg fixtures: a trust space (TrustSpacePKI) with the DMP's SERV certificate, two structures'
ORG certificates and a rogue space; a running reference DMP per test; a connector factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest


from .dmp_support import ConnectorFactory, Pki, build_pki, connector_config  # noqa: E402

from mssante.dmp.connector import Iti41Connector
from mssante.dmp.reference import ReferenceDmp, RunningDmp, start_reference_dmp
from mssante.dmp.registry import ReferenceRegistry
from mssante.dmp.tlsconf import server_context
from pki.space import Issued


@pytest.fixture(scope="session")
def pki_material(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return build_pki(tmp_path_factory.mktemp("dmp-pki"))


@pytest.fixture
async def dmp(pki_material: Pki, tmp_path: Path) -> AsyncIterator[RunningDmp]:
    ctx = server_context(pki_material.server.chain_path, pki_material.server.key_path, pki_material.space.anchors_path)  # type: ignore[arg-type]
    running = await start_reference_dmp(
        ReferenceDmp(ReferenceRegistry(tmp_path / "dmp-store")), host="127.0.0.1", port=0, ssl_context=ctx
    )
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture
async def make_connector(pki_material: Pki) -> AsyncIterator[ConnectorFactory]:
    made: list[Iti41Connector] = []

    async def factory(base_url: str, who: Issued | None = None, audit: Any = None, **overrides: Any) -> Iti41Connector:
        c = Iti41Connector(connector_config(pki_material, base_url, who, **overrides), audit=audit)
        made.append(c)
        return c

    yield factory
    for c in made:
        await c.close()
