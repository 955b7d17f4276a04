"""The reference DMP's registry and repository rules (pure: no sockets; `now` is a parameter).

What it enforces (docs/dmp.md "Reference DMP rules"):
- strict XDS metadata (ITI TF-3 §4.2, ANS `mapping.md` required rows) -> XDSRegistryMetadataError;
- hash (SHA-1) and size equal to the document -> XDSRepositoryMetadataError;
- uniqueId, patientId and typeCode equal to the CDA header's -> XDSRegistryMetadataError / XDSPatientIdDoesNotMatch;
- a document part for the entry -> XDSMissingDocument / XDSMissingDocumentMetadata;
- patientId well formed, INS OID, valid NIR key (SPECS.md §4) -> XDSUnknownPatientId;
- one patient per submission and the VIHF's resource-id is that patient -> XDSPatientIdDoesNotMatch;
- replacement/deletion only of the latest approved version -> 900, only by the author's structure -> 901
  (SPECS.md §3 integration codes 900/901).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from . import ebrim as rim
from .ebrim import RegistryError, RimObject, RimSubmission
from .ins import INS_OIDS, InsError, check_ins, parse_patient_id_cx
from .metadata import CdaHeaderError, parse_cda_header

_UUID_URN = re.compile(r"^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_DTM = re.compile(r"^\d{4}(\d{2}){0,5}$")
_SHA1 = re.compile(r"^[0-9a-f]{40}$")

DE_REQUIRED_SLOTS = ("creationTime", "hash", "size", "languageCode", "serviceStartTime", "sourcePatientId", "legalAuthenticator")
DE_CODED = {
    rim.DE_CLASS: ("classCode", False),
    rim.DE_TYPE: ("typeCode", False),
    rim.DE_FORMAT: ("formatCode", False),
    rim.DE_FACILITY: ("healthcareFacilityTypeCode", False),
    rim.DE_PRACTICE: ("practiceSettingCode", False),
    rim.DE_CONFIDENTIALITY: ("confidentialityCode", True),
}


class StoreError(Exception):
    """The reference DMP's store directory holds something it cannot read back."""


class RequestRejected(Exception):
    def __init__(self, *errors: RegistryError) -> None:
        super().__init__("; ".join(f"{e.code}: {e.context}" for e in errors))
        self.errors = errors


def _err(code: str, context: str, location: str = "") -> RequestRejected:
    return RequestRejected(RegistryError(code, context, location))


@dataclass
class StoredDocument:
    entry_uuid: str
    unique_id: str
    ins: str
    ins_oid: str
    status: str
    structure_id: str
    hash: str
    size: int
    title: str
    type_code: str
    class_code: str
    format_code: str
    confidentiality: list[str]
    creation_time: str
    submission_set_unique_id: str
    submitted_at: str
    replaces: str | None = None
    replaced_by: str | None = None
    status_changed_at: str | None = None

    def public(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class Caller:
    """Who calls, from the verified VIHF."""

    structure_id: str
    resource_id: str  # the VIHF resource-id (patient CX)


def _one(obj: RimObject, name: str, what: str) -> str:
    values = obj.slots.get(name, [])
    if len(values) != 1 or not values[0].strip():
        raise _err("XDSRegistryMetadataError", f"{what} slot {name} must have exactly one value", obj.id)
    return values[0].strip()


def _coded(obj: RimObject, scheme: str, name: str, multiple: bool) -> list[str]:
    found = [(node, slots) for s, node, slots in obj.classifications if s == scheme]
    if not found or (len(found) > 1 and not multiple):
        raise _err("XDSRegistryMetadataError", f"{name} is required{'' if multiple else ' exactly once'}", obj.id)
    for node, slots in found:
        if not node or len(slots.get("codingScheme", [])) != 1:
            raise _err("XDSRegistryMetadataError", f"{name} needs a code and one codingScheme", obj.id)
    return [node for node, _ in found]


def _author(obj: RimObject, scheme: str, what: str) -> dict[str, list[str]]:
    found = [slots for s, _, slots in obj.classifications if s == scheme]
    if not found or not found[0].get("authorPerson"):
        raise _err("XDSRegistryMetadataError", f"{what} author with authorPerson is required", obj.id)
    if not found[0].get("authorInstitution"):
        raise _err("XDSRegistryMetadataError", f"{what} authorInstitution is required (mapping.md)", obj.id)
    return found[0]


def _patient(value: str, where: str) -> tuple[str, str]:
    try:
        ins, oid = parse_patient_id_cx(value)
        if oid not in INS_OIDS:
            raise InsError(f"assigning authority {oid} is not an INS OID")
        check_ins(ins)
    except InsError as exc:
        raise _err("XDSUnknownPatientId", f"{where}: {exc}") from None
    return ins, oid


class ReferenceRegistry:
    """Documents per patient, in memory and optionally mirrored to a directory (JSON + document bytes)."""

    def __init__(self, directory: Path | None = None) -> None:
        self.docs: dict[str, StoredDocument] = {}  # entryUUID -> doc
        self.by_unique_id: dict[str, str] = {}
        self.contents: dict[str, bytes] = {}
        self.directory = directory
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            for meta in sorted(directory.glob("*/*.json")):
                try:
                    d = StoredDocument(**json.loads(meta.read_text("utf-8")))
                except (OSError, ValueError, TypeError) as exc:
                    raise StoreError(f"{meta}: unreadable stored metadata ({type(exc).__name__})") from None
                self.docs[d.entry_uuid] = d
                self.by_unique_id[d.unique_id] = d.entry_uuid

    # ----- persistence -----
    def _save(self, doc: StoredDocument, content: bytes | None = None) -> None:
        if self.directory is None:
            return
        folder = self.directory / doc.ins
        folder.mkdir(exist_ok=True)
        name = doc.entry_uuid.rsplit(":", 1)[-1]
        if content is not None:
            (folder / f"{name}.xml").write_bytes(content)
        tmp = folder / f"{name}.json.tmp"
        tmp.write_text(json.dumps(doc.public()), "utf-8")
        tmp.replace(folder / f"{name}.json")

    # ----- queries -----
    def documents_of(self, ins: str) -> list[StoredDocument]:
        return sorted((d for d in self.docs.values() if d.ins == ins), key=lambda d: d.submitted_at)

    def content(self, entry_uuid: str) -> bytes | None:
        if entry_uuid in self.contents:
            return self.contents[entry_uuid]
        doc = self.docs.get(entry_uuid)
        if doc is not None and self.directory is not None:
            path = self.directory / doc.ins / f"{entry_uuid.rsplit(':', 1)[-1]}.xml"
            return path.read_bytes() if path.exists() else None
        return None

    def get_documents(self, unique_ids: list[str], caller: Caller) -> list[str]:
        """ITI-18 GetDocuments (ObjectRef): only documents of the VIHF's patient."""
        ins, _ = _patient(caller.resource_id, "VIHF resource-id")
        out = []
        for uid in unique_ids:
            eu = self.by_unique_id.get(uid)
            if eu is not None and self.docs[eu].ins == ins:
                out.append(eu)
        return out

    # ----- ITI-41 -----
    def provide_and_register(
        self, sub: RimSubmission, attachments: dict[str, bytes], caller: Caller, now: datetime
    ) -> StoredDocument:
        ss = self._submission_set(sub)
        ss_patient = _patient(ss.external_ids.get(rim.SS_PATIENT_ID, ""), "XDSSubmissionSet.patientId")
        if len(sub.documents) != 1:
            if not sub.documents and sub.document_parts:
                raise _err("XDSMissingDocumentMetadata", "a document is provided without a DocumentEntry")
            raise _err("XDSRegistryMetadataError", "exactly one DocumentEntry per submission is supported")
        de = sub.documents[0]
        meta, codes = self._document_entry(de)
        de_patient = _patient(de.external_ids[rim.DE_PATIENT_ID], "XDSDocumentEntry.patientId")
        if de_patient != ss_patient:
            raise _err("XDSPatientIdDoesNotMatch", "DocumentEntry and SubmissionSet patientId differ", de.id)
        vihf_patient = _patient(caller.resource_id, "VIHF resource-id")
        if vihf_patient != ss_patient:
            raise _err("XDSPatientIdDoesNotMatch", "the VIHF resource-id is not the submitted patient", de.id)
        extra = set(sub.document_parts) - {de.id}
        if extra:
            raise _err("XDSMissingDocumentMetadata", "a document is provided without a DocumentEntry")
        cid = sub.document_parts.get(de.id)
        if not cid or cid not in attachments:
            raise _err("XDSMissingDocument", "no document part for the DocumentEntry", de.id)
        content = attachments[cid]
        if meta["hash"] != hashlib.sha1(content, usedforsecurity=False).hexdigest():
            raise _err("XDSRepositoryMetadataError", "hash does not match the document", de.id)
        if int(meta["size"]) != len(content):
            raise _err("XDSRepositoryMetadataError", "size does not match the document", de.id)
        self._matches_cda(content, de, codes, ss_patient)
        has_member = [
            a for a in sub.associations if a.kind == rim.ASSOC_HAS_MEMBER and a.source == ss.id and a.target == de.id
        ]
        if len(has_member) != 1 or has_member[0].slots.get("SubmissionSetStatus") != ["Original"]:
            raise _err("XDSRegistryMetadataError", "one HasMember association (SubmissionSetStatus Original) is required")
        unique_id = de.external_ids[rim.DE_UNIQUE_ID]
        existing = self.by_unique_id.get(unique_id)
        if existing is not None:
            old = self.docs[existing]
            if old.hash == meta["hash"] and old.structure_id == caller.structure_id and old.ins == ss_patient[0]:
                return old  # an idempotent retry of a submission already stored
            code = "XDSNonIdenticalHash" if old.hash != meta["hash"] else "XDSDuplicateUniqueIdInRegistry"
            raise _err(code, "uniqueId already registered", de.id)
        replaced = self._replacement_target(sub, de.id, ss_patient[0], caller)
        others = [a for a in sub.associations if a.kind not in (rim.ASSOC_HAS_MEMBER, rim.ASSOC_RPLC)]
        if others:
            raise _err("XDSRegistryMetadataError", f"unsupported association {others[0].kind}")
        stamp = now.strftime("%Y%m%d%H%M%S%f")
        doc = StoredDocument(
            entry_uuid=de.id,
            unique_id=unique_id,
            ins=ss_patient[0],
            ins_oid=ss_patient[1],
            status=rim.STATUS_APPROVED,
            structure_id=caller.structure_id,
            hash=meta["hash"],
            size=int(meta["size"]),
            title=de.name,
            type_code=codes["typeCode"][0],
            class_code=codes["classCode"][0],
            format_code=codes["formatCode"][0],
            confidentiality=codes["confidentialityCode"],
            creation_time=meta["creationTime"],
            submission_set_unique_id=ss.external_ids[rim.SS_UNIQUE_ID],
            submitted_at=stamp,
            replaces=replaced.entry_uuid if replaced else None,
        )
        if de.id in self.docs:
            raise _err("XDSRegistryDuplicateUniqueIdInMessage", "entryUUID already used", de.id)
        self.docs[de.id] = doc
        self.by_unique_id[unique_id] = de.id
        self.contents[de.id] = content
        if replaced is not None:  # ITI TF-3 §4.2.2.2.2: the replaced version becomes Deprecated
            replaced.status = rim.STATUS_DEPRECATED
            replaced.replaced_by = de.id
            replaced.status_changed_at = stamp
            self._save(replaced)
        self._save(doc, content)
        return doc

    @staticmethod
    def _matches_cda(content: bytes, de: RimObject, codes: dict[str, list[str]], patient: tuple[str, str]) -> None:
        """The metadata must describe the CDA it comes with (CI-SIS annex "Lien entre l'en-tête CDA et les
        métadonnées XDS"): uniqueId = ClinicalDocument/id, patientId = recordTarget INS, typeCode = code."""
        try:
            header = parse_cda_header(content)
        except CdaHeaderError as exc:
            raise _err("XDSRepositoryMetadataError", f"the document is not a readable CDA: {exc}", de.id) from None
        if header.unique_id != de.external_ids[rim.DE_UNIQUE_ID]:
            raise _err("XDSRegistryMetadataError", "uniqueId is not the CDA's ClinicalDocument/id", de.id)
        if (header.ins, header.ins_oid) != patient:
            raise _err("XDSPatientIdDoesNotMatch", "patientId is not the CDA's recordTarget INS", de.id)
        if codes["typeCode"] != [header.type_code.code]:
            raise _err("XDSRegistryMetadataError", "typeCode is not the CDA's ClinicalDocument/code", de.id)

    def _replacement_target(self, sub: RimSubmission, de_id: str, ins: str, caller: Caller) -> StoredDocument | None:
        rplc = [a for a in sub.associations if a.kind == rim.ASSOC_RPLC]
        if not rplc:
            return None
        if len(rplc) > 1 or rplc[0].source != de_id:
            raise _err("XDSRegistryMetadataError", "one RPLC association from the new DocumentEntry is allowed")
        return self._latest_of(rplc[0].target, ins, caller, "replace")

    def _latest_of(self, entry_uuid: str, ins: str, caller: Caller, verb: str) -> StoredDocument:
        target = self.docs.get(entry_uuid)
        if target is None or target.ins != ins:
            raise _err("900", f"cannot {verb}: the document does not exist for this patient", entry_uuid)
        if target.status != rim.STATUS_APPROVED:
            raise _err("900", f"cannot {verb}: the document is not the latest approved version", entry_uuid)
        if target.structure_id != caller.structure_id:
            raise _err("901", f"cannot {verb}: the document belongs to another structure", entry_uuid)
        return target

    # ----- ITI-57 (DMP TD3.3c deletion) -----
    def update_status(self, sub: RimSubmission, caller: Caller, now: datetime) -> StoredDocument:
        ss = self._submission_set(sub)
        ins, _ = _patient(ss.external_ids.get(rim.SS_PATIENT_ID, ""), "XDSSubmissionSet.patientId")
        if _patient(caller.resource_id, "VIHF resource-id")[0] != ins:
            raise _err("XDSPatientIdDoesNotMatch", "the VIHF resource-id is not the submission set's patient")
        if sub.documents:
            raise _err("XDSMetadataUpdateOperationError", "only availability status updates are supported")
        ups = [a for a in sub.associations if a.kind == rim.ASSOC_UPDATE_STATUS]
        if len(ups) != 1 or len(sub.associations) != 1 or ups[0].source != ss.id:
            raise _err("XDSMetadataUpdateOperationError", "exactly one UpdateAvailabilityStatus association is required")
        up = ups[0]
        if up.slots.get("NewStatus") != [rim.STATUS_DELETED]:
            raise _err("XDSMetadataUpdateOperationError", "NewStatus must be urn:asip:ci-sis:2010:StatusType:Deleted")
        target = self._latest_of(up.target, ins, caller, "delete")
        if up.slots.get("OriginalStatus") != [target.status]:
            raise _err("XDSMetadataUpdateError", "OriginalStatus is not the document's current status", up.target)
        target.status = rim.STATUS_DELETED
        target.status_changed_at = now.strftime("%Y%m%d%H%M%S%f")
        self.contents.pop(target.entry_uuid, None)
        self._save(target)
        if self.directory is not None:
            (self.directory / target.ins / f"{target.entry_uuid.rsplit(':', 1)[-1]}.xml").unlink(missing_ok=True)
        return target

    # ----- strict metadata -----
    def _submission_set(self, sub: RimSubmission) -> RimObject:
        ss_ids = {obj for obj, node in sub.node_classifications if node == rim.SS_NODE}
        sets = [p for p in sub.packages if p.id in ss_ids]
        if len(sets) != 1 or len(sub.packages) != 1:
            raise _err("XDSRegistryMetadataError", "exactly one SubmissionSet is required")
        ss = sets[0]
        if not _UUID_URN.match(ss.id):
            raise _err("XDSRegistryMetadataError", "SubmissionSet id must be a urn:uuid", ss.id)
        if not _DTM.match(_one(ss, "submissionTime", "SubmissionSet")):
            raise _err("XDSRegistryMetadataError", "submissionTime is not a DTM", ss.id)
        _author(ss, rim.SS_AUTHOR, "SubmissionSet")
        _coded(ss, rim.SS_CONTENT_TYPE, "contentTypeCode", False)
        for scheme, name in ((rim.SS_UNIQUE_ID, "uniqueId"), (rim.SS_SOURCE_ID, "sourceId"), (rim.SS_PATIENT_ID, "patientId")):
            if not ss.external_ids.get(scheme):
                raise _err("XDSRegistryMetadataError", f"XDSSubmissionSet.{name} is required", ss.id)
        return ss

    def _document_entry(self, de: RimObject) -> tuple[dict[str, str], dict[str, list[str]]]:
        if not _UUID_URN.match(de.id):
            raise _err("XDSRegistryMetadataError", "DocumentEntry entryUUID must be a urn:uuid", de.id)
        if de.attrs.get("objectType") != rim.DE_OBJECT_TYPE:
            raise _err("XDSRegistryMetadataError", "DocumentEntry objectType must be the stable entry type", de.id)
        if de.attrs.get("mimeType") not in ("text/xml", "application/xslt+xml"):
            raise _err("XDSRegistryMetadataError", "mimeType must be text/xml for a CDA (mapping.md)", de.id)
        out: dict[str, str] = {}
        codes: dict[str, list[str]] = {}
        for slot in DE_REQUIRED_SLOTS:
            out[slot] = _one(de, slot, "DocumentEntry")
        for slot in ("creationTime", "serviceStartTime"):
            if not _DTM.match(out[slot]):
                raise _err("XDSRegistryMetadataError", f"{slot} is not a DTM", de.id)
        if not _SHA1.match(out["hash"]):
            raise _err("XDSRegistryMetadataError", "hash must be 40 lowercase hex digits (SHA-1)", de.id)
        if not out["size"].isdigit():
            raise _err("XDSRegistryMetadataError", "size must be an integer", de.id)
        if not de.name.strip():
            raise _err("XDSRegistryMetadataError", "title is required (mapping.md)", de.id)
        _author(de, rim.DE_AUTHOR, "DocumentEntry")
        for scheme, (name, multiple) in DE_CODED.items():
            codes[name] = _coded(de, scheme, name, multiple)
        for scheme, name in ((rim.DE_UNIQUE_ID, "uniqueId"), (rim.DE_PATIENT_ID, "patientId")):
            if not de.external_ids.get(scheme):
                raise _err("XDSRegistryMetadataError", f"XDSDocumentEntry.{name} is required", de.id)
        if len(de.external_ids[rim.DE_UNIQUE_ID]) > 128:
            raise _err("XDSRegistryMetadataError", "uniqueId longer than 128 characters", de.id)
        return out, codes
