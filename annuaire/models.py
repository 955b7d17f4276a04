"""Directory tables. Own DeclarativeBase: annuaire/ never imports mssante/ (ARCHITECTURE.md).

The gateway's Alembic migrations include ``AnnuaireBase.metadata``. Staging tables used by
the importer are TEMPORARY and live in a separate MetaData (:data:`STAGE_METADATA`), so they
never appear in migrations.

Search columns (``norm_*``) hold the unaccented lowercase form (formats.norm) so that
searches are accent- and case-insensitive with plain indexed ``LIKE 'x%'`` on both backends.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (BigInteger, Boolean, Column, DateTime, Index, Integer, MetaData, String,
                        Table)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class AnnuaireBase(DeclarativeBase):
    metadata = MetaData(naming_convention={
        "ix": "ix_%(column_0_label)s", "uq": "uq_%(table_name)s_%(column_0_name)s",
        "pk": "pk_%(table_name)s",
    })


S = String  # short alias for column declarations below


class Practitioner(AnnuaireBase):
    """A health professional (one per IDNPS), from Personne_activite."""

    __tablename__ = "ann_practitioner"
    idnps: Mapped[str] = mapped_column(S(12), primary_key=True)
    id_type: Mapped[str] = mapped_column(S(1))       # 8 = RPPS, 0 = ADELI
    id_pp: Mapped[str] = mapped_column(S(11), index=True)
    civ_ex_code: Mapped[str] = mapped_column(S(8), default="")
    civ_ex_label: Mapped[str] = mapped_column(S(40), default="")
    civ_code: Mapped[str] = mapped_column(S(8), default="")
    family: Mapped[str] = mapped_column(S(120), default="")
    given: Mapped[str] = mapped_column(S(120), default="")
    profession_code: Mapped[str] = mapped_column(S(8), default="")
    profession_label: Mapped[str] = mapped_column(S(120), default="")
    category_code: Mapped[str] = mapped_column(S(8), default="")
    category_label: Mapped[str] = mapped_column(S(120), default="")
    norm_family: Mapped[str] = mapped_column(S(120), default="")
    norm_given: Mapped[str] = mapped_column(S(120), default="", index=True)
    row_hash: Mapped[int] = mapped_column(BigInteger)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    # family searches page through this index in order (annuaire/fhir.py keyset paging)
    __table_args__ = (Index("ix_ann_practitioner_family_idnps", "norm_family", "idnps"),)


class Structure(AnnuaireBase):
    """A place of practice (structure id = 'Identifiant technique de la structure')."""

    __tablename__ = "ann_structure"
    structure_id: Mapped[str] = mapped_column(S(40), primary_key=True)
    siret: Mapped[str] = mapped_column(S(14), default="", index=True)
    siren: Mapped[str] = mapped_column(S(9), default="")
    finess: Mapped[str] = mapped_column(S(9), default="", index=True)
    finess_ej: Mapped[str] = mapped_column(S(9), default="")
    name: Mapped[str] = mapped_column(S(200), default="")
    enseigne: Mapped[str] = mapped_column(S(200), default="")
    street: Mapped[str] = mapped_column(S(250), default="")
    complement: Mapped[str] = mapped_column(S(250), default="")
    postal_code: Mapped[str] = mapped_column(S(10), default="")
    city_code: Mapped[str] = mapped_column(S(10), default="")
    city: Mapped[str] = mapped_column(S(120), default="")
    country: Mapped[str] = mapped_column(S(80), default="")
    phone: Mapped[str] = mapped_column(S(40), default="")
    email: Mapped[str] = mapped_column(S(200), default="")
    department: Mapped[str] = mapped_column(S(3), default="", index=True)
    norm_name: Mapped[str] = mapped_column(S(200), default="", index=True)
    norm_city: Mapped[str] = mapped_column(S(120), default="")
    row_hash: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Activity(AnnuaireBase):
    """One activity (situation d'exercice) = one Personne_activite row = a PractitionerRole."""

    __tablename__ = "ann_activity"
    idnps: Mapped[str] = mapped_column(S(12), primary_key=True)
    row_hash: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    structure_id: Mapped[str] = mapped_column(S(40), default="", index=True)
    mode_code: Mapped[str] = mapped_column(S(8), default="")
    mode_label: Mapped[str] = mapped_column(S(80), default="")
    sector_code: Mapped[str] = mapped_column(S(8), default="")
    sector_label: Mapped[str] = mapped_column(S(120), default="")
    function_code: Mapped[str] = mapped_column(S(8), default="")
    function_label: Mapped[str] = mapped_column(S(120), default="")
    genre_code: Mapped[str] = mapped_column(S(8), default="")
    genre_label: Mapped[str] = mapped_column(S(120), default="")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class SavoirFaire(AnnuaireBase):
    """Savoir-faire (specialty) of a practitioner: from the 56-column layout or the separate file."""

    __tablename__ = "ann_savoir_faire"
    idnps: Mapped[str] = mapped_column(S(12), primary_key=True)
    row_hash: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    type_code: Mapped[str] = mapped_column(S(8), default="")
    type_label: Mapped[str] = mapped_column(S(120), default="")
    code: Mapped[str] = mapped_column(S(12), default="")
    label: Mapped[str] = mapped_column(S(200), default="")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Mailbox(AnnuaireBase):
    """An MSSanté mailbox (BAL). Never deleted: a vanished one gets ``closed_at``.

    ``published``: present in the last public extraction. ``own``: one of this operator's
    mailboxes (operator file or API). ``liste_rouge``: routable but never publicly searchable
    (docs/annuaire.md: the public extraction never lists them, only the operator knows them).
    """

    __tablename__ = "ann_mailbox"
    address: Mapped[str] = mapped_column(S(254), primary_key=True)
    type: Mapped[str] = mapped_column(S(3))
    id_type: Mapped[str] = mapped_column(S(1), default="")
    id_pp: Mapped[str] = mapped_column(S(11), default="")
    idnps: Mapped[str] = mapped_column(S(12), default="", index=True)
    structure_id_type: Mapped[str] = mapped_column(S(4), default="")
    structure_id: Mapped[str] = mapped_column(S(40), default="", index=True)
    service: Mapped[str] = mapped_column(S(200), default="")
    civility: Mapped[str] = mapped_column(S(40), default="")
    family: Mapped[str] = mapped_column(S(120), default="")
    given: Mapped[str] = mapped_column(S(120), default="")
    category_code: Mapped[str] = mapped_column(S(8), default="")
    category_label: Mapped[str] = mapped_column(S(120), default="")
    profession_code: Mapped[str] = mapped_column(S(8), default="")
    profession_label: Mapped[str] = mapped_column(S(120), default="")
    sf_code: Mapped[str] = mapped_column(S(12), default="")
    sf_label: Mapped[str] = mapped_column(S(200), default="")
    dematerialisation: Mapped[bool] = mapped_column(Boolean, default=False)
    org_name: Mapped[str] = mapped_column(S(200), default="")
    enseigne: Mapped[str] = mapped_column(S(200), default="")
    l2: Mapped[str] = mapped_column(S(100), default="")
    l3: Mapped[str] = mapped_column(S(100), default="")
    l4_number: Mapped[str] = mapped_column(S(20), default="")
    l4_repeat: Mapped[str] = mapped_column(S(20), default="")
    l4_type: Mapped[str] = mapped_column(S(20), default="")
    l4_street: Mapped[str] = mapped_column(S(200), default="")
    l5: Mapped[str] = mapped_column(S(100), default="")
    l6: Mapped[str] = mapped_column(S(100), default="")
    postal_code: Mapped[str] = mapped_column(S(10), default="")
    department: Mapped[str] = mapped_column(S(3), default="", index=True)
    country: Mapped[str] = mapped_column(S(80), default="")
    norm_family: Mapped[str] = mapped_column(S(120), default="", index=True)
    norm_given: Mapped[str] = mapped_column(S(120), default="", index=True)
    norm_org: Mapped[str] = mapped_column(S(200), default="", index=True)
    norm_profession: Mapped[str] = mapped_column(S(120), default="", index=True)
    norm_city: Mapped[str] = mapped_column(S(120), default="", index=True)
    row_hash: Mapped[int] = mapped_column(BigInteger)
    published: Mapped[bool] = mapped_column(Boolean, default=False)
    own: Mapped[bool] = mapped_column(Boolean, default=False)
    liste_rouge: Mapped[bool] = mapped_column(Boolean, default=False)
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    first_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ImportRun(AnnuaireBase):
    """One committed file import (audit of what changed)."""

    __tablename__ = "ann_import"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(S(300))
    kind: Mapped[str] = mapped_column(S(16))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    rows: Mapped[int] = mapped_column(Integer, default=0)
    bad_rows: Mapped[int] = mapped_column(Integer, default=0)
    inserted: Mapped[int] = mapped_column(Integer, default=0)
    updated: Mapped[int] = mapped_column(Integer, default=0)
    closed: Mapped[int] = mapped_column(Integer, default=0)


# --- staging (TEMPORARY tables, one import at a time per connection) ---------------------------

MAILBOX_DATA_COLUMNS: tuple[str, ...] = (
    "address", "type", "id_type", "id_pp", "idnps", "structure_id_type", "structure_id", "service",
    "civility", "family", "given", "category_code", "category_label", "profession_code",
    "profession_label", "sf_code", "sf_label", "dematerialisation", "org_name", "enseigne", "l2", "l3",
    "l4_number", "l4_repeat", "l4_type", "l4_street", "l5", "l6", "postal_code", "department", "country",
    "norm_family", "norm_given", "norm_org", "norm_profession", "norm_city", "row_hash",
)
PRACTITIONER_DATA_COLUMNS: tuple[str, ...] = (
    "idnps", "id_type", "id_pp", "civ_ex_code", "civ_ex_label", "civ_code", "family", "given",
    "profession_code", "profession_label", "category_code", "category_label", "norm_family",
    "norm_given", "row_hash",
)
STRUCTURE_DATA_COLUMNS: tuple[str, ...] = (
    "structure_id", "siret", "siren", "finess", "finess_ej", "name", "enseigne", "street", "complement",
    "postal_code", "city_code", "city", "country", "phone", "email", "department", "norm_name",
    "norm_city", "row_hash",
)
ACTIVITY_DATA_COLUMNS: tuple[str, ...] = (
    "idnps", "row_hash", "structure_id", "mode_code", "mode_label", "sector_code", "sector_label",
    "function_code", "function_label", "genre_code", "genre_label",
)
SF_DATA_COLUMNS: tuple[str, ...] = ("idnps", "row_hash", "type_code", "type_label", "code", "label")

STAGE_METADATA = MetaData()


def _stage(name: str, source: type[AnnuaireBase], cols: tuple[str, ...], *extra: Column[bool]) -> Table:
    base = source.__table__
    columns: list[Column[object]] = [Column("line", Integer, nullable=False)]
    for c in cols:
        col = base.c[c]  # type: ignore[attr-defined]
        columns.append(Column(c, col.type, nullable=True))
    return Table(name, STAGE_METADATA, *columns, *extra, prefixes=["TEMPORARY"])


STAGE_MAILBOX = _stage("ann_stage_mailbox", Mailbox, MAILBOX_DATA_COLUMNS, Column("liste_rouge", Boolean))
STAGE_PRACTITIONER = _stage("ann_stage_practitioner", Practitioner, PRACTITIONER_DATA_COLUMNS)
STAGE_STRUCTURE = _stage("ann_stage_structure", Structure, STRUCTURE_DATA_COLUMNS)
STAGE_ACTIVITY = _stage("ann_stage_activity", Activity, ACTIVITY_DATA_COLUMNS)
STAGE_SF = _stage("ann_stage_sf", SavoirFaire, SF_DATA_COLUMNS)

STAGE_KEYS: dict[str, tuple[str, ...]] = {
    STAGE_MAILBOX.name: ("address",),
    STAGE_PRACTITIONER.name: ("idnps",),
    STAGE_STRUCTURE.name: ("structure_id",),
    STAGE_ACTIVITY.name: ("idnps", "row_hash"),
    STAGE_SF.name: ("idnps", "row_hash"),
}

__all__ = ["AnnuaireBase", "Practitioner", "Structure", "Activity", "SavoirFaire", "Mailbox", "ImportRun",
           "STAGE_METADATA", "Index"]
