"""Export this operator's own mailboxes: extraction format (``|`` text) and FHIR (Bundle).

Guarded against CSV/formula injection (OWASP "CSV Injection"): a value starting with
``= + - @ TAB CR`` is prefixed with ``'``. A value may not carry the separator or a line break:
``|``, CR and LF are replaced by a space and counted, so one value can never forge a column
or a row. The public extraction format has no liste-rouge column, so liste-rouge mailboxes are
left out unless ``with_liste_rouge`` is set, which switches to the operator format (+ ``Liste rouge``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TextIO

from annuaire import fhir_resources as fr
from annuaire.formats import MSS_COLUMNS, OWN_COLUMNS
from annuaire.models import Mailbox

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass
class ExportReport:
    rows: int = 0
    skipped_liste_rouge: int = 0
    sanitized_values: int = 0


def safe_value(value: str, report: ExportReport | None = None) -> str:
    """One field made safe for the ``|`` format and for spreadsheets."""
    out = value
    if any(c in out for c in "|\r\n"):
        out = out.replace("\r\n", " ").replace("|", " ").replace("\r", " ").replace("\n", " ")
        if report is not None:
            report.sanitized_values += 1
    if value.startswith(FORMULA_START):
        out = "'" + out
        if report is not None and not any(c in value for c in "|\r\n"):
            report.sanitized_values += 1
    return out


def mailbox_fields(m: Mailbox) -> list[str]:
    """The 31 public columns of one mailbox, in MSS_COLUMNS order (SPECS.md §5)."""
    return [m.type, m.address, m.id_type, m.id_pp, m.idnps, m.structure_id_type, m.structure_id, m.service,
            m.civility, m.family, m.given, m.category_code, m.category_label, m.profession_code,
            m.profession_label, m.sf_code, m.sf_label, "O" if m.dematerialisation else "N", m.org_name,
            m.enseigne, m.l2, m.l3, m.l4_number, m.l4_repeat, m.l4_type, m.l4_street, m.l5, m.l6,
            m.postal_code, m.department, m.country]


def export_extraction(mailboxes: Iterable[Mailbox], out: TextIO, *, with_liste_rouge: bool = False) -> ExportReport:
    report = ExportReport()
    header = OWN_COLUMNS if with_liste_rouge else MSS_COLUMNS
    out.write("|".join(header) + "|\n")
    for m in mailboxes:
        if m.liste_rouge and not with_liste_rouge:
            report.skipped_liste_rouge += 1
            continue
        fields = mailbox_fields(m)
        if with_liste_rouge:
            fields.append("O" if m.liste_rouge else "N")
        out.write("|".join(safe_value(f or "", report) for f in fields) + "|\n")
        report.rows += 1
    return report


def export_fhir(mailboxes: Iterable[Mailbox]) -> dict[str, Any]:
    """A ``collection`` Bundle: one Practitioner per professional (PER), one Organization per
    structure (ORG/APP/CAB), each carrying its mailboxes with the listeRouge flag (the national
    directory hides liste-rouge mailboxes; the operator must still declare them)."""
    per: dict[str, list[Mailbox]] = {}
    org: dict[str, list[Mailbox]] = {}
    for m in mailboxes:
        if m.type == "PER" and m.idnps:
            per.setdefault(m.idnps, []).append(m)
        else:
            org.setdefault(m.structure_id or m.address, []).append(m)
    entries: list[dict[str, Any]] = []
    for idnps, boxes in sorted(per.items()):
        entries.append({"resource": fr.practitioner(idnps, None, boxes)})
    for sid, boxes in sorted(org.items()):
        res = fr.organization(re.sub(r"[^A-Za-z0-9.-]", "-", sid)[:64], None, boxes)  # FHIR id syntax
        entries.append({"resource": res})
    return {"resourceType": "Bundle", "type": "collection", "timestamp": fr.instant(None), "entry": entries}
