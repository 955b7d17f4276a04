"""Strong authentication through the shared Authenticator: XOAUTH2 / OAUTHBEARER with a Pro Santé
Connect-style token (SPECS.md §2), and SASL EXTERNAL with an IGC Santé ORG client certificate over
real mutual TLS (pki.space)."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import json
import ssl
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding
from jwt.algorithms import RSAAlgorithm
from sqlalchemy import update

from .conftest import ADDRESS, Client, Env, fast_settings

from mssante.auth.service import Authenticator
from mssante.auth.tokens import TokenVerifier
from mssante.imap.server import start_imap
from mssante.store.models import Mailbox

ISSUER = "https://psc.test/realms/esante-wallet"
AUDIENCE = "mssante-imap-test"
IDNPS = "810000000001"


class Issuer:
    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def verifier(self) -> TokenVerifier:
        jwk = json.loads(RSAAlgorithm.to_jwk(self.key.public_key()))
        jwk.update({"kid": "k1", "alg": "RS256", "use": "sig"})
        return TokenVerifier({"keys": [jwk]}, issuer=ISSUER, audience=AUDIENCE)

    def token(self, idnps: str) -> str:
        now = int(dt.datetime.now(dt.timezone.utc).timestamp())
        return jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": idnps, "SubjectNameID": idnps, "iat": now,
                           "exp": now + 300}, self.key, algorithm="RS256", headers={"kid": "k1"})


@pytest.fixture(scope="module")
def issuer() -> Issuer:
    return Issuer()


def xoauth2(user: str, token: str) -> str:
    return base64.b64encode(f"user={user}\x01auth=Bearer {token}\x01\x01".encode()).decode()


async def test_xoauth2(env: Env, issuer: Issuer) -> None:
    c = Client(env, authenticator=Authenticator(env.services.sessions, tokens=issuer.verifier()))
    greeting = await c.start()
    assert b"AUTH=XOAUTH2" in greeting and b"AUTH=OAUTHBEARER" in greeting
    r = await c.cmd(f"a AUTHENTICATE XOAUTH2 {xoauth2(ADDRESS, issuer.token(IDNPS))}")
    assert "a OK" in r
    assert "* 0 EXISTS" in await c.cmd("s SELECT INBOX")
    await c.close()


async def test_xoauth2_wrong_owner_gets_error_challenge(env: Env, issuer: Issuer) -> None:
    c = Client(env, authenticator=Authenticator(env.services.sessions, tokens=issuer.verifier()))
    await c.start()
    c.conn.feed(f"a AUTHENTICATE XOAUTH2 {xoauth2(ADDRESS, issuer.token('899999999999'))}\r\n".encode())
    challenge = await c.read_until(b"\r\n")
    assert challenge.startswith(b"+ ") and b"status" in base64.b64decode(challenge[2:].strip())
    assert "a NO [AUTHENTICATIONFAILED]" in await c.cmd("", tag="a")
    await c.close()


async def test_oauthbearer(env: Env, issuer: Issuer) -> None:
    c = Client(env, authenticator=Authenticator(env.services.sessions, tokens=issuer.verifier()))
    await c.start()
    msg = f"n,a={ADDRESS},\x01auth=Bearer {issuer.token(IDNPS)}\x01\x01"
    r = await c.cmd(f"a AUTHENTICATE OAUTHBEARER {base64.b64encode(msg.encode()).decode()}")
    assert "a OK" in r
    await c.close()


async def test_external_with_org_certificate(env: Env, tmp_path: Path) -> None:
    space_mod = pytest.importorskip("pki.space")
    from pki.validation import Validator

    now = dt.datetime.now(dt.timezone.utc)
    space = space_mod.TrustSpacePKI.create(tmp_path / "space", b"passphrase", now=now)
    server = space.issue_server("imap.op-a.test", domains=["op-a.test"], org="Operateur A",
                               structure_id="10000000000001", department="Paris (75)", out_dir=tmp_path / "srv",
                               now=now)
    client = space.issue_org("Laboratoire Bio", org="Laboratoire Bio", structure_id="20000000000002",
                             department="Paris (75)", out_dir=tmp_path / "cli", now=now)
    fp = hashlib.sha256(client.cert.public_bytes(Encoding.DER)).hexdigest()
    async with env.services.sessions() as s, s.begin():
        await s.execute(update(Mailbox).where(Mailbox.id == env.mailbox_id).values(cert_sha256=fp))
    validator = Validator.from_files(space.anchors_path, space.intermediates_path, space.crl_paths)
    env.services.authenticator = Authenticator(env.services.sessions, validator=validator)
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(str(server.chain_path), str(server.key_path))
    sctx.load_verify_locations(cafile=str(space.anchors_path))
    sctx.verify_mode = ssl.CERT_OPTIONAL
    listener = await start_imap(env.services, host="127.0.0.1", port=0, implicit_tls=True, ssl_context=sctx,
                                settings=fast_settings())
    try:
        cctx = ssl.create_default_context(cafile=str(space.anchors_path))
        cctx.check_hostname = False
        cctx.load_cert_chain(str(client.chain_path), str(client.key_path))
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port, ssl=cctx)
        greeting = await reader.readline()
        assert b"AUTH=EXTERNAL" in greeting
        writer.write(b"a AUTHENTICATE EXTERNAL =\r\n")
        line = await asyncio.wait_for(reader.readline(), 20)
        assert line.startswith(b"a OK"), line
        writer.write(b"b SELECT INBOX\r\n")
        out = b""
        while not out.endswith(b"\r\n") or not out.splitlines()[-1].startswith(b"b "):
            out += await asyncio.wait_for(reader.readline(), 20)
        assert b"b OK [READ-WRITE]" in out
        writer.close()
    finally:
        await listener.stop()
        env.services.authenticator = None
