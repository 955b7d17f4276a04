"""Helpers for the PKI tests: certificates built directly with cryptography (odd on purpose)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pki.ca import CertificateAuthority

OPENSSL = shutil.which("openssl")
PASSPHRASE = b"correct horse battery staple"


@dataclass
class CertFactory:
    """Builds certificates directly with cryptography, bypassing the profile checks of pki.ca."""

    now: datetime

    def leaf(self, ca: CertificateAuthority, *, key: object | None = None, cn: str = "odd.example.mssante.fr",
             algorithm: hashes.HashAlgorithm | None = None, not_before: datetime | None = None,
             not_after: datetime | None = None, eku: Iterable[x509.ObjectIdentifier] | None = (
                 ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH),
             key_usage: x509.KeyUsage | None = None, ca_flag: bool = False,
             signer_key: object | None = None) -> tuple[x509.Certificate, object]:
        private = key if key is not None else ec.generate_private_key(ec.SECP256R1())
        public = private.public_key()  # type: ignore[attr-defined]
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
                                     x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(ca.cert.subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or self.now - timedelta(hours=1))
            .not_valid_after(not_after or self.now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=ca_flag, path_length=None), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
        )
        if eku is not None:
            builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
        if key_usage is not None:
            builder = builder.add_extension(key_usage, critical=True)
        cert = builder.sign(signer_key or ca.key, algorithm or hashes.SHA256())  # type: ignore[arg-type]
        return cert, private


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def key_usage(**flags: bool) -> x509.KeyUsage:
    names = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
             "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")
    return x509.KeyUsage(**{n: flags.get(n, False) for n in names})


def rsa1024() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - the weak key under test


def openssl_sha1_leaf(ca: CertificateAuthority, workdir: Path) -> x509.Certificate:
    """A leaf signed with ECDSA/RSA-SHA1 by ``ca``: cryptography refuses to make one, openssl still can."""
    workdir.mkdir(parents=True, exist_ok=True)
    ca_key = workdir / "ca.key"
    ca_key.write_bytes(ca.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    (workdir / "ca.pem").write_bytes(ca.cert.public_bytes(serialization.Encoding.PEM))
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sha1.example.fr")]))
           .sign(key, hashes.SHA256()))
    (workdir / "leaf.csr").write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    (workdir / "ext.cnf").write_text("extendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n")
    subprocess.run(["openssl", "x509", "-req", "-in", str(workdir / "leaf.csr"), "-CA", str(workdir / "ca.pem"),
                    "-CAkey", str(ca_key), "-set_serial", "4242", "-days", "30", "-sha1",
                    "-extfile", str(workdir / "ext.cnf"), "-out", str(workdir / "leaf.pem")],
                   check=True, capture_output=True)
    ca_key.unlink()
    return x509.load_pem_x509_certificate((workdir / "leaf.pem").read_bytes())
