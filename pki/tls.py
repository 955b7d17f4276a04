"""ssl context helpers for every listener and client of the gateway.

SPECS.md §1 (operator-to-operator transport): TLS 1.2 or later, mutual authentication with IGC Santé
certificates. ANSSI "Recommandations de sécurité relatives à TLS" (v1.2): TLS 1.2 only with ECDHE and
AEAD suites (AES-GCM, ChaCha20-Poly1305); TLS 1.3 suites are all AEAD. No TLS compression (CRIME),
no renegotiation.

The ssl module verifies the chain against the configured CA file; revocation and the trust-space
rules (liste blanche DN, roles) are applied afterwards with pki.validation on ``peer_certificate``.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from cryptography import x509

# TLS 1.2: ECDHE key exchange with AEAD only (RFC 5289 / RFC 7905); OpenSSL cipher-string syntax.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!SHA1:!SHA256:!SHA384"


def _harden(ctx: ssl.SSLContext) -> ssl.SSLContext:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_SINGLE_ECDH_USE
    if hasattr(ssl, "OP_NO_RENEGOTIATION"):
        ctx.options |= ssl.OP_NO_RENEGOTIATION
    return ctx


def server_context(cert_path: str | Path, key_path: str | Path, *, client_ca_path: str | Path | None = None,
                   require_client_cert: bool = False) -> ssl.SSLContext:
    """A server context; with ``client_ca_path`` it asks for a client certificate (optional or required).

    ``cert_path`` may be a chain file (leaf + intermediate), which is what peers need to build the path.
    """
    ctx = _harden(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    ctx.load_cert_chain(str(cert_path), str(key_path))
    if require_client_cert and client_ca_path is None:
        raise ValueError("require_client_cert needs client_ca_path (the trust anchors)")
    if client_ca_path is not None:
        ctx.load_verify_locations(cafile=str(client_ca_path))
        ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    else:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def client_context(*, ca_path: str | Path, cert_path: str | Path | None = None,
                   key_path: str | Path | None = None, check_hostname: bool = True) -> ssl.SSLContext:
    """A client context verifying the server against ``ca_path`` (anchors, optionally + intermediates).

    With ``cert_path``/``key_path`` it presents a client certificate (mutual TLS between MTAs,
    application mailboxes).
    """
    ctx = _harden(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    ctx.load_verify_locations(cafile=str(ca_path))
    ctx.check_hostname = check_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    if cert_path is not None:
        ctx.load_cert_chain(str(cert_path), str(key_path) if key_path is not None else None)
    elif key_path is not None:
        raise ValueError("key_path given without cert_path")
    return ctx


def peer_certificate(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> x509.Certificate | None:
    """The peer's leaf certificate (parsed) from an ssl.SSLSocket/SSLObject, or None when absent."""
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    from pki.errors import MalformedInput
    from pki.files import load_der_certificate

    try:
        return load_der_certificate(der, "peer certificate")
    except MalformedInput:  # OpenSSL took it, cryptography cannot read it: no usable identity
        return None
