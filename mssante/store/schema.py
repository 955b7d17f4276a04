"""Every table the gateway's database holds, gathered for Alembic.

Each slice keeps its tables next to its repository; this module imports them all so that
migrations see the whole schema. annuaire/ has its own metadata (it never imports mssante).
"""

from __future__ import annotations

import importlib

from sqlalchemy import MetaData

# Modules that declare tables on mssante.store.base.Base.
GATEWAY_MODEL_MODULES = (
    "mssante.store.models",
    "mssante.store.queue",
    "mssante.trust.models",
    "mssante.y.models",
)


def all_metadata() -> list[MetaData]:
    from mssante.store.base import Base

    for name in GATEWAY_MODEL_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:  # a real import error inside the module
                raise
    try:
        from annuaire.models import AnnuaireBase
    except ModuleNotFoundError as e:
        if e.name != "annuaire.models":
            raise
        return [Base.metadata]
    return [Base.metadata, AnnuaireBase.metadata]
