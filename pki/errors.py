"""Typed errors of the PKI package.

Every error the CLI or a caller can meet derives from :class:`PkiError`; its ``str()`` is one
clear line that is safe to print (it never contains key material or passphrases).
"""

from __future__ import annotations


class PkiError(Exception):
    """Base class of every PKI failure with a human readable one-line message."""


class MalformedInput(PkiError):
    """Bytes that are not a parsable PEM/DER certificate, CSR, key or CRL."""


class WrongPassphrase(PkiError):
    """A CA private key could not be decrypted with the given passphrase."""


class BadCsrSignature(PkiError):
    """A CSR whose self-signature does not verify (RFC 2986 §3: proof of possession)."""


class UnknownIssuer(PkiError):
    """No known CA matches the issuer of a certificate or CRL."""


class UnknownSerial(PkiError):
    """A revocation request for a serial number this trust space never issued."""


class CrlError(PkiError):
    """A CRL that cannot be used; ``reason`` is a validation Reason code name."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class SpaceError(PkiError):
    """A trust-space directory that is missing, incomplete or already initialised."""
