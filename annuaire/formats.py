"""The public Annuaire Santé bulk extraction formats (SPECS.md §5), as data.

Pure module: no I/O, no database. It knows the exact header strings, maps columns by
name (so both Personne_activite layouts are accepted), validates one row and turns it
into plain tuples ready for bulk loading.

Format facts (SPECS.md §5): UTF-8, ``|``-separated, one header row, a trailing ``|`` on
each line. Identifiers: RPPS = 11 digits, ADELI = 9 characters, IDNPS = ``8`` + RPPS or
``0`` + ADELI.
"""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

# --- exact headers (SPECS.md §5) -------------------------------------------------------------

MSS_COLUMNS: tuple[str, ...] = (
    "Type de BAL", "Adresse BAL", "Type Identifiant PP", "Identifiant PP",
    "Identification nationale PP", "Type identifiant structure", "Identification Structure",
    "Service de rattachement", "Civilité d'exercice", "Nom d'exercice", "Prénom d'exercice",
    "Catégorie profession", "Libellé de catégorie profession", "Code Profession",
    "Libellé Profession", "Code savoir-faire", "Libellé savoir-faire", "Dématérialisation",
    "Raison Sociale structure BAL", "Enseigne commerciale structure BAL",
    "L2COMPLEMENTLOCALISATION structure BAL", "L3COMPLEMENTDISTRIBUTION structure BAL",
    "L4NUMEROVOIE structure BAL", "L4COMPLEMENTNUMEROVOIE structure BAL",
    "NL4TYPEVOIE structure BAL", "L4LIBELLEVOIE structure BAL", "L5LIEUDITMENTION structure BAL",
    "L6LIGNEACHEMINEMENT structure BAL", "Code postal structure BAL",
    "Département structure BAL", "Pays structure BAL",
)
assert len(MSS_COLUMNS) == 31

#: Operator-side file: the 31 public columns plus the liste-rouge flag (docs/annuaire.md).
#: The public extraction never contains liste-rouge mailboxes; an operator knows its own.
OWN_EXTRA_COLUMN = "Liste rouge"
OWN_COLUMNS: tuple[str, ...] = MSS_COLUMNS + (OWN_EXTRA_COLUMN,)

PA_COLUMNS: tuple[str, ...] = (
    "Type d'identifiant PP", "Identifiant PP", "Identification nationale PP",
    "Code civilité d'exercice", "Libellé civilité exercice", "Code civilité", "Libellé civilité",
    "Nom d'exercice", "Prénom d'exercice", "Code profession", "Libellé profession",
    "Code catégorie professionnelle", "Libellé catégorie professionnelle",
    "Code type savoir-faire", "Libellé type savoir-faire", "Code savoir-faire",
    "Libellé savoir-faire", "Code mode exercice", "Libellé mode exercice", "Numéro SIRET site",
    "Numéro SIREN site", "Numéro FINESS site", "Numéro FINESS établissement juridique",
    "Identifiant technique de la structure", "Raison sociale site", "Enseigne commerciale site",
    "Complément destinataire (coord. structure)",
    "Complément point géographique (coord. structure)", "Numéro Voie (coord. structure)",
    "Indice répétition voie (coord. Structure)", "Code type de voie (coord. structure)",
    "Libellé type de voie (coord. structure)", "Libellé Voie (coord. structure)",
    "Mention distribution (coord. structure)", "Bureau cedex (coord. structure)",
    "Code postal (coord. structure)", "Code commune (coord. structure)",
    "Libellé commune (coord. structure)", "Code pays (coord. structure)",
    "Libellé pays (coord. structure)", "Téléphone (coord. structure)",
    "Téléphone 2 (coord. structure)", "Télécopie (coord. structure)",
    "Adresse e-mail (coord. structure)", "Code département (coord. structure)",
    "Libellé département (coord. structure)", "Ancien identifiant de la structure",
    "Autorité d'enregistrement", "Code secteur d'activité", "Libellé secteur d'activité",
    "Code section tableau pharmaciens", "Libellé section tableau pharmaciens", "Code fonction",
    "Libellé fonction", "Code genre d'activité", "Libellé genre d'activité",
)
assert len(PA_COLUMNS) == 56

PA_SAVOIR_FAIRE_COLUMNS: tuple[str, ...] = (
    "Code type savoir-faire", "Libellé type savoir-faire", "Code savoir-faire", "Libellé savoir-faire",
)
#: Newer releases move the savoir-faire columns to a separate file (SPECS.md §5).
PA_COLUMNS_NO_SF: tuple[str, ...] = tuple(c for c in PA_COLUMNS if c not in PA_SAVOIR_FAIRE_COLUMNS)

#: The separate savoir-faire file of the newer layout.
SF_COLUMNS: tuple[str, ...] = (
    "Type d'identifiant PP", "Identifiant PP", "Identification nationale PP", "Nom d'exercice",
    "Prénom d'exercice", "Code profession", "Libellé profession", "Code catégorie professionnelle",
    "Libellé catégorie professionnelle", *PA_SAVOIR_FAIRE_COLUMNS,
)


class FileKind(str, Enum):
    MSSANTE = "mssante"            # Extraction_Correspondance_MSSante_*
    OWN = "own"                    # operator-side mailbox file (public columns + Liste rouge)
    PERSONNE_ACTIVITE = "activite"  # PS_LibreAcces_Personne_activite_* (either layout)
    SAVOIR_FAIRE = "savoirfaire"   # PS_LibreAcces_SavoirFaire_* (newer layout)


class FormatError(Exception):
    """The file as a whole is unusable (header, encoding, archive): abort that file."""


@dataclass(frozen=True, slots=True)
class RowError:
    line: int
    reason: str


@dataclass(frozen=True, slots=True)
class Layout:
    kind: FileKind
    columns: tuple[str, ...]
    index: dict[str, int]

    @property
    def width(self) -> int:
        return len(self.columns)

    def has(self, name: str) -> bool:
        return name in self.index


def split_line(line: str) -> list[str]:
    """Split one record; the trailing ``|`` yields an empty last field that is dropped."""
    if line.endswith("\r\n"):
        line = line[:-2]
    elif line.endswith("\n"):
        line = line[:-1]
    parts = line.split("|")
    if parts and parts[-1] == "":
        parts.pop()
    return parts


def detect_layout(header: str) -> Layout:
    """Map the header line to a known layout, by column names (SPECS.md §5)."""
    cols = tuple(c.strip() for c in split_line(header.lstrip("\ufeff")))
    for kind, expected in ((FileKind.MSSANTE, MSS_COLUMNS), (FileKind.OWN, OWN_COLUMNS),
                           (FileKind.PERSONNE_ACTIVITE, PA_COLUMNS),
                           (FileKind.SAVOIR_FAIRE, SF_COLUMNS)):
        if cols == expected:
            return Layout(kind, cols, {c: i for i, c in enumerate(cols)})
    # Personne_activite: accept any column order / the savoir-faire-less layout, by name.
    if set(PA_COLUMNS_NO_SF) <= set(cols) and len(set(cols)) == len(cols):
        return Layout(FileKind.PERSONNE_ACTIVITE, cols, {c: i for i, c in enumerate(cols)})
    if set(MSS_COLUMNS) <= set(cols) and len(set(cols)) == len(cols):
        kind = FileKind.OWN if OWN_EXTRA_COLUMN in cols else FileKind.MSSANTE
        return Layout(kind, cols, {c: i for i, c in enumerate(cols)})
    shown = "|".join(cols[:4])
    raise FormatError(f"unrecognised header ({len(cols)} columns, starting {shown!r}): "
                      "not an Annuaire Santé MSSanté or Personne_activite extraction")


# --- normalisation and validation -----------------------------------------------------------

def _build_fold_table() -> dict[int, str]:
    table: dict[int, str] = {}
    for cp in range(0xC0, 0x250):
        ch = chr(cp)
        base = "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c))
        if base != ch and base.isascii():
            table[cp] = base
    table.update({ord("œ"): "oe", ord("Œ"): "OE", ord("æ"): "ae", ord("Æ"): "AE", ord("ß"): "ss"})
    return table


_FOLD = _build_fold_table()


@functools.lru_cache(maxsize=1 << 16)
def norm(text: str) -> str:
    """Unaccented lowercase form used by the search columns (é -> e, œ -> oe); cached, names repeat."""
    if text.isascii():
        return text.lower().strip()
    out = text.translate(_FOLD)
    if not out.isascii():  # rare scripts: full decomposition
        out = "".join(ch for ch in unicodedata.normalize("NFKD", out) if not unicodedata.combining(ch))
    return out.lower().strip()


RPPS_RE = re.compile(r"[0-9]{11}")
ADELI_RE = re.compile(r"(?:[0-9]{2}|2[AB])[0-9]{7}")  # department first; 2A/2B for Corsica
IDNPS_RE = re.compile(r"8[0-9]{11}|0(?:[0-9]{2}|2[AB])[0-9]{7}")
STRUCT_RE = re.compile(r"[0-9A-Za-z]{1,40}")
# A pragmatic address check: local@domain, no spaces/controls/separators, bounded (RFC 5321 §4.5.3.1).
ADDR_RE = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                     r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+")
MAILBOX_TYPES = frozenset({"PER", "ORG", "APP", "CAB"})


def valid_address(addr: str) -> bool:
    return len(addr) <= 254 and ADDR_RE.fullmatch(addr) is not None


def canonical_address(addr: str) -> str:
    return addr.strip().lower()


def idnps_of(value: str) -> str | None:
    """Accept an IDNPS, an RPPS (11 digits) or an ADELI (9 chars); return the IDNPS (SPECS.md §5)."""
    v = value.strip()
    if IDNPS_RE.fullmatch(v):
        return v
    if RPPS_RE.fullmatch(v):
        return "8" + v
    if ADELI_RE.fullmatch(v):
        return "0" + v
    return None


def check_pp(type_id: str, ident: str, idnps: str) -> str | None:
    """Validate the PP triplet; return a reason or None. IDNPS = type + id (SPECS.md §5)."""
    if type_id == "8":
        if not RPPS_RE.fullmatch(ident):
            return f"bad RPPS identifier {ident[:20]!r}"
    elif type_id == "0":
        if not ADELI_RE.fullmatch(ident):
            return f"bad ADELI identifier {ident[:20]!r}"
    else:
        return f"bad identifier type {type_id[:5]!r}"
    if idnps != type_id + ident:
        return f"IDNPS {idnps[:20]!r} is not type+identifier"
    return None


_blake2b = hashlib.blake2b


def row_hash(fields: Sequence[str]) -> int:
    """A stable signed 64-bit content hash of a row (incremental import compares these)."""
    return int.from_bytes(_blake2b("\x1f".join(fields).encode(), digest_size=8).digest(), "big", signed=True)


def line_hash(raw: bytes) -> int:
    """``row_hash`` of a raw line (UTF-8 bytes, no line end) whose fields are all taken in file order,
    without decoding or splitting it: equal to ``row_hash(split(line))`` when no field has
    surrounding blanks (the extractions are not padded; a padded line simply misses and is parsed)."""
    if raw[-1:] == b"|":
        raw = raw[:-1]
    return int.from_bytes(_blake2b(raw.replace(b"|", b"\x1f"), digest_size=8).digest(), "big", signed=True)


def city_of(ligne_acheminement: str, code_postal: str) -> str:
    """'75013 PARIS CEDEX 13' -> 'PARIS CEDEX 13'; the postal code prefix is dropped."""
    s = ligne_acheminement.strip()
    if code_postal and s.startswith(code_postal):
        s = s[len(code_postal):].strip()
    elif s[:5].isdigit():
        s = s[5:].strip()
    return s


def department_of(code_postal: str, explicit: str = "") -> str:
    if explicit:
        return explicit.strip()[:3]
    cp = code_postal.strip()
    if len(cp) != 5 or not cp.isdigit():
        return ""
    if cp.startswith("97") or cp.startswith("98"):
        return cp[:3]
    if cp.startswith("20"):
        return "2A" if int(cp) < 20200 else "2B"
    return cp[:2]
