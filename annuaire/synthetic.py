"""Synthetic Annuaire Santé extractions in the exact real formats (SPECS.md §5).

Deterministic from (seed, day): ``day=1`` is "the next day" with about 1 % of rows changed
(modified, removed or added), so incremental imports can be tested and benchmarked. Used by
scripts/gen_annuaire.py, the tests and scripts/bench_annuaire.py. Never needs real files.

Realism: accented and hyphenated names, PER/ORG about 85/15, professionals with several
activities and several mailboxes, duplicate address rows, RPPS and ADELI identifiers.
Liste rouge: the public extraction never lists liste-rouge mailboxes; they appear only in the
operator-side file (31 public columns + ``Liste rouge`` O/N), see docs/annuaire.md.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from annuaire.formats import MSS_COLUMNS, OWN_COLUMNS, PA_COLUMNS, PA_COLUMNS_NO_SF, SF_COLUMNS, norm

FAMILIES = ("MARTIN", "BERNARD", "DUBOIS", "THOMAS", "ROBERT", "RICHARD", "PETIT", "DURAND", "LEROY",
            "MOREAU", "LEFÈVRE", "GARÇON", "MÜLLER", "NGUYEN", "FRANÇOIS", "CHÂTEAU", "D'ARC", "LE GOFF",
            "MARTIN-DUBOIS", "SAINT-ÉTIENNE", "BÉRANGER", "HÉBERT", "NOËL", "GIRAUD-LÉON", "ŒUVRARD",
            "FAURÉ", "BRÛLÉ", "DA SILVA", "ÇELIK", "PÉREZ")
GIVENS = ("Jean", "Marie", "Jean-Marie", "Hélène", "Éloïse", "François", "Zoé", "Loïc", "Anaïs", "Jérôme",
          "Cécile", "Noël", "Ève", "Gaël", "Léa", "Marc-André", "Inès", "Benoît", "Clémence", "Raphaël")
PROFESSIONS = (("10", "Médecin", "C"), ("21", "Pharmacien", "C"), ("40", "Chirurgien-Dentiste", "C"),
               ("50", "Sage-Femme", "C"), ("60", "Infirmier", "C"), ("70", "Masseur-Kinésithérapeute", "C"),
               ("91", "Orthophoniste", "C"), ("26", "Audioprothésiste", "C"))
SAVOIR_FAIRE = (("SM54", "Médecine Générale (SM)"), ("SM04", "Cardiologie et maladies vasculaires"),
                ("SM26", "Pédiatrie"), ("SM15", "Gynécologie-obstétrique"), ("", ""))
CITIES = (("75013", "PARIS"), ("69003", "LYON"), ("13005", "MARSEILLE"), ("33000", "BORDEAUX"),
          ("59000", "LILLE"), ("06000", "NICE"), ("20000", "AJACCIO"), ("97400", "SAINT-DENIS"),
          ("29200", "BREST"), ("42000", "SAINT-ÉTIENNE"), ("25000", "BESANÇON"), ("84000", "AVIGNON"))
SERVICES = ("Cardiologie", "Urgences", "Secrétariat médical", "Laboratoire de biologie", "Radiologie",
            "Pédiatrie", "Service d'accueil")
MODES = (("L", "Libéral"), ("S", "Salarié"), ("B", "Bénévole"))


@dataclass(frozen=True)
class Spec:
    mss_rows: int = 1000
    pa_rows: int = 2000
    seed: int = 1
    day: int = 0
    own_rows: int = 0          # operator-side file (with liste rouge)
    layout: str = "56"         # "56" or "split" (savoir-faire in a separate file)
    ts: str = "202611230300"


def _r(i: int, salt: int, seed: int) -> int:
    """A cheap deterministic pseudo-random number in [0, 1000)."""
    x = (i * 2654435761 + salt * 40503 + seed * 97) & 0xFFFFFFFF
    x ^= x >> 13
    x = (x * 0x5BD1E995) & 0xFFFFFFFF
    return (x ^ (x >> 15)) % 1000


def _fate(i: int, spec: Spec, salt: int) -> str:
    """'keep' | 'gone' | 'changed' for row i on spec.day (about 1 % touched on day 1)."""
    if spec.day == 0:
        return "keep"
    r = _r(i, salt + 7, spec.seed)
    return "gone" if r < 3 else "changed" if r < 7 else "keep"


def _person(j: int, seed: int) -> dict[str, str]:
    fam = FAMILIES[_r(j, 1, seed) % len(FAMILIES)]
    giv = GIVENS[_r(j, 2, seed) % len(GIVENS)]
    code, label, cat = PROFESSIONS[_r(j, 3, seed) % len(PROFESSIONS)]
    if _r(j, 4, seed) < 900:
        id_type, ident = "8", f"{10000000000 + j * 7:011d}"
    else:
        dept = ("75", "69", "2A", "13")[j % 4]
        ident = f"{dept}{j % 10_000_000:07d}"
        id_type = "0"
    sf_code, sf_label = SAVOIR_FAIRE[_r(j, 5, seed) % len(SAVOIR_FAIRE)] if code == "10" else ("", "")
    civ = ("M", "MME", "DR")[_r(j, 6, seed) % 3]
    return {"id_type": id_type, "id": ident, "idnps": id_type + ident, "family": fam, "given": giv,
            "prof": code, "prof_l": label, "cat": cat, "sf": sf_code, "sf_l": sf_label, "civ": civ}


def _structure(k: int, seed: int) -> dict[str, str]:
    cp, city = CITIES[_r(k, 11, seed) % len(CITIES)]
    kind = _r(k, 12, seed) % 3
    return {"id": f"R1{k:010d}", "type": ("1", "3", "4")[kind],
            "siret": f"{30000000000000 + k:014d}", "siren": f"{300000000 + k:09d}",
            "finess": f"{750000000 + k:09d}" if kind == 0 else "", "name":
            (f"CENTRE HOSPITALIER DE {city}", f"CABINET MÉDICAL DU PARC {k}", f"LABORATOIRE BIO-SANTÉ {k}")[kind],
            "cp": cp, "city": city, "street": f"{1 + k % 120}|RUE|Rue de l'Église"}


def _addr(p: dict[str, str], j: int, n: int) -> str:
    local = norm(p["given"]).replace(" ", "-").replace("'", "") + "." + \
        norm(p["family"]).replace(" ", "-").replace("'", "")
    domain = {"10": "medecin", "21": "pharmacien", "60": "infirmier"}.get(p["prof"], "pro")
    return f"{local}.{j}{'' if n == 0 else '-' + str(n)}@{domain}.mssante.fr"


def mss_rows(spec: Spec) -> Iterator[list[str]]:
    """Rows of Extraction_Correspondance_MSSante (31 fields each, in MSS_COLUMNS order)."""
    n_per = spec.mss_rows * 85 // 100
    n_persons = max(1, spec.pa_rows * 10 // 16)
    n_struct = max(1, n_persons // 3)
    i = 0
    extra = spec.mss_rows * 3 // 1000 if spec.day else 0
    total = spec.mss_rows + extra
    while i < total:
        idx = i
        i += 1
        fate = _fate(idx, spec, 21) if idx < spec.mss_rows else "keep"
        second = False
        if fate == "gone":
            continue
        if idx < n_per or (idx >= spec.mss_rows and idx % 7):
            j = (idx * 7919) % n_persons if idx < n_per else n_persons - 1 - (idx - spec.mss_rows)
            p = _person(j, spec.seed)
            s = _structure(j % n_struct, spec.seed)
            second = idx < n_per and _r(idx, 22, spec.seed) < 80  # ~8 %: a second mailbox
            addr = _addr(p, j, 0 if idx < n_per else 100 + idx)
            service = "" if fate != "changed" else "Consultations"
            row = ["PER", addr, p["id_type"], p["id"], p["idnps"], s["type"], s["id"], service, p["civ"],
                   p["family"], p["given"], p["cat"], "Civil", p["prof"], p["prof_l"], p["sf"], p["sf_l"],
                   "O" if _r(idx, 23, spec.seed) < 700 else "N"]
        else:
            k = idx % n_struct
            s = _structure(k, spec.seed)
            svc = SERVICES[_r(idx, 24, spec.seed) % len(SERVICES)]
            dom = norm(s["name"]).replace(" ", "-").replace("'", "")[:40]
            addr = f"{norm(svc).replace(' ', '.').replace(chr(39), '')}.{idx}@{dom}.mssante.fr"
            typ = "ORG" if _r(idx, 25, spec.seed) < 950 else "CAB"
            row = [typ, addr, "", "", "", s["type"], s["id"], svc + (" B" if fate == "changed" else ""), "", "", "",
                   "", "", "", "", "", "", "O"]
        num, typev, street = s["street"].split("|")
        row += [s["name"], "", "Bâtiment A" if idx % 5 == 0 else "", "", num, "", typev, street,
                "", f"{s['cp']} {s['city']}", s["cp"], "", "FRANCE"]
        yield row
        if idx < n_per and _r(idx, 26, spec.seed) < 10:  # ~1 %: same address listed twice
            yield row
        if second:
            yield [row[0], _addr(p, j, 1), *row[2:7], "Téléconsultation", *row[8:]]


def pa_rows(spec: Spec) -> Iterator[list[str]]:
    """Rows of PS_LibreAcces_Personne_activite, 56 fields in PA_COLUMNS order (SF columns included)."""
    n_persons = max(1, spec.pa_rows * 10 // 16)
    n_struct = max(1, n_persons // 3)
    written = 0
    j = 0
    while written < spec.pa_rows:
        p = _person(j, spec.seed)
        n_act = 1 + (_r(j, 31, spec.seed) < 400) + (_r(j, 32, spec.seed) < 200)
        for a in range(n_act):
            if written >= spec.pa_rows:
                break
            written += 1
            fate = _fate(j * 4 + a, spec, 33)
            if fate == "gone":
                continue
            k = (j + a * 131) % n_struct
            s = _structure(k, spec.seed)
            mode_c, mode_l = MODES[(j + a) % 3]
            num, typev, street = s["street"].split("|")
            family = p["family"] if fate != "changed" else p["family"] + "-NOUVEAU"
            yield [p["id_type"], p["id"], p["idnps"], p["civ"], {"M": "Monsieur", "MME": "Madame",
                   "DR": "Docteur"}[p["civ"]], "", "", family, p["given"], p["prof"], p["prof_l"],
                   p["cat"], "Civil", "S" if p["sf"] else "", "Spécialité ordinale" if p["sf"] else "",
                   p["sf"], p["sf_l"], mode_c, mode_l, s["siret"], s["siren"], s["finess"], "", s["id"],
                   s["name"], "", "", "", num, "", "R", typev, street, "", f"{s['cp']} {s['city']}", s["cp"],
                   s["cp"][:2] + "056", s["city"], "99000", "France", "0102030405" if a == 0 else "", "", "",
                   "", s["cp"][:2], "", "", "RPPS", "SA07", "Cabinet individuel", "", "", "FON-01",
                   "Titulaire de cabinet", "GENR01", "Activité standard de soin"]
        j += 1
    if spec.day:  # a few new professionals
        for extra in range(spec.pa_rows * 3 // 1000):
            jj = 10_000_000 + extra
            p = _person(jj, spec.seed)
            s = _structure(extra % n_struct, spec.seed)
            yield [p["id_type"], p["id"], p["idnps"], p["civ"], "", "", "", p["family"], p["given"], p["prof"],
                   p["prof_l"], p["cat"], "Civil", "", "", "", "", "L", "Libéral", s["siret"], s["siren"], "",
                   "", s["id"], s["name"], "", "", "", "", "", "", "", "", "", "", s["cp"], "", s["city"], "",
                   "", "", "", "", "", "", "", "", "RPPS", "", "", "", "", "", "", "", ""]


def own_rows(spec: Spec) -> Iterator[list[str]]:
    """Operator-side mailboxes: a third also in the public file, 10 % liste rouge (never public)."""
    for i in range(spec.own_rows):
        p = _person(20_000_000 + i, spec.seed)
        lr = "O" if i % 10 == 0 else "N"
        addr = _addr(p, 20_000_000 + i, 0).replace(".mssante.fr", ".operateur.mssante.fr")
        yield ["PER", addr, p["id_type"], p["id"], p["idnps"], "", "", "", p["civ"], p["family"], p["given"],
               p["cat"], "Civil", p["prof"], p["prof_l"], "", "", "O", "", "", "", "", "", "", "", "", "",
               "", "", "", "FRANCE", lr]


def _line(fields: list[str]) -> str:
    return "|".join(fields) + "|\n"


def write_file(path: Path, header: tuple[str, ...], rows: Iterator[list[str]],
               keep: list[int] | None = None) -> int:
    n = 0
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(_line(list(header)))
        buf: list[str] = []
        for r in rows:
            if keep is not None:
                r = [r[i] for i in keep]
            buf.append(_line(r))
            n += 1
            if len(buf) >= 10_000:
                fh.write("".join(buf))
                buf.clear()
        fh.write("".join(buf))
    return n


def generate(out: Path, spec: Spec, *, make_zip: bool = False) -> dict[str, Path]:
    """Write the extraction files for ``spec`` into ``out``; return {kind: path}."""
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    ts = spec.ts
    if spec.mss_rows:
        p = out / f"Extraction_Correspondance_MSSante_{ts}.txt"
        write_file(p, MSS_COLUMNS, mss_rows(spec))
        files["mssante"] = p
    if spec.pa_rows:
        p = out / f"PS_LibreAcces_Personne_activite_{ts}.txt"
        if spec.layout == "56":
            write_file(p, PA_COLUMNS, pa_rows(spec))
        else:
            keep = [PA_COLUMNS.index(c) for c in PA_COLUMNS_NO_SF]
            write_file(p, PA_COLUMNS_NO_SF, pa_rows(spec), keep)
            sfp = out / f"PS_LibreAcces_SavoirFaire_{ts}.txt"
            sf_keep = [0, 1, 2, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]
            write_file(sfp, SF_COLUMNS, (r for r in pa_rows(spec) if r[15]), sf_keep)
            files["savoirfaire"] = sfp
        files["activite"] = p
    if spec.own_rows:
        p = out / f"Operateur_BAL_{ts}.txt"
        write_file(p, OWN_COLUMNS, own_rows(spec))
        files["own"] = p
    if make_zip:
        for kind, p in list(files.items()):
            zp = p.with_suffix(".zip")
            with zipfile.ZipFile(zp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
                zf.write(p, p.name)
            files[kind + "_zip"] = zp
    return files


def header_text(columns: tuple[str, ...]) -> str:
    buf = io.StringIO()
    buf.write(_line(list(columns)))
    return buf.getvalue()
