"""Turn one validated extraction record into plain tuples for the staging tables.

Pure: no I/O. Columns are located by header name (SPECS.md §5: "read the header"), so the
two Personne_activite layouts share one code path. A bad row yields a :class:`RowError`
with its line number and reason; the caller skips it and reports it.
"""

from __future__ import annotations

from operator import itemgetter

from annuaire.formats import (MAILBOX_TYPES, MSS_COLUMNS, OWN_EXTRA_COLUMN, FileKind, Layout, RowError,
                              canonical_address, check_pp, city_of, department_of, norm, row_hash,
                              valid_address)

MailboxTuple = tuple[object, ...]


class MailboxRows:
    """Extraction_Correspondance_MSSante (31 columns) and the operator file (+ Liste rouge)."""

    def __init__(self, layout: Layout) -> None:
        self.width = layout.width
        self._pos = [layout.index[c] for c in MSS_COLUMNS]
        self._lr = layout.index.get(OWN_EXTRA_COLUMN)
        self.own = layout.kind is FileKind.OWN

    def parse(self, line: int, raw: list[str]) -> MailboxTuple | RowError:
        if len(raw) != self.width:
            return RowError(line, f"expected {self.width} columns, found {len(raw)}")
        f = [raw[i].strip() for i in self._pos]
        (typ, addr, id_type, id_pp, idnps, st_type, st_id, service, civ, family, given, cat, cat_l,
         prof, prof_l, sf, sf_l, demat, org, enseigne, l2, l3, l4n, l4c, l4t, l4s, l5, l6, cp, dept,
         country) = f
        if typ not in MAILBOX_TYPES:
            return RowError(line, f"bad mailbox type {typ[:10]!r} (PER, ORG, APP or CAB)")
        if not valid_address(addr):
            return RowError(line, f"bad mailbox address {addr[:80]!r}")
        if typ == "PER" or id_type or id_pp or idnps:
            reason = check_pp(id_type, id_pp, idnps)
            if reason:
                return RowError(line, reason)
        if st_id and not st_id.isalnum():
            return RowError(line, f"bad structure identifier {st_id[:40]!r}")
        if demat not in ("", "O", "N"):
            return RowError(line, f"bad Dématérialisation value {demat[:5]!r} (O/N)")
        liste_rouge = False
        if self._lr is not None:
            lr = raw[self._lr].strip()
            if lr not in ("", "O", "N"):
                return RowError(line, f"bad Liste rouge value {lr[:5]!r} (O/N)")
            liste_rouge = lr == "O"
        city = city_of(l6, cp)
        return (line, canonical_address(addr), typ, id_type, id_pp, idnps, st_type, st_id, service, civ,
                family, given, cat, cat_l, prof, prof_l, sf, sf_l, demat == "O", org, enseigne, l2, l3, l4n,
                l4c, l4t, l4s, l5, l6, cp, department_of(cp, dept), country, norm(family), norm(given),
                norm(org or enseigne), norm(prof_l), norm(city), row_hash(f), liste_rouge)


_PP = ("Type d'identifiant PP", "Identifiant PP", "Identification nationale PP",
       "Code civilité d'exercice", "Libellé civilité exercice", "Code civilité", "Nom d'exercice",
       "Prénom d'exercice", "Code profession", "Libellé profession", "Code catégorie professionnelle",
       "Libellé catégorie professionnelle")
_ST = ("Identifiant technique de la structure", "Numéro SIRET site", "Numéro SIREN site",
       "Numéro FINESS site", "Numéro FINESS établissement juridique", "Raison sociale site",
       "Enseigne commerciale site", "Numéro Voie (coord. structure)",
       "Indice répétition voie (coord. Structure)", "Libellé type de voie (coord. structure)",
       "Libellé Voie (coord. structure)", "Complément destinataire (coord. structure)",
       "Complément point géographique (coord. structure)", "Mention distribution (coord. structure)",
       "Bureau cedex (coord. structure)", "Code postal (coord. structure)",
       "Code commune (coord. structure)", "Libellé commune (coord. structure)",
       "Libellé pays (coord. structure)", "Téléphone (coord. structure)",
       "Adresse e-mail (coord. structure)", "Code département (coord. structure)")
_AC = ("Code mode exercice", "Libellé mode exercice", "Code secteur d'activité",
       "Libellé secteur d'activité", "Code fonction", "Libellé fonction", "Code genre d'activité",
       "Libellé genre d'activité", "Code section tableau pharmaciens")
_SF = ("Code type savoir-faire", "Libellé type savoir-faire", "Code savoir-faire", "Libellé savoir-faire")


class ActivityRows:
    """PS_LibreAcces_Personne_activite (56 columns, or the layout without savoir-faire)
    and the separate savoir-faire file of the newer releases.

    Hot path (2 million rows): fields are picked with C-level itemgetters; person fields are
    hashed once per run of rows of the same professional; structures pass a bounded
    "recently seen" filter (the SQL dedupe catches the rest). Values are taken as written in
    the file (the extraction is not padded); identifiers are checked strictly.
    """

    def __init__(self, layout: Layout) -> None:
        self.width = layout.width
        self.kind = layout.kind
        ix = layout.index
        full = self.kind is FileKind.PERSONNE_ACTIVITE
        self._pp = itemgetter(*[ix[c] for c in (_PP if full else _PP[:3])])
        self._st = itemgetter(*[ix[c] for c in _ST]) if full else None
        self._ac = itemgetter(*[ix[c] for c in _AC]) if full else None
        self.has_sf = all(c in ix for c in _SF)
        self._sf = itemgetter(*[ix[c] for c in _SF]) if self.has_sf else None
        self._last_idnps = ""
        self._last_pp: tuple[str, ...] = ()
        self._seen_struct: dict[str, tuple[str, ...]] = {}

    def parse(self, line: int, raw: list[str]) -> (
            tuple[tuple[object, ...] | None, tuple[object, ...] | None, tuple[object, ...] | None,
                  tuple[object, ...] | None] | RowError):
        """Return (practitioner, structure, activity, savoir_faire) tuples (None when absent/repeated)."""
        if len(raw) != self.width:
            return RowError(line, f"expected {self.width} columns, found {len(raw)}")
        pp: tuple[str, ...] = self._pp(raw)
        idnps = pp[2]
        prac: tuple[object, ...] | None = None
        if idnps != self._last_idnps or pp != self._last_pp:
            reason = check_pp(pp[0], pp[1], idnps)
            if reason:
                return RowError(line, reason)
            if self._st is not None:  # consecutive rows of one professional: stage the person once
                prac = (line, idnps, pp[0], pp[1], pp[3], pp[4], pp[5], pp[6], pp[7], pp[8], pp[9],
                        pp[10], pp[11], norm(pp[6]), norm(pp[7]), row_hash(pp))
            self._last_idnps, self._last_pp = idnps, pp
        struct = act = None
        if self._st is not None and self._ac is not None:
            st: tuple[str, ...] = self._st(raw)
            sid = st[0]
            if sid:
                seen = self._seen_struct
                if seen.get(sid) != st:
                    if not sid.isalnum() or len(sid) > 40:
                        return RowError(line, f"bad structure identifier {sid[:40]!r}")
                    if len(seen) >= 50_000:
                        seen.clear()
                    seen[sid] = st
                    street = " ".join(x for x in (st[7], st[8], st[9], st[10]) if x)
                    complement = " ".join(x for x in (st[11], st[12], st[13]) if x)
                    cp = st[15]
                    city = st[17] or city_of(st[14], cp)
                    struct = (line, sid, st[1], st[2], st[3], st[4], st[5], st[6], street, complement, cp,
                              st[16], city, st[18], st[19], st[20], department_of(cp, st[21]),
                              norm(st[5] or st[6]), norm(city), row_hash(st))
            ac: tuple[str, ...] = self._ac(raw)
            act = (line, idnps, row_hash((idnps, sid, st[1], st[3], *ac)), sid, *ac[:8])
        sf_t = None
        if self._sf is not None:
            sf: tuple[str, ...] = self._sf(raw)
            if sf[2]:
                sf_t = (line, idnps, row_hash((idnps, *sf)), *sf)
        return prac, struct, act, sf_t
