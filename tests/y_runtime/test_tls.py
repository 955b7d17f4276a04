"""MLLP over TLS with client certificates validated by pki (chain, role, revocation) and matched
against the sending system's configured certificate identity (issue 7, "Intake")."""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path

import pytest

from mssante.y.mllp import MllpClient, start_mllp
from mssante.y.service import mllp_ssl_context
from pki.space import TrustSpacePKI
from pki.tls import client_context
from pki.validation import Validator
from .support import DOMAIN, close_services, make_services, segur_bytes, sender_entry, with_control_id


def msa(ack: bytes) -> str:
    return [ln for ln in ack.split(b"\r") if ln.startswith(b"MSA|")][0].split(b"|")[1].decode()


async def test_client_certificates_are_validated_and_matched(db_url: str, tmp_path: Path) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    space = TrustSpacePKI.create(tmp_path / "pki", b"y-test-passphrase", now=now, label="YTEST")
    server = space.issue_server(f"mx.{DOMAIN}", domains=[DOMAIN], org="Operateur", structure_id="100000001",
                                department="Paris (75)", out_dir=tmp_path / "server", now=now)
    lab = space.issue_org("SIL-Y labo", org="Laboratoire", structure_id="1120459876", department="Paris (75)",
                          out_dir=tmp_path / "lab", now=now)
    other = space.issue_org("Autre SIL", org="Autre labo", structure_id="1120459877", department="Paris (75)",
                            out_dir=tmp_path / "other", now=now)
    revoked = space.issue_org("SIL-Y labo", org="Laboratoire", structure_id="1120459876", department="Paris (75)",
                              out_dir=tmp_path / "revoked", now=now)
    space.revoke(revoked.serial, "keyCompromise", now)
    crls = space.write_crls(now)
    services = await make_services(db_url, tmp_path, senders=[sender_entry(certificate=lab.subject_dn)])
    services.validator = Validator.from_files(space.anchors_path, space.intermediates_path, crls)
    cfg = services.config
    cfg.mllp.tls = True
    cfg.tls.cert, cfg.tls.key = str(server.chain_path), str(server.key_path)
    cfg.tls.anchors, cfg.tls.intermediates = str(space.anchors_path), str(space.intermediates_path)
    listener = await start_mllp(services, host="127.0.0.1", port=0, ssl_context=mllp_ssl_context(services))
    data = segur_bytes()

    async def send(who, cid: str) -> bytes:
        ctx = client_context(ca_path=space.anchors_path, cert_path=who.chain_path if who else None,
                             key_path=who.key_path if who else None)
        c = await MllpClient.connect("127.0.0.1", listener.port, ssl_context=ctx, server_hostname=f"mx.{DOMAIN}")
        try:
            return await c.send(with_control_id(data, cid))
        finally:
            await c.close()

    try:
        assert msa(await send(lab, "T1")) == "AA"
        refused = await send(other, "T2")  # valid, but not the certificate configured for SIL-Y|labo
        assert msa(refused) == "AE" and b"not authorised for this client certificate" in refused
        revoked_answer = await send(revoked, "T3")  # same subject, revoked: pki refuses it
        assert msa(revoked_answer) == "AE" and b"client certificate not accepted" in revoked_answer
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):  # no certificate: TLS refuses
            await send(None, "T4")
    finally:
        await listener.stop()
        await close_services(services)
