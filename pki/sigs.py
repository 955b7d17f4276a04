"""Signature-algorithm and key-strength rules shared by validation and OCSP.

Trust-space minimum (SPECS.md §6, ANSSI RGS B1): RSA >= 2048 bits, EC >= P-256; no SHA-1 or MD5
signatures (RFC 9155 deprecates them for TLS; CA/B Forum and ANSSI forbid them for certificates).
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa

WEAK_HASHES = (hashes.SHA1, hashes.MD5)


def weak_key_reason(public_key: object) -> str | None:
    """None when the key is strong enough, else a one-line explanation."""
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < 2048:
            return f"RSA {public_key.key_size}-bit key (minimum 2048)"
        return None
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if public_key.curve.key_size < 256:
            return f"EC key on {public_key.curve.name} (minimum P-256)"
        return None
    if isinstance(public_key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        return None
    return f"unsupported key type {type(public_key).__name__}"


def weak_hash_reason(algorithm: hashes.HashAlgorithm | None) -> str | None:
    if algorithm is not None and isinstance(algorithm, WEAK_HASHES):
        return f"{algorithm.name.upper()} signature"
    return None


def verify_signature(public_key: object, signature: bytes, data: bytes,
                     algorithm: hashes.HashAlgorithm | None) -> bool:
    """Verify a raw signature (OCSP responses); PKCS#1 v1.5 for RSA, ECDSA for EC."""
    try:
        if isinstance(public_key, rsa.RSAPublicKey) and algorithm is not None:
            public_key.verify(signature, data, padding.PKCS1v15(), algorithm)
        elif isinstance(public_key, ec.EllipticCurvePublicKey) and algorithm is not None:
            public_key.verify(signature, data, ec.ECDSA(algorithm))
        elif isinstance(public_key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
            public_key.verify(signature, data)
        else:
            return False
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True
