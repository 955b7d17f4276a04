"""The Authenticator on both database backends: passwords, tokens, certificates, delegation, rate limits."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy.ext.asyncio import AsyncEngine


from .issuer import AUDIENCE, ISSUER, LocalIssuer  # noqa: E402
from ..smtp.operators import Space, utcnow  # noqa: E402

from mssante.auth.passwords import hash_password  # noqa: E402
from mssante.auth.ratelimit import FailureLimiter  # noqa: E402
from mssante.auth.service import AuthFailure, Authenticator  # noqa: E402
from mssante.auth.tokens import TokenError, TokenReason, TokenVerifier  # noqa: E402
from mssante.store.base import Base  # noqa: E402
from mssante.store.db import make_engine, make_sessions  # noqa: E402
from mssante.store.mail import create_mailbox  # noqa: E402
from mssante.store.models import MailboxDelegate  # noqa: E402

PW = "an application password"


@pytest.fixture
async def engine(db_url: str):
    eng = make_engine(db_url)
    async with eng.begin() as c:
        await c.run_sync(Base.metadata.create_all)
    yield eng
    await eng.dispose()


@pytest.fixture
def issuer() -> LocalIssuer:
    return LocalIssuer()


async def setup_boxes(engine: AsyncEngine, cert_fp: str | None = None) -> None:
    sessions = make_sessions(engine)
    async with sessions() as s, s.begin():
        a = await create_mailbox(s, "dr.a@op-a.test", "PER", password_hash=hash_password(PW), owner_idnps="810000000001")
        await create_mailbox(s, "cab.a@op-a.test", "CAB", owner_idnps="810000000001")
        sec = await create_mailbox(s, "secretariat@op-a.test", "ORG", password_hash=hash_password(PW))
        await create_mailbox(s, "lab@op-a.test", "APP", cert_sha256=cert_fp)
        closed = await create_mailbox(s, "closed@op-a.test", "PER", password_hash=hash_password(PW))
        closed.enabled = False
        s.add(MailboxDelegate(mailbox_id=sec.id, delegate="810000000001"))  # dr.a's IDNPS may send as secretariat
        s.add(MailboxDelegate(mailbox_id=a.id, delegate="secretariat@op-a.test"))


def make_auth(engine: AsyncEngine, issuer: LocalIssuer | None = None, validator=None, **kw) -> Authenticator:
    tokens = TokenVerifier(issuer.jwks(), issuer=ISSUER, audience=AUDIENCE) if issuer else None
    return Authenticator(make_sessions(engine), tokens=tokens, validator=validator, **kw)


async def test_password(engine: AsyncEngine) -> None:
    await setup_boxes(engine)
    auth = make_auth(engine)
    r = await auth.password("Dr.A@op-a.test", PW, remote="192.0.2.1")
    assert r.ok and r.identity is not None and r.identity.primary == "dr.a@op-a.test"
    assert r.identity.may_send_as("dr.a@op-a.test") and not r.identity.may_send_as("cab.a@op-a.test")
    r = await auth.password("secretariat@op-a.test", PW)
    assert r.ok and r.identity.addresses == {"secretariat@op-a.test", "dr.a@op-a.test"}  # delegated
    for user, pw in (("dr.a@op-a.test", "wrong password!"), ("nobody@op-a.test", PW), ("closed@op-a.test", PW)):
        r = await auth.password(user, pw)
        assert not r.ok and r.reason is AuthFailure.BAD_CREDENTIALS  # the same answer for all three


async def test_password_rate_limited_without_enumeration(engine: AsyncEngine) -> None:
    await setup_boxes(engine)
    auth = make_auth(engine, limiter=FailureLimiter(per_account=2, per_address=100, window=300))
    for user in ("dr.a@op-a.test", "ghost@op-a.test"):
        for _ in range(2):
            assert (await auth.password(user, "bad password", remote="192.0.2.1")).reason is AuthFailure.BAD_CREDENTIALS
        r = await auth.password(user, PW, remote="192.0.2.1")
        assert not r.ok and r.reason is AuthFailure.RATE_LIMITED and r.temporary


async def test_token(engine: AsyncEngine, issuer: LocalIssuer) -> None:
    await setup_boxes(engine)
    auth = make_auth(engine, issuer)
    r = await auth.token(issuer.token("810000000001"), username="dr.a@op-a.test")
    assert r.ok and r.identity.primary == "dr.a@op-a.test" and r.identity.mailbox_ids and r.identity.idnps == "810000000001"
    r = await auth.token(issuer.token("810000000001"))
    assert r.ok and r.identity.addresses == {"dr.a@op-a.test", "cab.a@op-a.test", "secretariat@op-a.test"}
    r = await auth.token(issuer.token("810000000099"), username="dr.a@op-a.test")  # another IDNPS
    assert not r.ok and r.reason is AuthFailure.NOT_OWNER
    r = await auth.token(issuer.token("810000000001"), username="lab@op-a.test")
    assert not r.ok and r.reason is AuthFailure.NOT_OWNER
    r = await auth.token(LocalIssuer().token("810000000001"), username="dr.a@op-a.test")  # unknown signing key
    assert not r.ok and r.reason is AuthFailure.BAD_TOKEN


@pytest.mark.parametrize("kw,reason", [
    ({"issuer": "https://evil"}, TokenReason.BAD_ISSUER),
    ({"audience": "other"}, TokenReason.BAD_AUDIENCE),
    ({"lifetime": -3600}, TokenReason.EXPIRED),
])
def test_token_checks(issuer: LocalIssuer, kw: dict, reason: TokenReason) -> None:
    v = TokenVerifier(issuer.jwks(), issuer=ISSUER, audience=AUDIENCE)
    with pytest.raises(TokenError) as e:
        v.verify(issuer.token("810000000001", **kw), utcnow())
    assert e.value.reason is reason


def test_token_time_is_a_parameter(issuer: LocalIssuer) -> None:
    v = TokenVerifier(issuer.jwks(), issuer=ISSUER, audience=AUDIENCE)
    tok = issuer.token("810000000001", lifetime=60)
    assert v.verify(tok, utcnow()).idnps == "810000000001"
    with pytest.raises(TokenError):
        v.verify(tok, utcnow() + dt.timedelta(hours=1))


def test_token_refuses_none_and_hmac(issuer: LocalIssuer) -> None:
    import jwt

    v = TokenVerifier(issuer.jwks(), issuer=ISSUER, audience=AUDIENCE)
    for tok in (jwt.encode({"iss": ISSUER}, None, algorithm="none"), jwt.encode({"iss": ISSUER}, "k" * 32, algorithm="HS256")):
        with pytest.raises(TokenError) as e:
            v.verify(tok, utcnow())
        assert e.value.reason is TokenReason.MALFORMED
    with pytest.raises(TokenError):
        v.verify("garbage", utcnow())


async def test_certificate(engine: AsyncEngine, tmp_path: Path) -> None:
    space = Space.create(tmp_path / "space")
    lab = space.issue_org("Automate labo", tmp_path / "lab")
    fp = hashlib.sha256(lab.cert.public_bytes(Encoding.DER)).hexdigest()
    await setup_boxes(engine, fp)
    auth = make_auth(engine, validator=space.validator())
    r = await auth.certificate(lab.cert)
    assert r.ok and r.identity.addresses == {"lab@op-a.test"} and r.identity.method == "certificate"
    r = await auth.certificate(lab.cert, authzid="dr.a@op-a.test")
    assert not r.ok and r.reason is AuthFailure.NOT_OWNER
    other = space.issue_org("Autre", tmp_path / "other")
    assert (await auth.certificate(other.cert)).reason is AuthFailure.UNKNOWN_CERTIFICATE
    space.pki.revoke(lab.serial, "keyCompromise", utcnow())
    space.pki.write_crls(utcnow())
    auth.validator = space.validator()
    r = await auth.certificate(lab.cert)
    assert not r.ok and r.reason is AuthFailure.BAD_CERTIFICATE and "REVOKED" in r.detail
