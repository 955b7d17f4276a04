"""Key generation, loading and encrypted storage.

Key types allowed in the trust space (SPECS.md §6, IGC Santé profiles; ANSSI RGS B1 minimum sizes):
RSA 2048/3072 and EC P-256. CA keys are stored encrypted at rest (PKCS#8 with
``BestAvailableEncryption``); leaf keys handed to servers are stored unencrypted with mode 0600.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from pki.errors import MalformedInput, WrongPassphrase

KeyKind = Literal["rsa2048", "rsa3072", "ec-p256"]
KEY_KINDS: tuple[str, ...] = get_args(KeyKind)

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def check_key_kind(kind: str) -> KeyKind:
    """Return ``kind`` typed, or raise ValueError naming the allowed kinds."""
    if kind not in KEY_KINDS:
        raise ValueError(f"unknown key kind {kind!r}; choose one of {', '.join(KEY_KINDS)}")
    return kind  # type: ignore[return-value]


def generate_key(kind: KeyKind | str = "ec-p256") -> PrivateKey:
    """Generate a fresh private key of the given kind."""
    kind = check_key_kind(kind)
    if kind == "rsa2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "rsa3072":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    return ec.generate_private_key(ec.SECP256R1())


def key_kind_of(key: PrivateKey) -> str:
    """A short description of a key (for audit lines and ``pki show``)."""
    if isinstance(key, rsa.RSAPrivateKey):
        return f"rsa{key.key_size}"
    return f"ec-{key.curve.name}"


def private_key_pem(key: PrivateKey, passphrase: bytes | None = None) -> bytes:
    """PKCS#8 PEM; encrypted with the best available algorithm when a passphrase is given."""
    encryption: serialization.KeySerializationEncryption
    if passphrase:
        encryption = serialization.BestAvailableEncryption(passphrase)
    else:
        encryption = serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def parse_private_key(data: bytes, passphrase: bytes | None = None, *, source: str = "key") -> PrivateKey:
    """Parse a PEM or DER private key; typed errors for a wrong passphrase or malformed bytes."""
    loaders = (serialization.load_pem_private_key,) if b"-----BEGIN" in data else (
        serialization.load_der_private_key,)
    for loader in loaders:
        try:
            key = loader(data, password=passphrase or None)
        except TypeError as exc:
            # cryptography raises TypeError when the key is encrypted and no passphrase was given,
            # or when a passphrase is given for an unencrypted key.
            if passphrase:
                raise WrongPassphrase(f"{source}: key is not encrypted but a passphrase was given") from exc
            raise WrongPassphrase(f"{source}: key is encrypted, a passphrase is required") from exc
        except ValueError as exc:
            if b"ENCRYPTED" in data:
                raise WrongPassphrase(f"{source}: wrong passphrase for the encrypted key") from exc
            raise MalformedInput(f"{source}: not a valid private key") from exc
        if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
            raise MalformedInput(f"{source}: unsupported key type {type(key).__name__}")
        return key
    raise MalformedInput(f"{source}: not a valid private key")  # pragma: no cover


def load_private_key(path: str | Path, passphrase: bytes | None = None) -> PrivateKey:
    """Load a private key file (PEM or DER, optionally encrypted)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise MalformedInput(f"{p}: cannot read key file ({exc.strerror})") from exc
    return parse_private_key(data, passphrase, source=str(p))
