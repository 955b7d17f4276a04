"""ENVELOPE and BODYSTRUCTURE computed once from a message's raw bytes (RFC 3501 §7.4.2).

No I/O. `summarize(raw)` returns two JSON-ready values that the store keeps next to the
message (mssante.store.models.Message.envelope / .bodystructure), so that FETCH ENVELOPE
and FETCH BODYSTRUCTURE never re-parse the blob.

Envelope JSON: a list of 10 items [date, subject, from, sender, reply_to, to, cc, bcc,
in_reply_to, message_id]; strings are the raw header values (RFC 2047 encoded words kept,
as RFC 3501 requires) or None; the address fields are None or a list of
[name, adl, mailbox, host] (group syntax as RFC 3501 §7.4.2 describes it). Sender and
Reply-To default to From, as the RFC requires.

Bodystructure JSON: a dict per part:
  {"type", "subtype", "params": [[k, v], ...], "id", "description", "encoding", "size",
   "lines" (text/* and message/rfc822), "md5", "disposition": [type, [[k, v]...]] | None,
   "language", "location", "hdr": [start, end], "body": [start, end],
   "parts": [...] (multipart), "envelope" + "message" (message/rfc822)}
Offsets index the raw message, so BODY[1.2.MIME] and BODY[2.TEXT] are byte slices.
"""

from __future__ import annotations

import re
from typing import Any

# Limits that bound the work on hostile input (a MIME bomb of nested parts).
MAX_DEPTH = 32
MAX_PARTS = 2000

Json = Any
ENVELOPE_VERSION = 1

_BOUNDARY_CHARS = re.compile(rb"^[0-9A-Za-z'()+_,\-./:=? ]{1,70}$")


def _find_header_end(raw: bytes, start: int, end: int) -> tuple[int, int]:
    """(end of header block excluding the blank line, start of body)."""
    if raw.startswith(b"\r\n", start) or raw.startswith(b"\n", start) and start < end:
        # An empty header block: the body starts right after the blank line.
        skip = 2 if raw.startswith(b"\r\n", start) else 1
        return start, min(start + skip, end)
    i = raw.find(b"\n\r\n", start, end)
    j = raw.find(b"\n\n", start, end)
    cands = []
    if i >= 0:
        cands.append((i + 1, i + 3))
    if j >= 0:
        cands.append((j + 1, j + 2))
    if not cands:
        return end, end
    return min(cands)


def parse_headers(block: bytes) -> list[tuple[str, bytes]]:
    """Unfolded (lower-case name, raw value) pairs, in order. Lines without a colon are skipped."""
    out: list[tuple[str, bytes]] = []
    name: str | None = None
    value: list[bytes] = []
    for line in block.split(b"\n"):
        if line.endswith(b"\r"):
            line = line[:-1]
        if line[:1] in (b" ", b"\t") and name is not None:
            value.append(line)
            continue
        if name is not None:
            out.append((name, b"".join(value).strip()))
            name = None
        c = line.find(b":")
        if c <= 0:
            continue
        n = line[:c].strip()
        if not n or any(b < 33 or b > 126 for b in n):
            continue
        name = n.decode("ascii").lower()
        value = [line[c + 1 :]]
    if name is not None:
        out.append((name, b"".join(value).strip()))
    return out


def _text(v: bytes | None) -> str | None:
    if v is None:
        return None
    return v.decode("utf-8", "replace")


def _first(headers: list[tuple[str, bytes]], name: str) -> bytes | None:
    for n, v in headers:
        if n == name:
            return v
    return None


# --- RFC 5322 address lists -----------------------------------------------------------------


def _tokens(s: str) -> list[tuple[str, str]]:
    """Tokens: ('q', quoted), ('a', atom/dot-atom text), ('s', special), comments dropped."""
    out: list[tuple[str, str]] = []
    i, n = 0, len(s)
    while i < n:
        c = s[i]
        if c in " \t\r\n":
            i += 1
        elif c == '"':
            i += 1
            buf = []
            while i < n and s[i] != '"':
                if s[i] == "\\" and i + 1 < n:
                    i += 1
                buf.append(s[i])
                i += 1
            i += 1
            out.append(("q", "".join(buf)))
        elif c == "(":
            depth = 0
            while i < n:
                if s[i] == "\\":
                    i += 2
                    continue
                if s[i] == "(":
                    depth += 1
                elif s[i] == ")":
                    depth -= 1
                    if depth == 0:
                        i += 1
                        break
                i += 1
        elif c in "<>,:;@[]":
            if c == "[":
                j = s.find("]", i)
                j = n - 1 if j < 0 else j
                out.append(("a", s[i : j + 1]))
                i = j + 1
            else:
                out.append(("s", c))
                i += 1
        else:
            j = i
            while j < n and s[j] not in ' \t\r\n"(<>,:;@[]':
                j += 1
            out.append(("a", s[i:j]))
            i = j
    return out


def _addr(mailbox_tokens: list[tuple[str, str]], name: str | None) -> list[str | None]:
    text = "".join(v for _k, v in mailbox_tokens)
    if "@" in text:
        local, host = text.rsplit("@", 1)
    else:
        local, host = text, ""
    return [name, None, local or None, host or None]


def parse_addresses(value: bytes | None) -> list[list[str | None]] | None:
    """An RFC 5322 address-list as ENVELOPE address structures (RFC 3501 §7.4.2)."""
    if value is None:
        return None
    toks = _tokens(value.decode("utf-8", "replace"))
    out: list[list[str | None]] = []
    i = 0
    in_group = False
    phrase: list[tuple[str, str]] = []
    while i < len(toks):
        kind, v = toks[i]
        if kind == "s" and v == ":" and not in_group:
            out.append([None, None, " ".join(t for _k, t in phrase) or "", None])
            phrase = []
            in_group = True
        elif kind == "s" and v == ";" and in_group:
            if phrase:
                out.append(_addr(phrase, None))
                phrase = []
            out.append([None, None, None, None])
            in_group = False
        elif kind == "s" and v == "<":
            j = i + 1
            inner: list[tuple[str, str]] = []
            while j < len(toks) and not (toks[j][0] == "s" and toks[j][1] == ">"):
                inner.append(toks[j])
                j += 1
            # Drop an obsolete source route "@a,@b:" (RFC 5322 §4.4).
            if any(k == "s" and t == ":" for k, t in inner):
                idx = max(x for x, (k, t) in enumerate(inner) if k == "s" and t == ":")
                inner = inner[idx + 1 :]
            name = " ".join(t for _k, t in phrase) or None
            out.append(_addr(inner, name))
            phrase = []
            i = j
        elif kind == "s" and v == ",":
            if phrase:
                out.append(_addr(phrase, None))
            phrase = []
        else:
            phrase.append((kind, v))
        i += 1
    if phrase:
        out.append(_addr(phrase, None))
    if in_group:
        out.append([None, None, None, None])
    return out or None


def envelope_of(headers: list[tuple[str, bytes]]) -> list[Json]:
    """The ENVELOPE structure of RFC 3501 §7.4.2 as JSON."""
    frm = parse_addresses(_first(headers, "from"))
    sender = parse_addresses(_first(headers, "sender")) or frm
    reply_to = parse_addresses(_first(headers, "reply-to")) or frm
    return [
        _text(_first(headers, "date")),
        _text(_first(headers, "subject")),
        frm,
        sender,
        reply_to,
        parse_addresses(_first(headers, "to")),
        parse_addresses(_first(headers, "cc")),
        parse_addresses(_first(headers, "bcc")),
        _text(_first(headers, "in-reply-to")),
        _text(_first(headers, "message-id")),
    ]


# --- MIME header values -------------------------------------------------------------------


def _rfc2231_decode(v: str) -> str:
    m = re.match(r"^([^']*)'[^']*'(.*)$", v)
    data = m.group(2) if m else v
    charset = (m.group(1) if m else "") or "utf-8"
    raw = re.sub(r"%([0-9A-Fa-f]{2})", lambda g: chr(int(g.group(1), 16)), data).encode("latin-1", "replace")
    try:
        return raw.decode(charset, "replace")
    except LookupError:
        return raw.decode("utf-8", "replace")


def parse_params(value: bytes | None) -> tuple[str, list[list[str]]]:
    """'type/subtype; k=v; ...' -> (value lower-cased, [[k, v], ...]) with RFC 2231 continuations joined."""
    if value is None:
        return "", []
    s = value.decode("utf-8", "replace")
    parts: list[str] = []
    buf: list[str] = []
    inq = False
    i = 0
    while i < len(s):
        c = s[i]
        if inq:
            if c == "\\" and i + 1 < len(s):
                buf.append(s[i + 1])
                i += 2
                continue
            if c == '"':
                inq = False
            buf.append(c)
        elif c == '"':
            inq = True
            buf.append(c)
        elif c == ";":
            parts.append("".join(buf))
            buf = []
        elif c == "(":
            depth = 1
            i += 1
            while i < len(s) and depth:
                depth += {"(": 1, ")": -1}.get(s[i], 0)
                i += 1
            continue
        else:
            buf.append(c)
        i += 1
    parts.append("".join(buf))
    head = parts[0].strip().lower()
    params: list[list[str]] = []
    continued: dict[str, dict[int, tuple[str, bool]]] = {}
    for p in parts[1:]:
        if "=" not in p:
            continue
        k, v = p.split("=", 1)
        k, v = k.strip().lower(), v.strip()
        if not k:
            continue
        if len(v) >= 2 and v[0] == '"' and v[-1] == '"':
            v = v[1:-1]
        m = re.match(r"^(.+?)\*(\d+)(\*?)$", k)
        if m:
            continued.setdefault(m.group(1), {})[int(m.group(2))] = (v, bool(m.group(3)))
            continue
        if k.endswith("*"):
            params.append([k[:-1], _rfc2231_decode(v)])
            continue
        params.append([k, v])
    for k, segs in continued.items():
        out = []
        for n in sorted(segs):
            v, enc = segs[n]
            out.append(_rfc2231_decode(v if n else v) if enc else v)
        params.append([k, "".join(out)])
    return head, params


def _count_lines(raw: bytes, start: int, end: int) -> int:
    if end <= start:
        return 0
    n = raw.count(b"\n", start, end)
    if raw[end - 1 : end] != b"\n":
        n += 1
    return n


def _split_multipart(raw: bytes, start: int, end: int, boundary: bytes) -> list[tuple[int, int]]:
    """Part (start, end) ranges between boundary delimiter lines (RFC 2046 §5.1.1)."""
    delim = b"--" + boundary
    ranges: list[tuple[int, int]] = []
    pos = start
    cur: int | None = None
    while pos <= end:
        idx = raw.find(delim, pos, end)
        if idx < 0:
            break
        if idx != start and raw[idx - 1 : idx] != b"\n":
            pos = idx + 1
            continue
        after = idx + len(delim)
        is_close = raw.startswith(b"--", after)
        # The CRLF before the delimiter belongs to the delimiter.
        part_end = idx
        if part_end > start and raw[part_end - 1 : part_end] == b"\n":
            part_end -= 1
            if part_end > start and raw[part_end - 1 : part_end] == b"\r":
                part_end -= 1
        line_end = raw.find(b"\n", after, end)
        next_start = end if line_end < 0 else line_end + 1
        if cur is not None:
            ranges.append((cur, max(cur, part_end)))
            if len(ranges) > MAX_PARTS:
                break
        if is_close:
            cur = None
            break
        cur = next_start
        pos = next_start
    if cur is not None:
        ranges.append((cur, end))
    return ranges


class _Budget:
    def __init__(self) -> None:
        self.parts = 0


def _part(raw: bytes, start: int, end: int, depth: int, budget: _Budget, default_type: str,
          parsed: tuple[int, list[tuple[str, bytes]]] | None = None) -> dict[str, Json]:
    """`parsed`: (body start, headers) when the caller already parsed this part's header."""
    budget.parts += 1
    if parsed is None:
        hend, bstart = _find_header_end(raw, start, end)
        headers = parse_headers(raw[start:hend])
    else:
        bstart, headers = parsed
    ctype, params = parse_params(_first(headers, "content-type"))
    if "/" not in ctype:
        ctype = default_type
        params = [["charset", "us-ascii"]] if ctype == "text/plain" else []
    mtype, _, subtype = ctype.partition("/")
    node: dict[str, Json] = {
        "type": mtype,
        "subtype": subtype,
        "params": params,
        "hdr": [start, bstart],
        "body": [bstart, end],
        "md5": _text(_first(headers, "content-md5")),
        "language": _text(_first(headers, "content-language")),
        "location": _text(_first(headers, "content-location")),
    }
    disp = _first(headers, "content-disposition")
    if disp is not None:
        dtype, dparams = parse_params(disp)
        node["disposition"] = [dtype, dparams] if dtype else None
    else:
        node["disposition"] = None
    if mtype == "multipart" and depth < MAX_DEPTH and budget.parts < MAX_PARTS:
        boundary = dict((k, v) for k, v in params).get("boundary", "")
        bnd = boundary.encode("utf-8", "replace")
        children: list[dict[str, Json]] = []
        if bnd:
            child_default = "message/rfc822" if subtype == "digest" else "text/plain"
            for ps, pe in _split_multipart(raw, bstart, end, bnd):
                if budget.parts >= MAX_PARTS:
                    break
                children.append(_part(raw, ps, pe, depth + 1, budget, child_default))
        if not children:
            # RFC 3501 §6.4.5: a multipart has at least one part; an empty text part stands in.
            children.append({"type": "text", "subtype": "plain", "params": [["charset", "us-ascii"]], "id": None,
                             "description": None, "encoding": "7bit", "size": 0, "lines": 0, "md5": None,
                             "disposition": None, "language": None, "location": None,
                             "hdr": [bstart, bstart], "body": [bstart, bstart]})
        node["parts"] = children
        return node
    if mtype == "multipart":
        node["type"], node["subtype"] = "text", "plain"
    node["id"] = _text(_first(headers, "content-id"))
    node["description"] = _text(_first(headers, "content-description"))
    enc = _first(headers, "content-transfer-encoding")
    node["encoding"] = (enc.decode("ascii", "replace").strip().lower() if enc else "7bit") or "7bit"
    node["size"] = end - bstart
    if node["type"] == "text":
        node["lines"] = _count_lines(raw, bstart, end)
    elif ctype == "message/rfc822" and node["encoding"] in ("7bit", "8bit", "binary") and depth < MAX_DEPTH:
        ihend, _ib = _find_header_end(raw, bstart, end)
        node["envelope"] = envelope_of(parse_headers(raw[bstart:ihend]))
        node["message"] = _part(raw, bstart, end, depth + 1, budget, "text/plain")
        node["lines"] = _count_lines(raw, bstart, end)
    return node


def summarize(raw: bytes) -> tuple[list[Json], dict[str, Json]]:
    """(envelope_json, bodystructure_json) of a raw RFC 5322 message (bytes, CRLF or LF)."""
    hend, bstart = _find_header_end(raw, 0, len(raw))
    headers = parse_headers(raw[:hend])  # once, for the envelope and the top-level part
    return envelope_of(headers), _part(raw, 0, len(raw), 0, _Budget(), "text/plain", (bstart, headers))


def header_block(raw: bytes) -> bytes:
    """The top-level header including the blank line (BODY[HEADER])."""
    _h, b = _find_header_end(raw, 0, len(raw))
    return raw[:b]
