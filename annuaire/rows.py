"""Turn one validated extraction record into plain tuples for the staging tables.

Pure: no I/O. Columns are located by header name (SPECS.md §5: "read the header"), so the
two Personne_activite layouts share one code path. A bad row yields a :class:`RowError`
with its line number and reason; the caller skips it and reports it.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass
from operator import itemgetter

from annuaire.formats import (MAILBOX_TYPES, MSS_COLUMNS, OWN_EXTRA_COLUMN, FileKind, Layout, RowError,
                              canonical_address, check_pp, city_of, department_of, norm, row_hash,
                              valid_address)
from annuaire.snapshot import Digests

# row_hash (formats.py), inlined in the 2-million-row loop below: same bytes, same value
_b2b = hashlib.blake2b
from_bytes = int.from_bytes

MailboxTuple = tuple[object, ...]
#: structure ids remembered while reading a Personne_activite file (first occurrence wins: a later
#: row of a structure already taken is not staged). ~80 bytes each: 1 M = ~80 MB at most. The synthetic
#: 2 M-row file lists 417k structures: all remembered, so a re-import never restages one that is
#: listed again with other content (past the bound, the SQL dedupe still decides, only slower).
STRUCTURES_REMEMBERED = 1_000_000


class MailboxRows:
    """Extraction_Correspondance_MSSante (31 columns) and the operator file (+ Liste rouge)."""

    def __init__(self, layout: Layout) -> None:
        self.width = layout.width
        self._pos = [layout.index[c] for c in MSS_COLUMNS]
        self._lr = layout.index.get(OWN_EXTRA_COLUMN)
        self.own = layout.kind is FileKind.OWN
        #: the file's columns are exactly the 31 public ones in order: formats.line_hash of a raw
        #: line equals the row_hash a parse would compute (the re-import fast path relies on it)
        self.canonical = layout.columns == MSS_COLUMNS

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


@dataclass(slots=True)
class KnownActivity:
    """Live digests for a Personne_activite / savoir-faire re-import (None: nothing to skip)."""

    practitioners: Digests | None = None  # active practitioners (keyed by idnps)
    structures: Digests | None = None     # keyed by structure id
    activities: Digests | None = None     # a set: (idnps, row_hash)
    savoir_faire: Digests | None = None   # a set: (idnps, row_hash)


class ActivityRows:
    """PS_LibreAcces_Personne_activite (56 columns, or the layout without savoir-faire)
    and the separate savoir-faire file of the newer releases.

    Hot path (2 million rows): fields are picked with C-level itemgetters; person fields are
    hashed once per run of rows of the same professional; structures pass a bounded "already
    taken" filter (first occurrence wins; the SQL dedupe catches the rest). Values are taken as
    written in the file (the extraction is not padded); identifiers are checked strictly.
    """

    def __init__(self, layout: Layout) -> None:
        self.width = layout.width
        self.kind = layout.kind
        ix = layout.index
        full = self.kind is FileKind.PERSONNE_ACTIVITE
        self._pp = itemgetter(*[ix[c] for c in (_PP if full else _PP[:3])])
        self._st = itemgetter(*[ix[c] for c in _ST]) if full else None
        # what identifies an activity, in row_hash order: IDNPS, structure id, SIRET, FINESS, _AC
        self._ac = itemgetter(*[ix[c] for c in (_PP[2], _ST[0], _ST[1], _ST[3], *_AC)]) if full else None
        self.has_sf = all(c in ix for c in _SF)
        self._sf = itemgetter(*[ix[c] for c in (_PP[2], *_SF)]) if self.has_sf else None
        self._last_idnps = ""
        self._last_pp: tuple[str, ...] = ()
        # structure ids already taken, as UTF-8 bytes (shared by parse and the raw-bytes fast path)
        self._seen_struct: set[bytes] = set()
        self._raw_last_pp: tuple[bytes, ...] = ()  # the fast path's own "same professional" run
        k = KnownActivity()
        self._kp, self._ks, self._ka, self._kf = k.practitioners, k.structures, k.activities, k.savoir_faire
        self.unchanged: Callable[[int, bytes], bool] | None = None

    def know(self, known: KnownActivity) -> None:
        """Re-import: a part whose hash is live is marked seen in ``known`` instead of returned.
        With the full layout and every digest present, also enables :attr:`unchanged`."""
        self._kp, self._ks = known.practitioners, known.structures
        self._ka, self._kf = known.activities, known.savoir_faire
        ok = self._st is not None and None not in (self._kp, self._ks, self._ka)
        self.unchanged = self._make_unchanged() if ok and (self._kf is not None or not self.has_sf) else None

    def _make_unchanged(self) -> Callable[[int, bytes], bool]:
        """The re-import fast path on a line's raw bytes (no decode, no str objects): True when every
        part parse would look up is live, and then marks them seen exactly as parse would; False
        (nothing marked, no state changed) sends the line through decode + :meth:`parse`.

        Same decisions as parse: the fields are the same (``|`` never occurs inside a UTF-8 multi-byte
        sequence), a part's hash is BLAKE2b of the same UTF-8 bytes ("\x1f".join(str).encode() ==
        b"\x1f".join(bytes)), and a line whose parts are all live passes every check parse makes (a
        live hash was validated when imported). All hashes are looked up before any is marked, so a
        line that parse would refuse (bad identifier) leaves nothing behind. The line is still checked
        to be UTF-8 (a wrong encoding aborts the file: parse's path raises it)."""
        assert self._st is not None and self._ac is not None and self._kp is not None
        assert self._ks is not None and self._ka is not None
        width, ppg, stg, acg, sfg = self.width, self._pp, self._st, self._ac, self._sf
        kp, ks, ka, kf = self._kp, self._ks, self._ka, self._kf
        fp, fs = kp.make_find(), ks.make_find()
        ff = kf.make_find() if kf is not None else None
        mp, ms = kp.mark, ks.mark
        mf = kf.mark if kf is not None else None
        seen_struct = self._seen_struct
        b2b, frm, sep = _b2b, from_bytes, b"\x1f"
        # the activity (every line) is looked up and marked inline: Digests.make_find / mark unrolled
        a_shift, a_half, a_starts, a_hashes, a_seen, a_rep = ka.lookup_parts()

        def unchanged(line: int, raw: bytes) -> bool:
            f = raw.split(b"|")
            if f[-1] == b"":
                f.pop()
            if len(f) != width:
                return False
            if not raw.isascii():
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError:
                    return False
            pp = ppg(f)
            ip = -1
            if pp != self._raw_last_pp:
                ip = fp(frm(b2b(sep.join(pp), digest_size=8).digest(), "big", signed=True))
                if ip < 0:
                    return False
            ac = acg(f)
            sid = ac[1]
            i_s = -1
            if sid and sid not in seen_struct:
                i_s = fs(frm(b2b(sep.join(stg(f)), digest_size=8).digest(), "big", signed=True))
                if i_s < 0:
                    return False
            h = frm(b2b(sep.join(ac), digest_size=8).digest(), "big", signed=True)
            b = (h >> a_shift) + a_half
            hi = a_starts[b + 1]
            ia = bisect_left(a_hashes, h, a_starts[b], hi)
            if ia >= hi or a_hashes[ia] != h:
                return False
            i_f = -1
            if sfg is not None:
                sf = sfg(f)
                if sf[3]:
                    if ff is None:
                        return False
                    i_f = ff(frm(b2b(sep.join(sf), digest_size=8).digest(), "big", signed=True))
                    if i_f < 0:
                        return False
            # every part is live: commit, in parse's order
            if ip >= 0:
                mp(ip, line)
                self._raw_last_pp = pp
            if i_s >= 0:
                if len(seen_struct) >= STRUCTURES_REMEMBERED:
                    seen_struct.clear()
                seen_struct.add(sid)
                ms(i_s, line)
            if a_seen[ia]:
                a_rep[0] += 1
            else:
                a_seen[ia] = 1
            if i_f >= 0:
                mf(i_f, line)  # type: ignore[misc]
            return True
        return unchanged

    def parse(self, line: int, raw: list[str]) -> (
            tuple[tuple[object, ...] | None, tuple[object, ...] | None, tuple[object, ...] | None,
                  tuple[object, ...] | None] | RowError):
        """Return (practitioner, structure, activity, savoir_faire) tuples (None when absent/repeated,
        or unchanged: already live, see :meth:`know`)."""
        if len(raw) != self.width:
            return RowError(line, f"expected {self.width} columns, found {len(raw)}")
        # every check comes first: a bad row must leave nothing behind (not staged, not marked seen,
        # and not remembered as this professional's run, so their next good row stages them)
        ac: tuple[str, ...] | None = None
        sid = ""
        new_sid = False
        if self._ac is not None:
            ac = self._ac(raw)
            sid = ac[1]
            if sid and sid.encode() not in self._seen_struct:
                if not sid.isalnum() or len(sid) > 40:
                    return RowError(line, f"bad structure identifier {sid[:40]!r}")
                new_sid = True
        pp: tuple[str, ...] = self._pp(raw)
        idnps = pp[2]
        prac: tuple[object, ...] | None = None
        if idnps != self._last_idnps or pp != self._last_pp:
            if self._st is not None:  # consecutive rows of one professional: stage the person once
                h = from_bytes(_b2b("\x1f".join(pp).encode(), digest_size=8).digest(), "big", signed=True)
                kp = self._kp
                if kp is None or not kp.hit(h, line):  # a live hash was checked when it was imported
                    reason = check_pp(pp[0], pp[1], idnps)
                    if reason:
                        return RowError(line, reason)
                    prac = (line, idnps, pp[0], pp[1], pp[3], pp[4], pp[5], pp[6], pp[7], pp[8], pp[9],
                            pp[10], pp[11], norm(pp[6]), norm(pp[7]), h)
            else:
                reason = check_pp(pp[0], pp[1], idnps)
                if reason:
                    return RowError(line, reason)
            self._last_idnps, self._last_pp = idnps, pp
        struct = act = None
        if ac is not None and self._st is not None:
            if new_sid:
                # first occurrence wins: a structure already taken from an earlier row (same or other
                # content) is not staged again; past the bounded memory, the SQL dedupe decides
                seen = self._seen_struct
                if len(seen) >= STRUCTURES_REMEMBERED:
                    seen.clear()
                seen.add(sid.encode())
                st: tuple[str, ...] = self._st(raw)
                h = from_bytes(_b2b("\x1f".join(st).encode(), digest_size=8).digest(), "big", signed=True)
                if self._ks is None or not self._ks.hit(h, line):
                    street = " ".join(x for x in (st[7], st[8], st[9], st[10]) if x)
                    complement = " ".join(x for x in (st[11], st[12], st[13]) if x)
                    cp = st[15]
                    city = st[17] or city_of(st[14], cp)
                    struct = (line, sid, st[1], st[2], st[3], st[4], st[5], st[6], street, complement, cp,
                              st[16], city, st[18], st[19], st[20], department_of(cp, st[21]),
                              norm(st[5] or st[6]), norm(city), h)
            h = from_bytes(_b2b("\x1f".join(ac).encode(), digest_size=8).digest(), "big", signed=True)
            ka = self._ka
            if ka is None or not ka.hit(h, line):
                act = (line, idnps, h, sid, *ac[4:12])
        sf_t = None
        if self._sf is not None:
            sf: tuple[str, ...] = self._sf(raw)
            if sf[3]:
                h = from_bytes(_b2b("\x1f".join(sf).encode(), digest_size=8).digest(), "big", signed=True)
                kf = self._kf
                if kf is None or not kf.hit(h, line):
                    sf_t = (line, idnps, h, *sf[1:])
        return prac, struct, act, sf_t
