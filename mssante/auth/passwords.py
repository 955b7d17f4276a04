"""Per-mailbox application passwords, hashed with Argon2id (issue 5: scrypt or argon2).

Generated passwords are long random strings shown once; only the hash is stored.
"""

from __future__ import annotations

import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

# Moderate cost: a login costs a few ms, an attacker's guess as much; failures are also rate-limited.
_HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)

# A valid hash of a random secret, checked when the account does not exist, so that an
# unknown user costs the same time as a wrong password (no user enumeration).
_DUMMY_HASH = _HASHER.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    if len(password) < 12:
        raise ValueError("application passwords must be at least 12 characters")
    return _HASHER.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    try:
        return _HASHER.verify(stored_hash or _DUMMY_HASH, password) and stored_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def generate_password() -> str:
    return secrets.token_urlsafe(18)
