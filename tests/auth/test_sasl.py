"""SASL decoding (pure) and the failure rate limiter (pure)."""

from __future__ import annotations

import base64

import pytest

from mssante.auth import sasl
from mssante.auth.ratelimit import FailureLimiter


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def test_plain() -> None:
    c = sasl.parse_plain(sasl.decode_b64(b64(b"\0dr@op-a.test\0secret password")))
    assert (c.authzid, c.username, c.password) == ("", "dr@op-a.test", "secret password")
    assert "secret" not in repr(c)
    c = sasl.parse_plain(b"other@op-a.test\0dr@op-a.test\0pw")
    assert c.authzid == "other@op-a.test"


@pytest.mark.parametrize("bad", [b"nonul", b"\0\0pw", b"\0user\0", b"a\0b\0c\0d", b"\0\xff\0pw"])
def test_plain_malformed(bad: bytes) -> None:
    with pytest.raises(sasl.SaslError):
        sasl.parse_plain(bad)


def test_base64_errors() -> None:
    assert sasl.decode_b64("=") == b""
    with pytest.raises(sasl.SaslError):
        sasl.decode_b64("not base64!!")
    with pytest.raises(sasl.SaslError):
        sasl.decode_b64("é")
    with pytest.raises(sasl.SaslError):
        sasl.decode_b64("A" * 100_000)


def test_xoauth2() -> None:
    c = sasl.parse_xoauth2(b"user=dr@op-a.test\x01auth=Bearer abc.def.ghi\x01\x01")
    assert c.username == "dr@op-a.test" and c.token == "abc.def.ghi"
    assert "abc" not in repr(c)
    with pytest.raises(sasl.SaslError):
        sasl.parse_xoauth2(b"user=x\x01auth=Basic abc\x01\x01")
    with pytest.raises(sasl.SaslError):
        sasl.parse_xoauth2(b"user=x\x01auth=Bearer abc")


def test_oauthbearer() -> None:
    c = sasl.parse_oauthbearer(b"n,a=dr@op-a.test,\x01host=mx\x01port=587\x01auth=Bearer tok\x01\x01")
    assert c.username == "dr@op-a.test" and c.token == "tok"
    c = sasl.parse_oauthbearer(b"n,,\x01auth=Bearer tok\x01\x01")
    assert c.username == ""
    for bad in (b"p=x,,\x01auth=Bearer t\x01\x01", b"n,a=x\x01auth=Bearer t\x01\x01", b"n,,\x01\x01"):
        with pytest.raises(sasl.SaslError):
            sasl.parse_oauthbearer(bad)


def test_external_and_login() -> None:
    assert sasl.parse_external(b"") == ""
    assert sasl.parse_external(b"lab@op-a.test") == "lab@op-a.test"
    with pytest.raises(sasl.SaslError):
        sasl.parse_external(b"a\0b")
    assert sasl.parse_login_field(b"user", "user name") == "user"
    with pytest.raises(sasl.SaslError):
        sasl.parse_login_field(b"", "password")


def test_rate_limiter_per_account_and_address() -> None:
    lim = FailureLimiter(per_account=3, per_address=5, window=60)
    for i in range(3):
        assert not lim.blocked("Dr@op-a.test", "192.0.2.1", now=i)
        lim.failure("dr@op-a.test", "192.0.2.1", now=i)
    assert lim.blocked("dr@op-a.test", "192.0.2.9", now=10)  # the account, from anywhere
    assert not lim.blocked("other@op-a.test", "192.0.2.9", now=10)
    lim.failure("x@op-a.test", "192.0.2.1", now=11)
    lim.failure("y@op-a.test", "192.0.2.1", now=12)
    assert lim.blocked("new@op-a.test", "192.0.2.1", now=13)  # the address, for any account
    assert not lim.blocked("dr@op-a.test", "192.0.2.9", now=100)  # window passed
    # Unknown and known accounts are limited the same way (no enumeration): the limiter never looks them up.
    lim.success("dr@op-a.test")
