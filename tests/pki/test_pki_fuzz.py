"""Fuzz the parsers and the validator: bad bytes give typed errors or a MALFORMED/negative Decision,
never an unexpected exception (STYLE.md: fuzz every parser)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pki.crl import CrlStore
from pki.errors import MalformedInput, PkiError
from pki.files import load_der_certificate, parse_certificates, parse_crl, parse_csr
from pki.keys import parse_private_key
from pki.space import TrustSpacePKI
from pki.validation import Reason, Role, Validator, validate_pem_chain

_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture
def material(space: TrustSpacePKI, tmp_path: Path, now: datetime) -> tuple[Validator, bytes, bytes]:
    leaf = space.issue_server("mx.f.mssante.fr", domains=[], org="F", structure_id="1", department="75",
                              out_dir=tmp_path, now=now)
    v = Validator.from_files(space.anchors_path, space.intermediates_path, space.crl_paths)
    return v, leaf.cert.public_bytes(serialization.Encoding.DER), space.crl_paths[1].read_bytes()


@_SETTINGS
@given(data=st.binary(max_size=600))
def test_parsers_raise_only_typed_errors(data: bytes) -> None:
    for parse in (parse_certificates, parse_crl, parse_csr, parse_private_key):
        try:
            parse(data)  # type: ignore[operator]
        except PkiError:
            pass
    for wrapped in (b"-----BEGIN CERTIFICATE-----\n" + data + b"\n-----END CERTIFICATE-----\n",
                    b"-----BEGIN X509 CRL-----\n" + data + b"\n-----END X509 CRL-----\n"):
        try:
            parse_certificates(wrapped)
        except PkiError:
            pass
        try:
            parse_crl(wrapped)
        except PkiError:
            pass


@_SETTINGS
@given(position=st.integers(min_value=0, max_value=10_000), value=st.integers(min_value=0, max_value=255))
def test_mutated_certificates_never_validate_or_raise(material: tuple[Validator, bytes, bytes], now: datetime,
                                                      position: int, value: int) -> None:
    validator, der, _ = material
    i = position % len(der)
    if der[i] == value:
        return
    mutated = der[:i] + bytes([value]) + der[i + 1:]
    try:
        cert = load_der_certificate(mutated)
    except MalformedInput:  # also cryptography's InvalidVersion, which is not a ValueError
        with pytest.raises(MalformedInput):
            parse_certificates(mutated)
        return
    decision = validator.validate(cert, Role.TLS_SERVER, now)
    assert isinstance(decision.reason, Reason)
    # A changed byte can only be accepted if it is outside the signed part (e.g. in the signature
    # encoding's unused bits); the signed TBS must be byte-identical to be accepted.
    if decision.ok:
        original = x509.load_der_x509_certificate(der)
        assert cert.tbs_certificate_bytes == original.tbs_certificate_bytes


@_SETTINGS
@given(position=st.integers(min_value=0, max_value=10_000), value=st.integers(min_value=0, max_value=255))
def test_mutated_crls_are_refused_or_verified(material: tuple[Validator, bytes, bytes], space: TrustSpacePKI,
                                              now: datetime, position: int, value: int) -> None:
    _, _, crl_pem = material
    der = x509.load_pem_x509_crl(crl_pem).public_bytes(serialization.Encoding.DER)
    i = position % len(der)
    mutated = der[:i] + bytes([value]) + der[i + 1:]
    store = CrlStore([space.root.cert, space.organisations.cert])
    try:
        store.load(mutated)
    except PkiError:
        return
    # Loaded (a CRL naming an unknown issuer waits for lazy verification): it may only be used for
    # ORGANISATIONS if its signed content is untouched.
    lookup = store.lookup(space.organisations.cert, now)
    if lookup.entry is not None:
        assert lookup.entry.crl.tbs_certlist_bytes == x509.load_der_x509_crl(der).tbs_certlist_bytes


def test_chain_garbage(material: tuple[Validator, bytes, bytes], now: datetime) -> None:
    validator, _, _ = material
    for blob in (b"", b"\x00" * 10, b"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----"):
        assert validate_pem_chain(validator, blob, Role.TLS_CLIENT, now).reason is Reason.MALFORMED


def test_version_2_certificate_is_malformed_input(material: tuple[Validator, bytes, bytes]) -> None:
    """The example hypothesis found: byte 12 (the version INTEGER) 2 -> 1. cryptography raises
    InvalidVersion, which is not a ValueError; every parser of ours turns it into MalformedInput."""
    _, der, _ = material
    v2 = der[:12] + b"\x01" + der[13:]
    assert der[10:13] == b"\x02\x01\x02"
    with pytest.raises(MalformedInput):
        load_der_certificate(v2)
    with pytest.raises(MalformedInput):
        parse_certificates(v2)
