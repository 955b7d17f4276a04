"""SASL message decoding: pure functions, no I/O (shared by SMTP submission and IMAP).

Mechanisms (issue 5; SPECS.md §2 client authentication):
- PLAIN (RFC 4616 §2): [authzid] NUL authcid NUL passwd
- LOGIN (draft-murchison-sasl-login): username, then password, each its own base64 line
- XOAUTH2 (Google's profile, used by Pro Santé Connect clients): "user=" u ^A "auth=Bearer " t ^A ^A
- OAUTHBEARER (RFC 7628 §3.1): gs2-header ^A *(key "=" value ^A) ^A with auth="Bearer " token
- EXTERNAL (RFC 4422 Appendix A): optional authzid; the identity is the TLS client certificate

Every function takes the client's base64 text (or its decoded bytes) and returns typed values, or
raises `SaslError` carrying the SMTP/IMAP-neutral reason. Nothing here logs or keeps secrets.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

MAX_SASL_BYTES = 16 * 1024  # a PSC access token is a few KiB; anything larger is refused


class SaslError(ValueError):
    """A malformed SASL exchange (RFC 4954 §4: answered 501 in SMTP, BAD/NO in IMAP)."""


@dataclass(frozen=True, slots=True)
class PlainCredentials:
    authzid: str
    username: str
    password: str = ""

    def __repr__(self) -> str:  # never print the password
        return f"PlainCredentials(authzid={self.authzid!r}, username={self.username!r})"


@dataclass(frozen=True, slots=True)
class BearerCredentials:
    username: str  # the mailbox asked for ("" = every mailbox of the token's holder)
    token: str

    def __repr__(self) -> str:
        return f"BearerCredentials(username={self.username!r})"


def decode_b64(text: str | bytes) -> bytes:
    """RFC 4954 §4: the client's response is base64; "=" is an empty response."""
    if isinstance(text, str):
        try:
            text = text.encode("ascii")
        except UnicodeEncodeError:
            raise SaslError("SASL response is not base64") from None
    text = text.strip()
    if text == b"=":
        return b""
    if len(text) > MAX_SASL_BYTES * 4 // 3 + 4:
        raise SaslError("SASL response too long")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SaslError("SASL response is not base64") from None


def _utf8(b: bytes, what: str) -> str:
    try:
        s = b.decode("utf-8")
    except UnicodeDecodeError:
        raise SaslError(f"{what} is not UTF-8") from None
    return s


def parse_plain(message: bytes) -> PlainCredentials:
    """RFC 4616 §2: message = [authzid] UTF8NUL authcid UTF8NUL passwd."""
    parts = message.split(b"\0")
    if len(parts) != 3:
        raise SaslError("PLAIN message must be authzid NUL authcid NUL password")
    authzid, authcid, passwd = (_utf8(p, "PLAIN field") for p in parts)
    if not authcid or not passwd:
        raise SaslError("PLAIN message has an empty user name or password")
    if len(authcid) > 320 or len(authzid) > 320 or len(passwd) > 1024:
        raise SaslError("PLAIN field too long")
    return PlainCredentials(authzid, authcid, passwd)


def parse_login_field(message: bytes, what: str) -> str:
    value = _utf8(message, what)
    if not value or len(value) > 1024 or "\0" in value:
        raise SaslError(f"LOGIN {what} is empty or malformed")
    return value


def parse_xoauth2(message: bytes) -> BearerCredentials:
    """XOAUTH2: "user=" {User} "^Aauth=Bearer " {Access Token} "^A^A"."""
    text = _utf8(message, "XOAUTH2 message")
    if not text.endswith("\x01\x01"):
        raise SaslError("XOAUTH2 message must end with ^A^A")
    fields = _kvs(text[:-2].split("\x01"), "XOAUTH2")
    user = fields.get("user", "")
    return BearerCredentials(user, _bearer(fields.get("auth"), "XOAUTH2"))


def parse_oauthbearer(message: bytes) -> BearerCredentials:
    """RFC 7628 §3.1: gs2-header kvsep *(kvpair) kvsep; the gs2 header may carry a=authzid."""
    text = _utf8(message, "OAUTHBEARER message")
    if not text.endswith("\x01\x01"):
        raise SaslError("OAUTHBEARER message must end with ^A^A")
    head, sep, rest = text[:-1].partition("\x01")
    if not sep:
        raise SaslError("OAUTHBEARER message has no key-value pairs")
    gs2 = head.split(",")
    if len(gs2) < 3 or gs2[0] not in ("n", "y") or gs2[-1] != "":
        raise SaslError("OAUTHBEARER gs2 header must be 'n,[a=user],'")
    user = ""
    for item in gs2[1:-1]:
        if item.startswith("a="):
            user = item[2:].replace("=2C", ",").replace("=3D", "=")
        elif item:
            raise SaslError("OAUTHBEARER gs2 header has an unknown field")
    fields = _kvs(rest[:-1].split("\x01") if rest.endswith("\x01") else rest.split("\x01"), "OAUTHBEARER")
    return BearerCredentials(user, _bearer(fields.get("auth"), "OAUTHBEARER"))


def parse_external(message: bytes) -> str:
    """RFC 4422 Appendix A: the message is the authzid (may be empty)."""
    authzid = _utf8(message, "EXTERNAL authorization identity")
    if len(authzid) > 320 or "\0" in authzid:
        raise SaslError("EXTERNAL authorization identity malformed")
    return authzid


def oauth_error_challenge(status: str = "invalid_token") -> str:
    """RFC 7628 §3.2.2: the server's error challenge (base64 JSON); the client answers ^A."""
    return base64.b64encode(json.dumps({"status": status, "schemes": "bearer"}).encode()).decode("ascii")


def _kvs(items: list[str], mech: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        if not item:
            continue
        k, eq, v = item.partition("=")
        if not eq or not k.isalpha():
            raise SaslError(f"{mech} key-value pair is malformed")
        out[k.lower()] = v
    return out


def _bearer(auth: str | None, mech: str) -> str:
    if not auth:
        raise SaslError(f"{mech} message carries no auth=Bearer token")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise SaslError(f"{mech} auth value must be 'Bearer <token>'")
    return token.strip()
