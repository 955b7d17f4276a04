"""The interface between a Y delivery and whatever feeds the patient's DMP.

The Y delivery (mssante/y) builds a DmpRequest and calls DmpConnector.send().
The real connector (ITI-41 + VIHF, mssante/dmp/connector.py) and any test double
implement the same Protocol. Outcomes are typed: the caller never sees an exception
for an expected failure (SPECS.md §4, "The DMP leg").
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol


class DmpAction(enum.Enum):
    SUBMIT = "submit"
    REPLACE = "replace"
    DELETE = "delete"


@dataclass(frozen=True)
class DmpRequest:
    action: DmpAction
    cda: bytes  # the CDA R2 document as received (never logged)
    ins: str  # INS-NIR, 15 digits (13 + key)
    ins_oid: str  # 1.2.250.1.213.1.4.8 (production) or 1.2.250.1.213.1.4.10 (test)
    author_idnps: str
    author_family: str
    author_given: str
    structure_id: str
    structure_name: str
    # Restriction flags set to Y among MASQUE_PS, INVISIBLE_PATIENT, INVISIBLE_REP_LEGAUX,
    # CONNEXION_SECRETE, MODIF_CONF_CODE (SPECS.md §4).
    restrictions: frozenset[str] = field(default_factory=frozenset)
    document_unique_id: str | None = None  # taken from the CDA header when None
    replaced_unique_id: str | None = None  # REPLACE / DELETE target
    correlation_id: str = ""  # the Y delivery leg id, for audit


@dataclass(frozen=True)
class DmpAccepted:
    document_unique_id: str
    submission_set_unique_id: str


@dataclass(frozen=True)
class DmpRejected:
    code: str  # from RegistryErrorList (errorCode), e.g. XDSRegistryError or 900..906
    text: str


@dataclass(frozen=True)
class DmpTemporaryFailure:
    reason: str  # network, timeout, HTTP 5xx: the leg stays queued and is retried


DmpOutcome = DmpAccepted | DmpRejected | DmpTemporaryFailure


class DmpConnector(Protocol):
    async def send(self, request: DmpRequest) -> DmpOutcome: ...
