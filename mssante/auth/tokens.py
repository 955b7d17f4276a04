"""Pro Santé Connect-style access tokens (JWT) checked against a configured JWKS (SPECS.md §2).

Checks: signature (key chosen by `kid` from the JWKS, asymmetric algorithms only), issuer, audience,
expiry and not-before against `now` (a parameter: no clock inside), and the holder's IDNPS/RPPS claim.
PSC access tokens carry the national identifier in `SubjectNameID`; `preferred_username` and `sub` are
accepted as fallbacks when they look like an IDNPS. The token itself is never stored or logged.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import jwt

ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384")
IDNPS_CLAIMS = ("SubjectNameID", "idnps", "preferred_username", "sub")
LEEWAY = dt.timedelta(seconds=30)


class TokenReason(StrEnum):
    MALFORMED = "MALFORMED"
    UNKNOWN_KEY = "UNKNOWN_KEY"
    BAD_SIGNATURE = "BAD_SIGNATURE"
    BAD_ISSUER = "BAD_ISSUER"
    BAD_AUDIENCE = "BAD_AUDIENCE"
    EXPIRED = "EXPIRED"
    NOT_YET_VALID = "NOT_YET_VALID"
    NO_IDNPS = "NO_IDNPS"
    NOT_CONFIGURED = "NOT_CONFIGURED"


class TokenError(ValueError):
    def __init__(self, reason: TokenReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class TokenClaims:
    idnps: str
    subject: str
    expires: dt.datetime
    claims: dict[str, Any]


def _looks_like_idnps(v: Any) -> bool:
    # IDNPS: RPPS prefixed 8 (11 digits + 1) or ADELI prefixed 0; test identifiers are digits too.
    return isinstance(v, str) and 9 <= len(v) <= 20 and v.isalnum()


class TokenVerifier:
    def __init__(self, jwks: dict[str, Any] | None, *, issuer: str, audience: str) -> None:
        self.issuer = issuer
        self.audience = audience
        self._keys: dict[str, jwt.PyJWK] = {}
        self._anonymous: list[jwt.PyJWK] = []
        for k in (jwks or {}).get("keys", []):
            try:
                key = jwt.PyJWK(k)
            except (jwt.PyJWKError, jwt.InvalidKeyError):
                continue
            if k.get("kid"):
                self._keys[str(k["kid"])] = key
            else:
                self._anonymous.append(key)

    @classmethod
    def from_file(cls, path: str | Path, *, issuer: str, audience: str) -> TokenVerifier:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(data, issuer=issuer, audience=audience)

    @property
    def configured(self) -> bool:
        return bool(self._keys or self._anonymous) and bool(self.issuer) and bool(self.audience)

    def verify(self, token: str, now: dt.datetime) -> TokenClaims:
        if not self.configured:
            raise TokenError(TokenReason.NOT_CONFIGURED, "no JWKS, issuer or audience configured")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenError(TokenReason.MALFORMED, "not a JWT") from None
        alg = header.get("alg")
        if alg not in ALGORITHMS:  # never "none" nor HMAC with a public key
            raise TokenError(TokenReason.MALFORMED, f"algorithm {alg!r} not allowed")
        kid = header.get("kid")
        candidates = [self._keys[kid]] if kid in self._keys else ([] if kid else self._anonymous)
        if not candidates:
            raise TokenError(TokenReason.UNKNOWN_KEY, "signing key not in the JWKS")
        claims: dict[str, Any] | None = None
        for key in candidates:
            try:
                claims = jwt.decode(
                    token, key.key, algorithms=[alg],
                    options={"verify_exp": False, "verify_nbf": False, "verify_iat": False,
                             "verify_aud": False, "verify_iss": False},
                )
                break
            except jwt.InvalidSignatureError:
                continue
            except jwt.PyJWTError:
                raise TokenError(TokenReason.MALFORMED, "token cannot be decoded") from None
        if claims is None:
            raise TokenError(TokenReason.BAD_SIGNATURE, "signature does not verify")
        if claims.get("iss") != self.issuer:
            raise TokenError(TokenReason.BAD_ISSUER, "issuer not accepted")
        aud = claims.get("aud")
        auds = aud if isinstance(aud, list) else [aud]
        if self.audience not in auds and claims.get("azp") != self.audience:
            raise TokenError(TokenReason.BAD_AUDIENCE, "audience not accepted")
        exp = claims.get("exp")
        if not isinstance(exp, (int, float)):
            raise TokenError(TokenReason.MALFORMED, "token has no exp")
        expires = dt.datetime.fromtimestamp(exp, dt.timezone.utc)
        if now > expires + LEEWAY:
            raise TokenError(TokenReason.EXPIRED, "token expired")
        nbf = claims.get("nbf")
        if isinstance(nbf, (int, float)) and now + LEEWAY < dt.datetime.fromtimestamp(nbf, dt.timezone.utc):
            raise TokenError(TokenReason.NOT_YET_VALID, "token not yet valid")
        for name in IDNPS_CLAIMS:
            if _looks_like_idnps(claims.get(name)):
                return TokenClaims(str(claims[name]), str(claims.get("sub", "")), expires, claims)
        raise TokenError(TokenReason.NO_IDNPS, "token carries no IDNPS/RPPS")
