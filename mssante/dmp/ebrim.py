"""ebRIM 3.0 for XDS.b: build and read ITI-41, ITI-57 and ITI-18 bodies and RegistryResponse (pure).

IHE ITI TF-3 §4.2 (metadata), ITI TF-2b §3.41 (Provide and Register Document Set-b),
ITI-57 Update Document Set (XDS Metadata Update supplement), ITI-18 Registry Stored Query.
The classification schemes and external identifiers are the IHE-assigned UUIDs below.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from lxml import etree

from .metadata import Code, DocumentEntry, Submission, SubmissionSet

NS_XDSB = "urn:ihe:iti:xds-b:2007"
NS_LCM = "urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"
NS_RIM = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
NS_RS = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0"
NS_QUERY = "urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0"
NS_XOP = "http://www.w3.org/2004/08/xop/include"
NSMAP = {"xdsb": NS_XDSB, "lcm": NS_LCM, "rim": NS_RIM, "rs": NS_RS, "query": NS_QUERY, "xop": NS_XOP}

# ITI TF-3 Table 4.2.5-1 and §4.2.3: IHE-assigned UUIDs.
SS_NODE = "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd"  # XDSSubmissionSet classification node
SS_AUTHOR = "urn:uuid:a7058bb9-b4e4-4307-ba5b-e3f0ab85e12d"
SS_CONTENT_TYPE = "urn:uuid:aa543740-bdda-424e-8c96-df4873be8500"
SS_UNIQUE_ID = "urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8"
SS_SOURCE_ID = "urn:uuid:554ac39e-e3fe-47fe-b233-965d2a147832"
SS_PATIENT_ID = "urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446"
DE_OBJECT_TYPE = "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1"  # stable DocumentEntry
DE_AUTHOR = "urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d"
DE_CLASS = "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a"
DE_CONFIDENTIALITY = "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f"
DE_FORMAT = "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d"
DE_FACILITY = "urn:uuid:f33fb8ac-18af-42cc-ae0e-ed0b0bdb91e1"
DE_PRACTICE = "urn:uuid:cccf5598-8b07-4b77-a05e-ae952c785ead"
DE_TYPE = "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983"
DE_UNIQUE_ID = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab"
DE_PATIENT_ID = "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427"
ASSOC_HAS_MEMBER = "urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember"
ASSOC_RPLC = "urn:ihe:iti:2007:AssociationType:RPLC"
ASSOC_UPDATE_STATUS = "urn:ihe:iti:2010:AssociationType:UpdateAvailabilityStatus"
STATUS_APPROVED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"
STATUS_DEPRECATED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Deprecated"
# CI-SIS / DMP: "Version dépubliée" (TRE_R270-AvailabilityStatus); DMP TD3.3c deletion via ITI-57.
STATUS_DELETED = "urn:asip:ci-sis:2010:StatusType:Deleted"
OBJ_CLASSIFICATION = "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:Classification"
OBJ_EXTERNAL_ID = "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:ExternalIdentifier"
OBJ_REGISTRY_PACKAGE = "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:RegistryPackage"
OBJ_ASSOCIATION = "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:Association"
RESPONSE_SUCCESS = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"
RESPONSE_FAILURE = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure"
SEVERITY_ERROR = "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error"
QUERY_GET_DOCUMENTS = "urn:uuid:5c4f972b-d56b-40ac-a5fc-c8ca9b40b9d4"  # ITI-18 GetDocuments


def _q(ns: str, name: str) -> str:
    return f"{{{ns}}}{name}"


def _slot(parent: etree._Element, name: str, values: Iterable[str]) -> None:
    slot = etree.SubElement(parent, _q(NS_RIM, "Slot"), name=name)
    vl = etree.SubElement(slot, _q(NS_RIM, "ValueList"))
    for v in values:
        etree.SubElement(vl, _q(NS_RIM, "Value")).text = v


def _name(parent: etree._Element, text: str) -> None:
    n = etree.SubElement(parent, _q(NS_RIM, "Name"))
    etree.SubElement(n, _q(NS_RIM, "LocalizedString"), value=text)


class _Ids:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"


def _coded(parent: etree._Element, scheme: str, obj: str, code: Code, ids: _Ids) -> None:
    cl = etree.SubElement(
        parent,
        _q(NS_RIM, "Classification"),
        id=ids("cl"),
        objectType=OBJ_CLASSIFICATION,
        classificationScheme=scheme,
        classifiedObject=obj,
        nodeRepresentation=code.code,
    )
    _slot(cl, "codingScheme", [code.scheme])
    _name(cl, code.display or code.code)


def _author(parent: etree._Element, scheme: str, obj: str, slots: list[tuple[str, str | None]], ids: _Ids) -> None:
    cl = etree.SubElement(
        parent,
        _q(NS_RIM, "Classification"),
        id=ids("cl"),
        objectType=OBJ_CLASSIFICATION,
        classificationScheme=scheme,
        classifiedObject=obj,
        nodeRepresentation="",
    )
    for name, value in slots:
        if value:
            _slot(cl, name, [value])


def _external_id(parent: etree._Element, scheme: str, obj: str, value: str, label: str, ids: _Ids) -> None:
    ei = etree.SubElement(
        parent,
        _q(NS_RIM, "ExternalIdentifier"),
        id=ids("ei"),
        objectType=OBJ_EXTERNAL_ID,
        identificationScheme=scheme,
        registryObject=obj,
        value=value,
    )
    _name(ei, label)


def _submission_set(rol: etree._Element, ss: SubmissionSet, ids: _Ids) -> None:
    rp = etree.SubElement(rol, _q(NS_RIM, "RegistryPackage"), id=ss.entry_uuid, objectType=OBJ_REGISTRY_PACKAGE)
    _slot(rp, "submissionTime", [ss.submission_time])
    if ss.title:
        _name(rp, ss.title)
    _author(rp, SS_AUTHOR, ss.entry_uuid, [("authorPerson", ss.author_person), ("authorInstitution", ss.author_institution)], ids)
    _coded(rp, SS_CONTENT_TYPE, ss.entry_uuid, ss.content_type, ids)
    _external_id(rp, SS_UNIQUE_ID, ss.entry_uuid, ss.unique_id, "XDSSubmissionSet.uniqueId", ids)
    _external_id(rp, SS_SOURCE_ID, ss.entry_uuid, ss.source_id, "XDSSubmissionSet.sourceId", ids)
    _external_id(rp, SS_PATIENT_ID, ss.entry_uuid, ss.patient_id, "XDSSubmissionSet.patientId", ids)
    etree.SubElement(
        rol,
        _q(NS_RIM, "Classification"),
        id=ids("cl"),
        objectType=OBJ_CLASSIFICATION,
        classifiedObject=ss.entry_uuid,
        classificationNode=SS_NODE,
    )


def _document_entry(rol: etree._Element, de: DocumentEntry, ids: _Ids) -> None:
    eo = etree.SubElement(
        rol,
        _q(NS_RIM, "ExtrinsicObject"),
        id=de.entry_uuid,
        mimeType=de.mime_type,
        objectType=DE_OBJECT_TYPE,
    )
    _slot(eo, "creationTime", [de.creation_time])
    _slot(eo, "hash", [de.hash_sha1])
    _slot(eo, "languageCode", [de.language])
    if de.legal_authenticator:
        _slot(eo, "legalAuthenticator", [de.legal_authenticator])
    _slot(eo, "serviceStartTime", [de.service_start] if de.service_start else [])
    if de.service_stop:
        _slot(eo, "serviceStopTime", [de.service_stop])
    _slot(eo, "size", [str(de.size)])
    _slot(eo, "sourcePatientId", [de.source_patient_id])
    _name(eo, de.title)
    _author(
        eo,
        DE_AUTHOR,
        de.entry_uuid,
        [
            ("authorPerson", de.author_person),
            ("authorInstitution", de.author_institution),
            ("authorRole", de.author_role),
            ("authorSpecialty", de.author_specialty),
        ],
        ids,
    )
    _coded(eo, DE_CLASS, de.entry_uuid, de.class_code, ids)
    for conf in de.confidentiality:
        _coded(eo, DE_CONFIDENTIALITY, de.entry_uuid, conf, ids)
    _coded(eo, DE_FORMAT, de.entry_uuid, de.format_code, ids)
    _coded(eo, DE_FACILITY, de.entry_uuid, de.facility_type, ids)
    _coded(eo, DE_PRACTICE, de.entry_uuid, de.practice_setting, ids)
    _coded(eo, DE_TYPE, de.entry_uuid, de.type_code, ids)
    _external_id(eo, DE_PATIENT_ID, de.entry_uuid, de.patient_id, "XDSDocumentEntry.patientId", ids)
    _external_id(eo, DE_UNIQUE_ID, de.entry_uuid, de.unique_id, "XDSDocumentEntry.uniqueId", ids)


def _association(
    rol: etree._Element, ids: _Ids, kind: str, source: str, target: str, slots: list[tuple[str, str]]
) -> None:
    a = etree.SubElement(
        rol,
        _q(NS_RIM, "Association"),
        id=ids("as"),
        objectType=OBJ_ASSOCIATION,
        associationType=kind,
        sourceObject=source,
        targetObject=target,
    )
    for name, value in slots:
        _slot(a, name, [value])


def provide_and_register(sub: Submission) -> etree._Element:
    """xdsb:ProvideAndRegisterDocumentSetRequest with the document as an xop:Include (ITI-41)."""
    root = etree.Element(_q(NS_XDSB, "ProvideAndRegisterDocumentSetRequest"), nsmap=NSMAP)
    sor = etree.SubElement(root, _q(NS_LCM, "SubmitObjectsRequest"))
    rol = etree.SubElement(sor, _q(NS_RIM, "RegistryObjectList"))
    ids = _Ids()
    _document_entry(rol, sub.document, ids)
    _submission_set(rol, sub.submission_set, ids)
    _association(
        rol, ids, ASSOC_HAS_MEMBER, sub.submission_set.entry_uuid, sub.document.entry_uuid, [("SubmissionSetStatus", "Original")]
    )
    if sub.replaces_entry_uuid:  # ITI TF-3 §4.2.2.2.2: RPLC from the new DocumentEntry to the old one
        _association(rol, ids, ASSOC_RPLC, sub.document.entry_uuid, sub.replaces_entry_uuid, [])
    doc = etree.SubElement(root, _q(NS_XDSB, "Document"), id=sub.document.entry_uuid)
    etree.SubElement(doc, _q(NS_XOP, "Include"), href=f"cid:{sub.content_id}")
    return root


def update_availability_status(
    ss: SubmissionSet, target_entry_uuid: str, *, original: str = STATUS_APPROVED, new: str = STATUS_DELETED
) -> etree._Element:
    """lcm:SubmitObjectsRequest for ITI-57: a SubmissionSet plus an UpdateAvailabilityStatus association."""
    root = etree.Element(_q(NS_LCM, "SubmitObjectsRequest"), nsmap=NSMAP)
    rol = etree.SubElement(root, _q(NS_RIM, "RegistryObjectList"))
    ids = _Ids()
    _submission_set(rol, ss, ids)
    _association(
        rol, ids, ASSOC_UPDATE_STATUS, ss.entry_uuid, target_entry_uuid, [("OriginalStatus", original), ("NewStatus", new)]
    )
    return root


def get_documents_query(unique_id: str) -> etree._Element:
    """ITI-18 GetDocuments by uniqueId, returnType ObjectRef: finds the entryUUID to replace or delete."""
    root = etree.Element(_q(NS_QUERY, "AdhocQueryRequest"), nsmap=NSMAP)
    etree.SubElement(root, _q(NS_QUERY, "ResponseOption"), returnType="ObjectRef", returnComposedObjects="true")
    q = etree.SubElement(root, _q(NS_RIM, "AdhocQuery"), id=QUERY_GET_DOCUMENTS)
    _slot(q, "$XDSDocumentEntryUniqueId", [f"('{unique_id}')"])
    return root


@dataclass(frozen=True)
class RegistryError:
    code: str
    context: str
    location: str = ""


@dataclass(frozen=True)
class RegistryResult:
    success: bool
    errors: tuple[RegistryError, ...] = ()
    object_refs: tuple[str, ...] = ()  # ITI-18 ObjectRef answers


def registry_response(errors: Iterable[RegistryError] = ()) -> etree._Element:
    errs = list(errors)
    root = etree.Element(
        _q(NS_RS, "RegistryResponse"), nsmap={"rs": NS_RS}, status=RESPONSE_FAILURE if errs else RESPONSE_SUCCESS
    )
    _error_list(root, errs)
    return root


def _error_list(root: etree._Element, errs: list[RegistryError]) -> None:
    if errs:
        lst = etree.SubElement(root, _q(NS_RS, "RegistryErrorList"), highestSeverity=SEVERITY_ERROR)
        for e in errs:
            etree.SubElement(
                lst,
                _q(NS_RS, "RegistryError"),
                errorCode=e.code,
                codeContext=e.context,
                location=e.location,
                severity=SEVERITY_ERROR,
            )


def query_response(object_refs: Iterable[str], errors: Iterable[RegistryError] = ()) -> etree._Element:
    errs = list(errors)
    root = etree.Element(
        _q(NS_QUERY, "AdhocQueryResponse"), nsmap=NSMAP, status=RESPONSE_FAILURE if errs else RESPONSE_SUCCESS
    )
    rol = etree.SubElement(root, _q(NS_RIM, "RegistryObjectList"))
    for ref in object_refs:
        etree.SubElement(rol, _q(NS_RIM, "ObjectRef"), id=ref)
    _error_list(root, errs)
    return root


class ResponseFormatError(ValueError):
    """The body is neither a RegistryResponse nor an AdhocQueryResponse."""


def read_response(root: etree._Element) -> RegistryResult:
    if root.tag not in (_q(NS_RS, "RegistryResponse"), _q(NS_QUERY, "AdhocQueryResponse")):
        raise ResponseFormatError(f"unexpected response element {etree.QName(root).localname}")
    status = root.get("status", "")
    errors = tuple(
        RegistryError(e.get("errorCode", ""), e.get("codeContext", ""), e.get("location", ""))
        for e in root.iter(_q(NS_RS, "RegistryError"))
    )
    if status == RESPONSE_SUCCESS:
        refs = tuple(e.get("id", "") for e in root.iter(_q(NS_RIM, "ObjectRef")))
        return RegistryResult(True, errors, refs)
    if status.endswith(":Failure") or status.endswith(":PartialSuccess"):
        return RegistryResult(False, errors or (RegistryError("XDSRegistryError", "Failure without error list"),))
    raise ResponseFormatError(f"unknown response status {status!r}")


# ----- reading submitted metadata (the reference DMP) -----


@dataclass
class RimObject:
    """A RegistryPackage or ExtrinsicObject as submitted, before strict validation."""

    id: str
    attrs: dict[str, str]
    slots: dict[str, list[str]] = field(default_factory=dict)
    classifications: list[tuple[str, str, dict[str, list[str]]]] = field(default_factory=list)  # (scheme, node, slots)
    external_ids: dict[str, str] = field(default_factory=dict)  # scheme -> value
    name: str = ""


@dataclass
class RimAssociation:
    kind: str
    source: str
    target: str
    slots: dict[str, list[str]]


@dataclass
class RimSubmission:
    packages: list[RimObject]
    documents: list[RimObject]
    associations: list[RimAssociation]
    node_classifications: list[tuple[str, str]]  # (classifiedObject, classificationNode)
    document_parts: dict[str, str]  # xdsb:Document id -> cid (ITI-41 only)


def _slots(el: etree._Element) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for s in el.findall(_q(NS_RIM, "Slot")):
        out.setdefault(s.get("name", ""), []).extend(v.text or "" for v in s.iter(_q(NS_RIM, "Value")))
    return out


def _rim_object(el: etree._Element) -> RimObject:
    obj = RimObject(id=el.get("id", ""), attrs=dict(el.attrib), slots=_slots(el))
    ls = el.find(f"{_q(NS_RIM, 'Name')}/{_q(NS_RIM, 'LocalizedString')}")
    obj.name = ls.get("value", "") if ls is not None else ""
    for cl in el.findall(_q(NS_RIM, "Classification")):
        obj.classifications.append((cl.get("classificationScheme", ""), cl.get("nodeRepresentation", ""), _slots(cl)))
    for ei in el.findall(_q(NS_RIM, "ExternalIdentifier")):
        obj.external_ids[ei.get("identificationScheme", "")] = ei.get("value", "")
    return obj


def read_submission(root: etree._Element) -> RimSubmission:
    """Read ITI-41 (ProvideAndRegisterDocumentSetRequest) or ITI-57 (SubmitObjectsRequest) metadata."""
    if root.tag == _q(NS_XDSB, "ProvideAndRegisterDocumentSetRequest"):
        sor = root.find(_q(NS_LCM, "SubmitObjectsRequest"))
    elif root.tag == _q(NS_LCM, "SubmitObjectsRequest"):
        sor = root
    else:
        raise ResponseFormatError(f"unexpected request element {etree.QName(root).localname}")
    if sor is None:
        raise ResponseFormatError("SubmitObjectsRequest is missing")
    rol = sor.find(_q(NS_RIM, "RegistryObjectList"))
    if rol is None:
        raise ResponseFormatError("RegistryObjectList is missing")
    sub = RimSubmission([], [], [], [], {})
    for el in rol:
        if el.tag == _q(NS_RIM, "RegistryPackage"):
            sub.packages.append(_rim_object(el))
        elif el.tag == _q(NS_RIM, "ExtrinsicObject"):
            sub.documents.append(_rim_object(el))
        elif el.tag == _q(NS_RIM, "Association"):
            sub.associations.append(
                RimAssociation(el.get("associationType", ""), el.get("sourceObject", ""), el.get("targetObject", ""), _slots(el))
            )
        elif el.tag == _q(NS_RIM, "Classification"):
            sub.node_classifications.append((el.get("classifiedObject", ""), el.get("classificationNode", "")))
    for d in root.findall(_q(NS_XDSB, "Document")):
        inc = d.find(_q(NS_XOP, "Include"))
        href = inc.get("href", "") if inc is not None else ""
        sub.document_parts[d.get("id", "")] = href[4:] if href.startswith("cid:") else ""
    return sub


def read_query(root: etree._Element) -> tuple[str, dict[str, list[str]]]:
    """(stored query id, slots) of an ITI-18 AdhocQueryRequest."""
    if root.tag != _q(NS_QUERY, "AdhocQueryRequest"):
        raise ResponseFormatError("not an AdhocQueryRequest")
    q = root.find(_q(NS_RIM, "AdhocQuery"))
    if q is None:
        raise ResponseFormatError("AdhocQuery is missing")
    return q.get("id", ""), _slots(q)
