"""A local Pro Santé Connect-style token issuer for tests: an RSA key, its JWKS, signed access tokens."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

ISSUER = "https://auth.esw.esante.gouv.fr/auth/realms/esante-wallet"
AUDIENCE = "mssante-test-gateway"


class LocalIssuer:
    def __init__(self, kid: str = "test-key-1") -> None:
        self.kid = kid
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwks(self) -> dict[str, Any]:
        jwk = json.loads(RSAAlgorithm.to_jwk(self.key.public_key()))
        jwk.update({"kid": self.kid, "use": "sig", "alg": "RS256"})
        return {"keys": [jwk]}

    def write_jwks(self, path: Path) -> Path:
        path.write_text(json.dumps(self.jwks()))
        return path

    def token(self, idnps: str, *, now: dt.datetime | None = None, lifetime: int = 300, issuer: str = ISSUER,
              audience: str = AUDIENCE, **claims: Any) -> str:
        now = now or dt.datetime.now(dt.timezone.utc)
        payload = {"iss": issuer, "aud": audience, "sub": f"f:{idnps}", "SubjectNameID": idnps,
                   "iat": int(now.timestamp()), "exp": int(now.timestamp()) + lifetime, **claims}
        return jwt.encode(payload, self.key, algorithm="RS256", headers={"kid": self.kid})
