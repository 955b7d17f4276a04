"""TLS contexts and peer certificates for the DMP leg, on top of pki.tls (TLS >= 1.2, AEAD suites).

SPECS.md §4: the DMP is reached over mutual TLS with the structure's ORG AUTH_CLI certificate;
SPECS.md §6: IGC Santé is not in public stores, anchors are configured explicitly.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from cryptography import x509

from pki import tls


def server_context(cert_path: Path, key_path: Path, anchors_path: Path) -> ssl.SSLContext:
    """Present cert_path (leaf + intermediate); require a client certificate chaining to anchors_path."""
    return tls.server_context(cert_path, key_path, client_ca_path=anchors_path, require_client_cert=True)


def client_context(anchors_path: Path, cert_path: Path | None = None, key_path: Path | None = None) -> ssl.SSLContext:
    """Validate the server against anchors_path (host name checked) and present our certificate chain."""
    return tls.client_context(ca_path=anchors_path, cert_path=cert_path, key_path=key_path)


def peer_certificate(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> x509.Certificate | None:
    return tls.peer_certificate(ssl_object)
