"""SMTP envelope parsing: MAIL/RCPT arguments and their ESMTP parameters. Pure, no I/O.

- RFC 5321 §4.1.1.2/§4.1.1.3: MAIL FROM:<reverse-path> [params], RCPT TO:<forward-path> [params]
- RFC 1870 SIZE, RFC 6152 BODY=7BIT|8BITMIME
- RFC 3461 DSN: MAIL RET=FULL|HDRS and ENVID=xtext; RCPT NOTIFY=NEVER|SUCCESS,FAILURE,DELAY and
  ORCPT=addr-type;xtext (§4.1-§4.4); xtext is RFC 3461 §4.
- RFC 4954 §5: MAIL AUTH=<mailbox> is accepted and ignored (we do not trust a submitter's claim).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from mssante.smtp.replies import SmtpReply

MAX_ADDRESS = 254  # RFC 5321 §4.5.3.1.3 path limit minus the brackets
_LOCAL_ATOM = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+$")
_DOMAIN = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
_XTEXT_HEX = re.compile(r"\+([0-9A-F]{2})")
NOTIFY_VALUES = frozenset({"SUCCESS", "FAILURE", "DELAY"})


@dataclass
class MailParams:
    address: str  # "" = null reverse-path
    size: int | None = None
    body: str = "7BIT"
    ret: str | None = None
    envid: str | None = None


@dataclass
class RcptParams:
    address: str
    notify: str | None = None  # "NEVER" or a comma list of SUCCESS/FAILURE/DELAY
    orcpt: str | None = None  # "rfc822;addr" decoded


@dataclass
class Transaction:
    """One mail transaction (MAIL .. DATA), the per-transaction state of a connection."""

    mail: MailParams
    recipients: list[RcptParams] = field(default_factory=list)
    local_ids: dict[str, int] = field(default_factory=dict)  # recipient -> local mailbox id
    remote: list[str] = field(default_factory=list)  # recipients to relay (submission only)
    actor: str = ""  # peer DN (MTA) or authenticated login (submission)


def xtext_decode(value: str) -> str:
    """RFC 3461 §4: xtext = *( xchar / hexchar ), hexchar = "+" 2HEXDIG."""
    if any(ord(c) < 33 or ord(c) > 126 or c == "=" for c in value):
        raise SmtpReply("501 5.5.4 Malformed xtext parameter")
    if "+" in _XTEXT_HEX.sub("", value):
        raise SmtpReply("501 5.5.4 Malformed xtext parameter")
    return _XTEXT_HEX.sub(lambda m: chr(int(m.group(1), 16)), value)


def xtext_encode(value: str) -> str:
    return "".join(c if 33 <= ord(c) <= 126 and c not in "+=" else f"+{ord(c):02X}" for c in value)


def check_address(addr: str) -> str:
    """A mailbox (RFC 5321 §4.1.2) with a dot-atom or quoted local part and a domain; returned as given."""
    if len(addr) > MAX_ADDRESS or addr.count("@") < 1:
        raise SmtpReply("553 5.1.3 Malformed address")
    local, _, domain = addr.rpartition("@")
    if domain.startswith("[") or not _DOMAIN.match(domain):
        raise SmtpReply("553 5.1.3 Malformed address domain")
    if local.startswith('"') and local.endswith('"') and len(local) >= 2:
        inner = local[1:-1]
        if any(ord(c) < 32 or ord(c) > 126 for c in inner):
            raise SmtpReply("553 5.1.3 Malformed address")
    elif not local or not _LOCAL_ATOM.match(local) or local.startswith(".") or local.endswith(".") or ".." in local:
        raise SmtpReply("553 5.1.3 Malformed address")
    if len(local) > 64:  # RFC 5321 §4.5.3.1.1
        raise SmtpReply("553 5.1.3 Local part too long")
    return addr


def _split_path(arg: str, keyword: str) -> tuple[str, list[str]]:
    if not arg[: len(keyword)].upper() == keyword:
        raise SmtpReply(f"501 5.5.4 Syntax: {keyword} <address> [parameters]")
    rest = arg[len(keyword):].lstrip()
    if not rest.startswith("<"):
        raise SmtpReply(f"501 5.5.4 Syntax: {keyword} <address> [parameters]")
    end = rest.find(">")
    if end < 0:
        raise SmtpReply(f"501 5.5.4 Syntax: {keyword} <address> [parameters]")
    path = rest[1:end]
    if ":" in path and path.startswith("@"):  # RFC 5321 §4.1.2 source route: ignore it (Appendix C)
        path = path.split(":", 1)[1]
    return path, rest[end + 1:].split()


def _params(words: list[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for w in words:
        k, eq, v = w.partition("=")
        k = k.upper()
        if not k or not k.replace("-", "").isalnum() or (eq and not v) or k in out:
            raise SmtpReply("501 5.5.4 Malformed parameter")
        out[k] = v if eq else None
    return out


def parse_mail(arg: str, *, max_size: int, dsn: bool = True) -> MailParams:
    path, words = _split_path(arg, "FROM:")
    mp = MailParams(check_address(path) if path else "")
    for k, v in _params(words).items():
        if k == "SIZE":  # RFC 1870 §6
            if v is None or not v.isdigit() or len(v) > 20:
                raise SmtpReply("501 5.5.4 SIZE needs a number")
            mp.size = int(v)
            if mp.size > max_size:
                raise SmtpReply("552 5.3.4 Message size exceeds fixed maximum message size")
        elif k == "BODY":  # RFC 6152 §2
            if v is None or v.upper() not in ("7BIT", "8BITMIME"):
                raise SmtpReply("501 5.5.4 BODY must be 7BIT or 8BITMIME")
            mp.body = v.upper()
        elif k == "RET" and dsn:  # RFC 3461 §4.3
            if v is None or v.upper() not in ("FULL", "HDRS"):
                raise SmtpReply("501 5.5.4 RET must be FULL or HDRS")
            mp.ret = v.upper()
        elif k == "ENVID" and dsn:  # RFC 3461 §4.4
            if v is None or len(v) > 100:
                raise SmtpReply("501 5.5.4 ENVID malformed")
            mp.envid = xtext_decode(v)
        elif k == "AUTH":  # RFC 4954 §5: accepted, not trusted
            continue
        else:
            raise SmtpReply(f"555 5.5.4 MAIL parameter {k} not supported")
    return mp


def parse_rcpt(arg: str, *, dsn: bool = True) -> RcptParams:
    path, words = _split_path(arg, "TO:")
    if not path:
        raise SmtpReply("501 5.1.3 Empty recipient")
    if path.lower() == "postmaster":  # RFC 5321 §4.5.1: unqualified postmaster
        raise SmtpReply("550 5.1.1 Use a fully qualified postmaster address")
    rp = RcptParams(check_address(path))
    for k, v in _params(words).items():
        if k == "NOTIFY" and dsn:  # RFC 3461 §4.1
            vals = [x.upper() for x in (v or "").split(",")]
            if vals == ["NEVER"]:
                rp.notify = "NEVER"
            elif vals and all(x in NOTIFY_VALUES for x in vals) and len(set(vals)) == len(vals):
                rp.notify = ",".join(vals)
            else:
                raise SmtpReply("501 5.5.4 NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY")
        elif k == "ORCPT" and dsn:  # RFC 3461 §4.2: addr-type ";" xtext
            atype, semi, xt = (v or "").partition(";")
            if not semi or not atype or len(v or "") > 500:
                raise SmtpReply("501 5.5.4 ORCPT must be addr-type;xtext")
            rp.orcpt = f"{atype.lower()};{xtext_decode(xt)}"
        else:
            raise SmtpReply(f"555 5.5.4 RCPT parameter {k} not supported")
    return rp


def wants(notify: str | None, what: str) -> bool:
    """Does a recipient's NOTIFY ask for `what`? Absent NOTIFY means FAILURE,DELAY (RFC 3461 §4.1, our choice)."""
    if notify is None:
        return what in ("FAILURE", "DELAY")
    return what in notify.split(",")


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()
