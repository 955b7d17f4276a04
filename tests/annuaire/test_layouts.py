"""Both real layouts import: the exact header lines of SPECS.md §5, embedded here as constants.

(Copied verbatim from the spec on purpose: if annuaire/formats.py ever drifts from the real
header strings, this test fails.)
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from annuaire.formats import FileKind, FormatError, detect_layout
from annuaire.importer import Importer
from tests.annuaire.conftest import DAY0

# SPECS.md §5, Extraction_Correspondance_MSSante_<AAAAMMJJhhmm>.txt (31 columns)
SPEC_HEADER_MSS = (
    'Type de BAL|Adresse BAL|Type Identifiant PP|Identifiant PP|Identification nationale PP|'
    'Type identifiant structure|Identification Structure|Service de rattachement|'
    "Civilité d'exercice|Nom d'exercice|Prénom d'exercice|Catégorie profession|"
    'Libellé de catégorie profession|Code Profession|Libellé Profession|Code savoir-faire|'
    'Libellé savoir-faire|Dématérialisation|Raison Sociale structure BAL|'
    'Enseigne commerciale structure BAL|L2COMPLEMENTLOCALISATION structure BAL|'
    'L3COMPLEMENTDISTRIBUTION structure BAL|L4NUMEROVOIE structure BAL|'
    'L4COMPLEMENTNUMEROVOIE structure BAL|NL4TYPEVOIE structure BAL|'
    'L4LIBELLEVOIE structure BAL|L5LIEUDITMENTION structure BAL|'
    'L6LIGNEACHEMINEMENT structure BAL|Code postal structure BAL|Département structure BAL|'
    'Pays structure BAL'
)
# SPECS.md §5, PS_LibreAcces_Personne_activite_<AAAAMMJJhhmm>.txt (56 columns, trailing |)
SPEC_HEADER_PA = (
    "Type d'identifiant PP|Identifiant PP|Identification nationale PP|"
    "Code civilité d'exercice|Libellé civilité exercice|Code civilité|Libellé civilité|"
    "Nom d'exercice|Prénom d'exercice|Code profession|Libellé profession|"
    'Code catégorie professionnelle|Libellé catégorie professionnelle|Code type savoir-faire|'
    'Libellé type savoir-faire|Code savoir-faire|Libellé savoir-faire|Code mode exercice|'
    'Libellé mode exercice|Numéro SIRET site|Numéro SIREN site|Numéro FINESS site|'
    'Numéro FINESS établissement juridique|Identifiant technique de la structure|'
    'Raison sociale site|Enseigne commerciale site|'
    'Complément destinataire (coord. structure)|'
    'Complément point géographique (coord. structure)|Numéro Voie (coord. structure)|'
    'Indice répétition voie (coord. Structure)|Code type de voie (coord. structure)|'
    'Libellé type de voie (coord. structure)|Libellé Voie (coord. structure)|'
    'Mention distribution (coord. structure)|Bureau cedex (coord. structure)|'
    'Code postal (coord. structure)|Code commune (coord. structure)|'
    'Libellé commune (coord. structure)|Code pays (coord. structure)|'
    'Libellé pays (coord. structure)|Téléphone (coord. structure)|'
    'Téléphone 2 (coord. structure)|Télécopie (coord. structure)|'
    'Adresse e-mail (coord. structure)|Code département (coord. structure)|'
    'Libellé département (coord. structure)|Ancien identifiant de la structure|'
    "Autorité d'enregistrement|Code secteur d'activité|Libellé secteur d'activité|"
    'Code section tableau pharmaciens|Libellé section tableau pharmaciens|Code fonction|'
    "Libellé fonction|Code genre d'activité|Libellé genre d'activité|"
)
SF_NAMES = ("Code type savoir-faire", "Libellé type savoir-faire", "Code savoir-faire", "Libellé savoir-faire")

MSS_ROW = ("PER|Helene.Lefevre@medecin.mssante.fr|8|10003456789|810003456789|1|R1000000001|Cardiologie|MME|"
           "LEFÈVRE-ŒUVRARD|Hélène|C|Civil|10|Médecin|SM04|Cardiologie|O|CH DE SAINT-ÉTIENNE||||12||RUE|"
           "de l'Église||42000 SAINT-ÉTIENNE|42000|42|FRANCE|")
PA_VALUES = {
    "Type d'identifiant PP": "8", "Identifiant PP": "10003456789", "Identification nationale PP": "810003456789",
    "Code civilité d'exercice": "DR", "Libellé civilité exercice": "Docteur", "Nom d'exercice": "LEFÈVRE-ŒUVRARD",
    "Prénom d'exercice": "Hélène", "Code profession": "10", "Libellé profession": "Médecin",
    "Code catégorie professionnelle": "C", "Code type savoir-faire": "S", "Code savoir-faire": "SM04",
    "Libellé savoir-faire": "Cardiologie et maladies vasculaires", "Code mode exercice": "S",
    "Numéro FINESS site": "420000001", "Identifiant technique de la structure": "R1000000001",
    "Raison sociale site": "CH DE SAINT-ÉTIENNE", "Code postal (coord. structure)": "42000",
    "Libellé commune (coord. structure)": "SAINT-ÉTIENNE",
}


def _columns(header: str) -> list[str]:
    cols = header.split("|")
    return cols[:-1] if cols[-1] == "" else cols


def _row(cols: list[str], values: dict[str, str]) -> str:
    return "|".join(values.get(c, "") for c in cols) + "|"


def test_spec_headers_are_recognised() -> None:
    assert len(_columns(SPEC_HEADER_MSS)) == 31 and len(_columns(SPEC_HEADER_PA)) == 56
    assert detect_layout(SPEC_HEADER_MSS).kind is FileKind.MSSANTE
    assert detect_layout(SPEC_HEADER_MSS + "|\r\n").kind is FileKind.MSSANTE  # trailing | and CRLF
    assert detect_layout("\ufeff" + SPEC_HEADER_PA).kind is FileKind.PERSONNE_ACTIVITE  # BOM tolerated
    newer = "|".join(c for c in _columns(SPEC_HEADER_PA) if c not in SF_NAMES) + "|"
    assert detect_layout(newer).kind is FileKind.PERSONNE_ACTIVITE
    try:
        detect_layout(SPEC_HEADER_MSS.replace("Adresse BAL", "Adresse"))
    except FormatError as exc:
        assert "unrecognised header" in str(exc)
    else:
        raise AssertionError("a wrong header must be refused")


async def test_both_layouts_import(engine: AsyncEngine, tmp_path: Path) -> None:
    mss = tmp_path / "Extraction_Correspondance_MSSante_202611230300.txt"
    mss.write_text(SPEC_HEADER_MSS + "|\n" + MSS_ROW + "\n", encoding="utf-8")
    old = tmp_path / "PS_LibreAcces_Personne_activite_202611230300.txt"
    cols = _columns(SPEC_HEADER_PA)
    old.write_text(SPEC_HEADER_PA + "\n" + _row(cols, PA_VALUES) + "\n", encoding="utf-8")
    imp = Importer(engine)
    reps = [*(await imp.import_path(mss, now=DAY0)), *(await imp.import_path(old, now=DAY0))]
    assert all(r.ok and r.bad_count == 0 for r in reps), [r.summary() for r in reps]
    async with engine.connect() as conn:
        sf = (await conn.execute(text("SELECT code FROM ann_savoir_faire"))).scalars().all()
        fam = (await conn.execute(text("SELECT norm_family FROM ann_practitioner"))).scalar()
        box = (await conn.execute(text("SELECT address, norm_city, department FROM ann_mailbox"))).one()
    assert sf == ["SM04"] and fam == "lefevre-oeuvrard"
    assert tuple(box) == ("helene.lefevre@medecin.mssante.fr", "saint-etienne", "42")  # canonical lowercase

    # the newer layout: no savoir-faire columns in Personne_activite, a separate SavoirFaire file
    new_cols = [c for c in cols if c not in SF_NAMES]
    new = tmp_path / "PS_LibreAcces_Personne_activite_202611240300.txt"
    values = dict(PA_VALUES, **{"Libellé mode exercice": "Salarié"})
    new.write_text("|".join(new_cols) + "|\n" + _row(new_cols, values) + "\n", encoding="utf-8")
    sf_cols = ["Type d'identifiant PP", "Identifiant PP", "Identification nationale PP", "Nom d'exercice",
               "Prénom d'exercice", "Code profession", "Libellé profession", "Code catégorie professionnelle",
               "Libellé catégorie professionnelle", *SF_NAMES]
    sff = tmp_path / "PS_LibreAcces_SavoirFaire_202611240300.txt"
    sf_vals = dict(PA_VALUES, **{"Code savoir-faire": "SM54", "Libellé savoir-faire": "Médecine générale"})
    sff.write_text("|".join(sf_cols) + "|\n" + _row(sf_cols, sf_vals) + "\n", encoding="utf-8")
    reps = [*(await imp.import_path(new, now=DAY0)), *(await imp.import_path(sff, now=DAY0))]
    assert all(r.ok and r.bad_count == 0 for r in reps), [r.summary() for r in reps]
    assert [r.kind for r in reps] == ["activite", "savoirfaire"]
    async with engine.connect() as conn:
        sf = (await conn.execute(text("SELECT code FROM ann_savoir_faire"))).scalars().all()
        modes = (await conn.execute(text("SELECT mode_label FROM ann_activity"))).scalars().all()
    assert sf == ["SM54"]  # the separate file is authoritative in the newer layout
    assert modes == ["Salarié"]
