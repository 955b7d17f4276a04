"""Reading PEM/DER objects and writing files atomically.

Writes go to a temporary file in the same directory followed by ``os.replace`` so that a reader
never sees a half-written certificate, key or CRL, and a failed operation leaves nothing behind.
"""

from __future__ import annotations

import base64
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509

from pki.errors import MalformedInput

# What cryptography raises for a certificate it cannot parse: ValueError, and InvalidVersion (not a
# ValueError) for a version field other than v1/v3, e.g. one flipped byte in a peer's certificate.
CERT_PARSE_ERRORS = (ValueError, x509.InvalidVersion)

_PEM_CERT = re.compile(rb"-----BEGIN (?:X509 |TRUSTED )?CERTIFICATE-----.+?-----END (?:X509 |TRUSTED )?CERTIFICATE-----",
                       re.DOTALL)


def atomic_write(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` atomically (tmp file + fsync + os.replace)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_many(files: Iterable[tuple[Path, bytes, int]]) -> None:
    """Write several files; all temporary files are prepared before the first rename."""
    prepared: list[tuple[str, Path]] = []
    try:
        for path, data, mode in files:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            prepared.append((tmp, path))
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, mode)
    except BaseException:
        for tmp, _ in prepared:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        raise
    for tmp, path in prepared:
        os.replace(tmp, path)


def read_bytes(path: str | Path, what: str = "file") -> bytes:
    p = Path(path)
    try:
        return p.read_bytes()
    except OSError as exc:
        raise MalformedInput(f"{p}: cannot read {what} ({exc.strerror})") from exc


def parse_certificates(data: bytes, *, source: str = "certificates") -> list[x509.Certificate]:
    """Parse a PEM bundle (any number of certificates, text around them ignored) or one DER cert.

    Real IGC Santé chain files are distributed as PEM bundles or DER ``.cer`` files; both work.
    """
    certs: list[x509.Certificate] = []
    if b"-----BEGIN" in data:
        blocks = _PEM_CERT.findall(data)
        if not blocks:
            raise MalformedInput(f"{source}: no PEM certificate found")
        for block in blocks:
            try:
                if block.startswith(b"-----BEGIN TRUSTED CERTIFICATE-----"):
                    certs.append(_trusted_certificate(block))
                else:
                    certs.append(x509.load_pem_x509_certificate(block))
            except CERT_PARSE_ERRORS as exc:
                raise MalformedInput(f"{source}: malformed PEM certificate ({exc})") from exc
        return certs
    try:
        return [x509.load_der_x509_certificate(data)]
    except CERT_PARSE_ERRORS as exc:
        raise MalformedInput(f"{source}: not a PEM or DER certificate") from exc


def load_der_certificate(der: bytes, source: str = "certificate") -> x509.Certificate:
    """One DER certificate (from a peer, a message...); MalformedInput for whatever cryptography refuses."""
    try:
        return x509.load_der_x509_certificate(der)
    except CERT_PARSE_ERRORS as exc:
        raise MalformedInput(f"{source}: not a DER certificate ({type(exc).__name__})") from exc


def _trusted_certificate(block: bytes) -> x509.Certificate:
    """OpenSSL's ``TRUSTED CERTIFICATE``: a DER certificate followed by trust settings; keep the certificate."""
    body = b"".join(line for line in block.splitlines() if line and not line.startswith(b"-----"))
    der = base64.b64decode(body, validate=False)
    if len(der) < 2 or der[0] != 0x30:
        raise ValueError("not a DER SEQUENCE")
    length, offset = der[1], 2
    if length & 0x80:
        n = length & 0x7F
        if n == 0 or n > 4 or len(der) < 2 + n:
            raise ValueError("bad DER length")
        length, offset = int.from_bytes(der[2:2 + n], "big"), 2 + n
    return x509.load_der_x509_certificate(der[:offset + length])


def load_certificates(path: str | Path) -> list[x509.Certificate]:
    return parse_certificates(read_bytes(path, "certificate file"), source=str(path))


def load_certificate(path: str | Path) -> x509.Certificate:
    """The first certificate of a PEM/DER file (the leaf of a chain file)."""
    return load_certificates(path)[0]


def parse_csr(data: bytes, *, source: str = "CSR") -> x509.CertificateSigningRequest:
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_csr(data)
        return x509.load_der_x509_csr(data)
    except ValueError as exc:
        raise MalformedInput(f"{source}: not a valid PEM or DER certificate request") from exc


def parse_crl(data: bytes, *, source: str = "CRL") -> x509.CertificateRevocationList:
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError as exc:
        raise MalformedInput(f"{source}: not a valid PEM or DER CRL") from exc
