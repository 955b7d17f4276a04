"""Revocation of the structure's certificate and distinct seal certificates, with pki.validation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from .dmp_support import ConnectorFactory, Pki, make_cda, make_request

from mssante.dmp.api import DmpAccepted, DmpRejected
from mssante.dmp.reference import ReferenceDmp, RunningDmp, start_reference_dmp
from mssante.dmp.tlsconf import server_context
from pki.space import Issued
from pki.validation import Validator


@dataclass
class Extra:
    revoked: Issued
    seal: Issued
    stranger_seal: Issued


@pytest.fixture(scope="module")
def extra(pki_material: Pki, tmp_path_factory: pytest.TempPathFactory) -> Extra:
    d = tmp_path_factory.mktemp("dmp-extra")
    now = datetime.now(UTC)
    space = pki_material.space
    revoked = space.issue_org("PFI REVOQUEE", org="Laboratoire des charmes", structure_id="11204598",
                              department="Hauts-de-Seine (92)", out_dir=d / "revoked", now=now)
    # Same subject as the lab's TLS certificate, another key: a seal certificate of the same structure.
    seal = space.issue_org("PFI LABO", org="Laboratoire des charmes", structure_id="11204598",
                           department="Hauts-de-Seine (92)", out_dir=d / "seal", now=now)
    stranger_seal = space.issue_org("PFI LABO", org="Laboratoire des charmes", structure_id="11204598",
                                    department="Hauts-de-Seine (92)", out_dir=d / "stranger", now=now)
    space.revoke(revoked.serial, "keyCompromise", now)
    space.revoke(stranger_seal.serial, "keyCompromise", now)
    space.write_crls(now)
    return Extra(revoked, seal, stranger_seal)


@pytest.fixture
async def strict_dmp(pki_material: Pki, extra: Extra) -> AsyncIterator[RunningDmp]:
    space = pki_material.space
    validator = Validator.from_files(space.anchors_path, space.intermediates_path, space.crl_paths)
    ctx = server_context(pki_material.server.chain_path, pki_material.server.key_path, space.anchors_path)  # type: ignore[arg-type]
    running = await start_reference_dmp(ReferenceDmp(validator=validator), host="127.0.0.1", port=0, ssl_context=ctx)
    yield running
    await running.stop()


async def test_revoked_client_certificate_is_refused(strict_dmp: RunningDmp, make_connector: ConnectorFactory, extra: Extra) -> None:
    c = await make_connector(strict_dmp.base_url, who=extra.revoked)
    out = await c.send(make_request(make_cda("15001")))
    assert isinstance(out, DmpRejected) and out.code == "wsse:FailedAuthentication" and "REVOKED" in out.text
    assert strict_dmp.dmp.registry.docs == {}


async def test_valid_client_still_accepted(strict_dmp: RunningDmp, make_connector: ConnectorFactory) -> None:
    c = await make_connector(strict_dmp.base_url)
    assert isinstance(await c.send(make_request(make_cda("15101"))), DmpAccepted)


async def test_vihf_signed_by_a_seal_certificate_of_the_same_structure(
    strict_dmp: RunningDmp, make_connector: ConnectorFactory, extra: Extra
) -> None:
    c = await make_connector(strict_dmp.base_url, signing_cert_path=extra.seal.cert_path, signing_key_path=extra.seal.key_path)
    assert isinstance(await c.send(make_request(make_cda("15201"))), DmpAccepted)


async def test_vihf_signed_by_a_revoked_seal_certificate(
    strict_dmp: RunningDmp, make_connector: ConnectorFactory, extra: Extra
) -> None:
    c = await make_connector(strict_dmp.base_url, signing_cert_path=extra.stranger_seal.cert_path,
                             signing_key_path=extra.stranger_seal.key_path)
    out = await c.send(make_request(make_cda("15301")))
    assert isinstance(out, DmpRejected) and "signer" in out.text
