"""The MSSanté liste blanche: hardened parser, index, and writer of the real ANS XML format.

Format (SPECS.md §1; ANS file ``listeblanchemssante.xml``, namespace ``https://listeblanche.mssante.fr/schema``)::

    <ListeBlancheMSSante><DateDeGeneration/><ListeDomaines><Domaine>
      <Nom/><Description/><DNCertificatOperateur/><ResponsableContact/><SupportContact/><DateMAJ/>
    </Domaine>…</ListeDomaines></ListeBlancheMSSante>

One ``<Domaine>`` per (domain, MTA certificate DN) pair.

Hardening (CONTRACTS.md XML rule): size checked before parsing; UTF-8/ASCII only, so that a byte scan
for ``<!DOCTYPE``/``<!ENTITY`` is exact, and any DOCTYPE is refused (no DTD, no entities: billion laughs,
XXE); lxml with resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False.

Truncation (SPECS.md §1: the published file lacks ``</ListeBlancheMSSante>``): a document whose only
defect is the missing root end tag *after* a closed ``</ListeDomaines>`` is accepted with the problem
``ROOT_NOT_CLOSED``. Any other truncation (inside a ``<Domaine>``, or between two ``<Domaine>`` before
``</ListeDomaines>``) is refused: nothing proves the list is complete. See docs/trust.md.

Pure: bytes in, objects out; no I/O, no clock.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from lxml import etree

from mssante.trust.dn import DistinguishedName, DnSyntaxError, parse_dn
from mssante.trust.errors import TrustError

NAMESPACE = "https://listeblanche.mssante.fr/schema"
DEFAULT_MAX_BYTES = 32 * 1024 * 1024  # the real list is 3.7 MB for 6,554 entries
_NS = "{" + NAMESPACE + "}"
_FIELDS = ("Nom", "Description", "DNCertificatOperateur", "ResponsableContact", "SupportContact", "DateMAJ")
_FIELD_TAGS = {**{_NS + f: f for f in _FIELDS}, **{f: f for f in _FIELDS}}  # with or without the namespace
# RFC 1035 §2.3.1 letters/digits/hyphen labels (A-labels for IDNs), at least two labels.
_DOMAIN_RE = re.compile(
    r"^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+$"
)
_ENCODING_RE = re.compile(rb"""^<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")


class ListeBlancheErrorCode(StrEnum):
    TOO_LARGE = "TOO_LARGE"
    ENCODING = "ENCODING"
    DOCTYPE_FORBIDDEN = "DOCTYPE_FORBIDDEN"
    MALFORMED = "MALFORMED"
    TRUNCATED = "TRUNCATED"
    NOT_A_LISTE_BLANCHE = "NOT_A_LISTE_BLANCHE"


class ListeBlancheError(TrustError, ValueError):
    """The document is refused as a whole; `code` says why."""

    code: ListeBlancheErrorCode

    def __init__(self, code: ListeBlancheErrorCode, detail: str) -> None:
        super().__init__(code, detail)


class ProblemCode(StrEnum):
    ROOT_NOT_CLOSED = "ROOT_NOT_CLOSED"  # the real ANS file: accepted, reported
    UNEXPECTED_NAMESPACE = "UNEXPECTED_NAMESPACE"
    MISPLACED_ELEMENT = "MISPLACED_ELEMENT"  # a <Domaine> outside <ListeDomaines>: ignored
    BAD_GENERATION_DATE = "BAD_GENERATION_DATE"
    EMPTY_DOMAIN = "EMPTY_DOMAIN"
    INVALID_DOMAIN = "INVALID_DOMAIN"
    MISSING_DN = "MISSING_DN"
    MALFORMED_DN = "MALFORMED_DN"
    DUPLICATE_ENTRY = "DUPLICATE_ENTRY"


@dataclass(frozen=True, slots=True)
class Problem:
    """A defect that does not refuse the list; the entry concerned (if any) is left out of the index."""

    code: ProblemCode
    detail: str
    entry: int | None = None  # 1-based <Domaine> position


@dataclass(frozen=True, slots=True)
class Entry:
    domain: str  # lower-cased, trailing dot removed
    dn_text: str  # as written in the list
    dn: DistinguishedName | None  # None when malformed (then not indexed)
    description: str = ""
    responsable_contact: str = ""
    support_contact: str = ""
    date_maj: str = ""


@dataclass(frozen=True)
class ListeBlanche:
    generated: datetime | None
    entries: tuple[Entry, ...]
    problems: tuple[Problem, ...]
    sha256: str
    # domain -> canonical DNs allowed to send for it (only well-formed entries)
    by_domain: Mapping[str, frozenset[DistinguishedName]] = field(repr=False)

    @property
    def domains(self) -> frozenset[str]:
        return frozenset(self.by_domain)

    @property
    def distinct_dn_texts(self) -> frozenset[str]:
        return frozenset(e.dn_text for e in self.entries)

    @property
    def distinct_dns(self) -> frozenset[DistinguishedName]:
        return frozenset(dn for dns in self.by_domain.values() for dn in dns)


def normalise_domain(domain: str) -> str:
    """Lower case, no trailing dot, IDNs as A-labels (RFC 5890)."""
    d = domain.strip().rstrip(".").lower()
    if not d.isascii():
        try:
            d = d.encode("idna").decode("ascii")
        except UnicodeError:
            return d
    return d


def is_valid_domain(domain: str) -> bool:
    """A normalised domain name: LDH labels, at least two (RFC 1035 §2.3.1, A-labels for IDNs)."""
    return bool(_DOMAIN_RE.match(domain))


def _check_envelope(data: bytes, max_bytes: int) -> None:
    if len(data) > max_bytes:
        raise ListeBlancheError(ListeBlancheErrorCode.TOO_LARGE, f"{len(data)} bytes > limit {max_bytes}")
    head = data[:4]
    if head.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in head:
        raise ListeBlancheError(ListeBlancheErrorCode.ENCODING, "only UTF-8 is accepted")
    m = _ENCODING_RE.match(data[3:] if data.startswith(b"\xef\xbb\xbf") else data)
    if m and m.group(1).lower() not in (b"utf-8", b"utf8", b"us-ascii", b"ascii"):
        raise ListeBlancheError(ListeBlancheErrorCode.ENCODING, "only UTF-8 is accepted")
    # No DTD at all: this closes billion laughs, quadratic blowup and XXE (XML 1.0 keywords are case-sensitive).
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise ListeBlancheError(
            ListeBlancheErrorCode.DOCTYPE_FORBIDDEN, "DOCTYPE/ENTITY declarations are refused"
        )


def _parse_date(text: str) -> datetime | None:
    try:
        d = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return d if d.tzinfo else d.replace(tzinfo=UTC)


def parse_liste_blanche(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> ListeBlanche:
    """Parse and index a liste blanche. Raises `ListeBlancheError`; non-fatal defects land in `.problems`."""
    _check_envelope(data, max_bytes)
    parser = etree.XMLPullParser(
        events=("start", "end"),
        tag=("{*}ListeBlancheMSSante", "{*}ListeDomaines", "{*}Domaine", "{*}DateDeGeneration"),
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )
    problems: list[Problem] = []
    raw_entries: list[dict[str, str]] = []
    generated_text: str | None = None
    root_seen = domaines_closed = in_domaine = False

    def drain() -> None:
        nonlocal root_seen, domaines_closed, in_domaine, generated_text
        for event, el in parser.read_events():
            local = el.tag.rpartition("}")[2]
            if event == "start":
                if local == "Domaine":
                    in_domaine = True
                elif local == "ListeBlancheMSSante" and not root_seen:
                    root_seen = True
                    if el.getparent() is not None:
                        raise ListeBlancheError(
                            ListeBlancheErrorCode.NOT_A_LISTE_BLANCHE, "misplaced root element"
                        )
                    if el.tag != _NS + local:
                        problems.append(
                            Problem(ProblemCode.UNEXPECTED_NAMESPACE, "root not in the ANS namespace")
                        )
            elif local == "Domaine":
                parent = el.getparent()
                if parent is None or parent.tag.rpartition("}")[2] != "ListeDomaines":
                    problems.append(
                        Problem(ProblemCode.MISPLACED_ELEMENT, "<Domaine> outside <ListeDomaines>")
                    )
                    in_domaine = False
                    continue
                rec = {}
                for c in el:
                    f = _FIELD_TAGS.get(c.tag)
                    if f is not None:
                        rec[f] = c.text or ""
                raw_entries.append(rec)
                in_domaine = False
                el.clear()
                parent.remove(el)  # keep memory flat: drop processed entries
            elif local == "ListeDomaines":
                domaines_closed = True
            elif local == "DateDeGeneration":
                generated_text = el.text or ""

    try:
        parser.feed(data)  # size already bounded; libxml2 parses incrementally anyway
        drain()
        root = parser.close()
        drain()
        if etree.QName(root).localname != "ListeBlancheMSSante":
            raise ListeBlancheError(
                ListeBlancheErrorCode.NOT_A_LISTE_BLANCHE, "root is not <ListeBlancheMSSante>"
            )
    except etree.XMLSyntaxError as exc:
        if not root_seen or not _ends_at_eof(exc, data):
            raise ListeBlancheError(ListeBlancheErrorCode.MALFORMED, _short(exc)) from None
        if in_domaine:
            raise ListeBlancheError(
                ListeBlancheErrorCode.TRUNCATED, "document ends inside a <Domaine>"
            ) from None
        if not domaines_closed:
            raise ListeBlancheError(
                ListeBlancheErrorCode.TRUNCATED, "document ends before </ListeDomaines>"
            ) from None
        tail = data[data.rfind(b"</ListeDomaines>") + len(b"</ListeDomaines>") :]
        if tail.strip():
            # only the exact ANS defect (no root end tag at all) is tolerated; a cut end tag is not
            raise ListeBlancheError(
                ListeBlancheErrorCode.TRUNCATED, "document ends after </ListeDomaines> inside other markup"
            ) from None
        # SPECS.md §1: the ANS file stops right after </ListeDomaines>; accepted deliberately, reported.
        problems.append(Problem(ProblemCode.ROOT_NOT_CLOSED, "missing </ListeBlancheMSSante> (accepted)"))
    if not domaines_closed:
        raise ListeBlancheError(ListeBlancheErrorCode.NOT_A_LISTE_BLANCHE, "no <ListeDomaines> element")

    generated = None
    if generated_text is not None:
        generated = _parse_date(generated_text)
        if generated is None:
            problems.append(
                Problem(ProblemCode.BAD_GENERATION_DATE, "DateDeGeneration is not an ISO 8601 date")
            )
    entries, by_domain = _index(raw_entries, problems)
    return ListeBlanche(
        generated=generated,
        entries=entries,
        problems=tuple(problems),
        sha256=hashlib.sha256(data).hexdigest(),
        by_domain=by_domain,
    )


def _ends_at_eof(exc: etree.XMLSyntaxError, data: bytes) -> bool:
    """Did the parser fail because the input stopped (truncation), rather than on bad markup inside it?"""
    if "Premature end of data" in str(exc):
        return True
    line, col = exc.position
    body = data.rstrip()
    last_nl = body.rfind(b"\n")
    lines = body.count(b"\n") + 1
    last_len = len(body[last_nl + 1 :].decode("utf-8", "replace"))
    return bool(line >= lines and col >= last_len)


def _short(exc: Exception) -> str:
    return str(exc).splitlines()[0][:200]


def _index(
    raw_entries: list[dict[str, str]], problems: list[Problem]
) -> tuple[tuple[Entry, ...], dict[str, frozenset[DistinguishedName]]]:
    dn_cache: dict[str, DistinguishedName | DnSyntaxError] = {}
    index: dict[str, set[DistinguishedName]] = {}
    entries: list[Entry] = []
    for pos, rec in enumerate(raw_entries, start=1):
        name = rec.get("Nom", "")
        domain = normalise_domain(name)
        dn_text = (rec.get("DNCertificatOperateur") or "").strip()
        dn: DistinguishedName | None = None
        if dn_text:
            cached = dn_cache.get(dn_text)
            if cached is None:
                try:
                    cached = parse_dn(dn_text)
                except DnSyntaxError as exc:
                    cached = exc
                dn_cache[dn_text] = cached
            if isinstance(cached, DnSyntaxError):
                problems.append(Problem(ProblemCode.MALFORMED_DN, f"{dn_text!r}: {cached}", pos))
            else:
                dn = cached
        entry = Entry(
            domain=domain,
            dn_text=dn_text,
            dn=dn,
            description=(rec.get("Description") or "").strip(),
            responsable_contact=(rec.get("ResponsableContact") or "").strip(),
            support_contact=(rec.get("SupportContact") or "").strip(),
            date_maj=(rec.get("DateMAJ") or "").strip(),
        )
        entries.append(entry)
        if not domain:
            problems.append(Problem(ProblemCode.EMPTY_DOMAIN, "empty <Nom>", pos))
            continue
        if not _DOMAIN_RE.match(domain):
            problems.append(
                Problem(ProblemCode.INVALID_DOMAIN, f"{name.strip()!r} is not a domain name", pos)
            )
            continue
        if not dn_text:
            problems.append(Problem(ProblemCode.MISSING_DN, f"{domain}: no DNCertificatOperateur", pos))
            continue
        if dn is None:
            continue
        dns = index.setdefault(domain, set())
        if dn in dns:
            problems.append(
                Problem(ProblemCode.DUPLICATE_ENTRY, f"{domain} listed twice for {dn_text!r}", pos)
            )
        dns.add(dn)
    return tuple(entries), {d: frozenset(v) for d, v in index.items()}


def build_liste_blanche_xml(entries: Iterable[tuple[str, str, str] | Entry], generated: datetime) -> bytes:
    """Write the real ANS format, well formed (with the root end tag the ANS file lacks).

    `entries` are (domain, dn, description) triples or `Entry` objects (whose contacts are kept).
    """
    stamp = _iso(generated)
    root = etree.Element(_NS + "ListeBlancheMSSante", nsmap={None: NAMESPACE})
    etree.SubElement(root, _NS + "DateDeGeneration").text = stamp
    domaines = etree.SubElement(root, _NS + "ListeDomaines")
    for item in entries:
        if isinstance(item, Entry):
            e = item
        else:
            domain, dn, description = item
            e = Entry(domain=domain, dn_text=dn, dn=None, description=description, date_maj=stamp)
        d = etree.SubElement(domaines, _NS + "Domaine")
        etree.SubElement(d, _NS + "Nom").text = e.domain
        etree.SubElement(d, _NS + "Description").text = e.description
        etree.SubElement(d, _NS + "DNCertificatOperateur").text = e.dn_text
        etree.SubElement(d, _NS + "ResponsableContact").text = e.responsable_contact
        etree.SubElement(d, _NS + "SupportContact").text = e.support_contact
        etree.SubElement(d, _NS + "DateMAJ").text = e.date_maj or stamp
    etree.indent(root, space="    ")
    out: bytes = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    return out


def _iso(d: datetime) -> str:
    if d.tzinfo is None:
        d = d.replace(tzinfo=UTC)
    return d.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
