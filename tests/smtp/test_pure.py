"""Pure cores: envelope parameters, header hygiene, Received, DSN, enhanced codes (no sockets)."""

from __future__ import annotations

import datetime as dt

import pytest

from mssante.smtp.dsn import DsnRecipient, build_dsn
from mssante.smtp.envelope import parse_mail, parse_rcpt, wants, xtext_decode, xtext_encode
from mssante.smtp.message import MessageFormatError, from_addresses, prepare_submission, received_header, split_message
from mssante.smtp.replies import SmtpReply, with_enhanced

NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.timezone.utc)


def test_mail_parameters() -> None:
    m = parse_mail("FROM:<a@op-a.test> SIZE=1000 BODY=8BITMIME RET=HDRS ENVID=abc+2Bdef AUTH=<>", max_size=5000)
    assert (m.address, m.size, m.body, m.ret, m.envid) == ("a@op-a.test", 1000, "8BITMIME", "HDRS", "abc+def")
    assert parse_mail("FROM:<>", max_size=10).address == ""


@pytest.mark.parametrize("arg,code", [
    ("FROM:<a@op-a.test> SIZE=99999", "552 5.3.4"),
    ("FROM:<a@op-a.test> SMTPUTF8", "555 5.5.4"),
    ("FROM:<a@op-a.test> BODY=BINARYMIME", "501 5.5.4"),
    ("FROM:<a@op-a.test> RET=ALL", "501 5.5.4"),
    ("FROM:<a@op-a.test> ENVID=a=b", "501 5.5.4"),
    ("FROM:a@op-a.test", "501 5.5.4"),
    ("FROM:<a@@op-a.test>", "553 5.1.3"),
    ("FROM:<a..b@op-a.test>", "553 5.1.3"),
    ("FROM:<" + "x" * 65 + "@op-a.test>", "553 5.1.3"),
    ("FROM:<a@op-a.test> SIZE=1 SIZE=2", "501 5.5.4"),
])
def test_mail_errors(arg: str, code: str) -> None:
    with pytest.raises(SmtpReply) as e:
        parse_mail(arg, max_size=1000)
    assert e.value.reply.startswith(code)


def test_rcpt_parameters() -> None:
    r = parse_rcpt("TO:<b@op-b.test> NOTIFY=success,DELAY ORCPT=rfc822;b+40x@op-b.test")
    assert r.notify == "SUCCESS,DELAY" and r.orcpt == "rfc822;b@x@op-b.test"
    assert parse_rcpt("TO:<b@op-b.test> NOTIFY=NEVER").notify == "NEVER"
    for bad in ("TO:<b@op-b.test> NOTIFY=NEVER,SUCCESS", "TO:<b@op-b.test> ORCPT=noxtext", "TO:<>", "TO:<postmaster>"):
        with pytest.raises(SmtpReply):
            parse_rcpt(bad)
    assert wants(None, "FAILURE") and wants(None, "DELAY") and not wants(None, "SUCCESS")
    assert not wants("NEVER", "FAILURE") and wants("SUCCESS,FAILURE", "SUCCESS")


def test_xtext_roundtrip() -> None:
    for s in ("plain", "a+b=c d", "é"):
        assert xtext_decode(xtext_encode(s)) == s
    with pytest.raises(SmtpReply):
        xtext_decode("bad+zz")


def test_submission_hygiene() -> None:
    raw = b"From: Dr <dr@op-a.test>\r\nBcc: hidden@op-a.test\r\nX-MSS-INS: O\r\nSubject: s\r\n\r\nbody\r\n"
    out, mid = prepare_submission(raw, now=NOW, domain="op-a.test")
    assert b"Bcc" not in out and b"X-MSS-INS: O" in out and mid.endswith("@op-a.test>")
    assert b"Date: Mon, 23 Nov 2026 12:00:00 +0000" in out and out.endswith(b"\r\n\r\nbody\r\n")
    again, mid2 = prepare_submission(out, now=NOW, domain="op-a.test")
    assert again == out and mid2 == mid  # idempotent
    fields, _ = split_message(b"From: a@x.test\r\nSender: \"B\" <b@x.test>\r\n\r\n")
    assert from_addresses(fields) == ["a@x.test", "b@x.test"]
    with pytest.raises(MessageFormatError):
        split_message(b"not a header\r\n\r\nbody")


def test_received_header_has_no_injection() -> None:
    h = received_header(from_helo="evil\r\nBcc: x", peer_ip="127.0.0.1", by_host="mx.op-a.test", protocol="ESMTPS",
                        tls="TLSv1.3 (x)", cert_subject="CN=a\r\nX: y", recipient=None, queue_id="q1", now=NOW)
    assert h.count(b"\r\n") == 4 and b"\r\nBcc" not in h and b"\r\nX: y" not in h


def test_dsn_structure() -> None:
    original = b"From: a@op-a.test\r\nMessage-ID: <m@op-a.test>\r\n\r\nsecret body\r\n"
    dsn = build_dsn(reporting_mta="mx.op-a.test", postmaster="postmaster@op-a.test", sender="a@op-a.test",
                    recipients=[DsnRecipient("b@op-b.test", "failed", "5.1.1", "550 5.1.1 unknown", "mx.op-b.test",
                                             "rfc822;b@op-b.test")],
                    original=original, now=NOW, envid="E 1", original_message_id="<m@op-a.test>")
    assert b"multipart/report; report-type=delivery-status" in dsn and b"Auto-Submitted: auto-replied" in dsn
    assert b"Original-Envelope-Id: E+201" in dsn and b"Status: 5.1.1" in dsn and b"Action: failed" in dsn
    assert b"text/rfc822-headers" in dsn and b"secret body" not in dsn
    full = build_dsn(reporting_mta="mx", postmaster="p@op-a.test", sender="a@op-a.test",
                     recipients=[DsnRecipient("b@op-b.test", "failed", "5.0.0")], original=original, now=NOW, ret="FULL")
    assert b"message/rfc822" in full and b"secret body" in full
    with pytest.raises(ValueError):
        build_dsn(reporting_mta="mx", postmaster="p", sender="", recipients=[DsnRecipient("b@x", "failed", "5.0.0")],
                  original=original, now=NOW)


def test_enhanced_codes_added() -> None:
    assert with_enhanced("503 Error: need RCPT command") == "503 5.5.1 need RCPT command"
    assert with_enhanced("250 2.1.0 OK") == "250 2.1.0 OK"
    assert with_enhanced("354 End data") == "354 End data"


class _Entry:
    def __init__(self, next_update: dt.datetime) -> None:
        self.next_update = next_update


class _Store:
    def __init__(self, entries: list[_Entry]) -> None:
        self.list = entries

    def entries(self) -> list[_Entry]:
        return list(self.list)


class _Cert:
    def __init__(self, der: bytes, not_after: dt.datetime) -> None:
        self.der, self.not_valid_after_utc = der, not_after

    def public_bytes(self, _encoding: object) -> bytes:
        return self.der


class _Decision:
    def __init__(self, ok: bool, chain: tuple[_Cert, ...]) -> None:
        self.ok, self.chain = ok, chain


class _Validator:
    def __init__(self, store: _Store, ok: bool = True) -> None:
        self.crls, self.ocsp, self.ok, self.calls = store, None, ok, 0

    def validate(self, cert: _Cert, role: str, now: dt.datetime) -> _Decision:
        self.calls += 1
        return _Decision(self.ok, (cert,))


def test_cert_decision_cache_bounds() -> None:
    from mssante.smtp.certcache import CertDecisionCache

    t0 = dt.datetime(2026, 12, 4, 12, 0, tzinfo=dt.timezone.utc)
    store = _Store([_Entry(t0 + dt.timedelta(minutes=30))])
    v = _Validator(store)
    cert = _Cert(b"leaf", t0 + dt.timedelta(days=300))
    cache = CertDecisionCache(max_age=600)
    for minutes in (0, 1, 9):
        assert cache.validate(v, cert, "TLS_CLIENT", t0 + dt.timedelta(minutes=minutes)).ok
    assert v.calls == 1  # cached within max_age
    cache.validate(v, cert, "TLS_CLIENT", t0 + dt.timedelta(minutes=11))
    assert v.calls == 2  # max_age passed
    cache.validate(v, cert, "TLS_CLIENT", t0 + dt.timedelta(minutes=10))
    assert v.calls == 3  # the clock went back: not trusted
    store.list = [_Entry(t0 + dt.timedelta(minutes=30))]  # a refreshed CRL (another entry object)
    cache.validate(v, cert, "TLS_CLIENT", t0 + dt.timedelta(minutes=10))
    assert v.calls == 4
    cache.validate(v, cert, "TLS_CLIENT", t0 + dt.timedelta(minutes=29))
    assert v.calls == 5  # 10 + max_age would be 20: re-checked
    cache.validate(v, cert, "TLS_CLIENT", t0 + dt.timedelta(minutes=31))
    assert v.calls == 6  # past the CRL's nextUpdate: never cached beyond it
    cache.validate(v, cert, "TLS_CLIENT", t0 + dt.timedelta(minutes=32))
    assert v.calls == 7
    other = _Validator(store)
    cache.validate(other, cert, "TLS_CLIENT", t0 + dt.timedelta(minutes=32))
    assert other.calls == 1  # another validator (reloaded configuration): not shared
    bad = _Validator(store, ok=False)
    for _ in range(2):
        assert not cache.validate(bad, _Cert(b"bad", t0 + dt.timedelta(days=1)), "TLS_CLIENT", t0).ok
    assert bad.calls == 2  # refusals are never cached
    v.ocsp = object()
    calls = v.calls
    cache.validate(v, cert, "TLS_CLIENT", t0 + dt.timedelta(minutes=1))
    cache.validate(v, cert, "TLS_CLIENT", t0 + dt.timedelta(minutes=1))
    assert v.calls == calls + 2  # OCSP configured: no caching


def test_cert_decision_cache_skips_unchecked_revocation() -> None:
    """Fail-open acceptances (pki notes that revocation was not checked) are validated every time: a CRL
    for that issuer may arrive where the store's entries() does not show it yet."""
    from mssante.smtp.certcache import CertDecisionCache

    class _Noted(_Validator):
        def validate(self, cert: _Cert, role: str, now: dt.datetime) -> _Decision:
            d = super().validate(cert, role, now)
            d.detail = "revocation of CN=x not checked: crl_unavailable"  # type: ignore[attr-defined]
            return d

    t0 = dt.datetime(2026, 12, 4, 12, 0, tzinfo=dt.timezone.utc)
    v = _Noted(_Store([]))
    cert = _Cert(b"leaf", t0 + dt.timedelta(days=300))
    cache = CertDecisionCache(max_age=600)
    for _ in range(2):
        assert cache.validate(v, cert, "TLS_CLIENT", t0).ok
    assert v.calls == 2
