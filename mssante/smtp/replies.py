"""SMTP replies with enhanced status codes, each traced to its rule.

RFC 2034 §3 (ENHANCEDSTATUSCODES): every reply except the greeting and the EHLO/HELO reply carries an
enhanced code; RFC 3463 defines them. Replies sent by aiosmtpd's own code lack them: `with_enhanced()`
adds the class default so that the wire is always consistent.
"""

from __future__ import annotations

import re

# Code -> enhanced code added to replies that lack one (RFC 3463 §3.1 / RFC 5248 registry).
DEFAULT_ENHANCED: dict[str, str] = {
    "211": "2.0.0", "214": "2.0.0", "221": "2.0.0", "235": "2.7.0", "250": "2.0.0", "251": "2.1.5", "252": "2.5.0",
    "421": "4.3.0", "450": "4.2.0", "451": "4.3.0", "452": "4.3.1", "454": "4.7.0", "455": "4.5.4",
    "500": "5.5.2", "501": "5.5.4", "502": "5.5.1", "503": "5.5.1", "504": "5.5.4", "530": "5.7.0",
    "534": "5.7.9", "535": "5.7.8", "538": "5.7.11", "550": "5.0.0", "551": "5.1.6", "552": "5.3.4",
    "553": "5.1.3", "554": "5.0.0", "555": "5.5.4",
}

_HAS_ENHANCED = re.compile(r"^[245]\d\d[ -][245]\.\d{1,3}\.\d{1,3}(?: |$)")
_CODE = re.compile(r"^([245]\d\d)([ -])(.*)$", re.S)


def with_enhanced(line: str) -> str:
    """Add the default enhanced code to one reply line that has none."""
    if _HAS_ENHANCED.match(line):
        return line
    m = _CODE.match(line)
    if m is None:
        return line
    enhanced = DEFAULT_ENHANCED.get(m.group(1))
    if enhanced is None:
        return line
    text = m.group(3)
    if text.startswith("Error: "):  # aiosmtpd's wording
        text = text[7:]
    return f"{m.group(1)}{m.group(2)}{enhanced} {text}"


class SmtpReply(Exception):
    """A refusal carrying its wire reply (raised by policies, sent by the protocol)."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply

    @property
    def code(self) -> int:
        return int(self.reply[:3])


# RFC 3207 §4: a server requiring TLS answers 530 to commands other than NOOP, EHLO, STARTTLS, QUIT.
STARTTLS_FIRST = "530 5.7.0 Must issue a STARTTLS command first"
# RFC 4954 §6: 530 when authentication is required.
AUTH_REQUIRED = "530 5.7.0 Authentication required"
AUTH_OK = "235 2.7.0 Authentication successful"
AUTH_INVALID = "535 5.7.8 Authentication credentials invalid"
AUTH_TEMPFAIL = "454 4.7.0 Temporary authentication failure"
AUTH_NEEDS_TLS = "538 5.7.11 Encryption required for requested authentication mechanism"
AUTH_CANCELLED = "501 5.7.0 Authentication cancelled"
OK = "250 2.0.0 OK"
SENDER_OK = "250 2.1.0 Sender OK"
RCPT_OK = "250 2.1.5 Recipient OK"
START_DATA = "354 End data with <CR><LF>.<CR><LF>"
# RFC 5321 §4.5.3.1.8 / §4.5.3.1.10: too many recipients is 452 (the client retries the rest later).
TOO_MANY_RCPTS = "452 4.5.3 Too many recipients"
# RFC 1870 §6: SIZE exceeded is 552 (RFC 3463 5.3.4 message too big for system).
TOO_BIG = "552 5.3.4 Message size exceeds fixed maximum message size"
HEADER_TOO_BIG = "552 5.3.4 Message header exceeds the maximum header size"
# RFC 5321 §4.5.3.1.6: text lines are at most 1000 octets with CRLF.
LINE_TOO_LONG = "500 5.5.2 Line too long (RFC 5321 4.5.3.1.6)"
# RFC 5321 §2.3.8 / §4.1.1.4: CR and LF appear only together as the line ending (SMTP smuggling).
BARE_CR_LF = "550 5.6.11 Bare CR or LF in message data refused (RFC 5321 2.3.8)"
TOO_MANY_ERRORS = "421 4.7.0 Too many errors, closing connection"
TOO_MANY_CONNECTIONS = "421 4.7.0 Too many connections from your address, try later"
TIMEOUT = "421 4.4.2 Timeout, closing connection"
SHUTTING_DOWN = "421 4.3.2 Service shutting down"
TEMPFAIL = "451 4.3.0 Temporary failure, please retry (reference {ref})"
