"""IHE_XDM.ZIP: deterministic build, round trip, and every refusal of the reader."""

from __future__ import annotations

import hashlib
import io
import zipfile

import pytest
from .y_factory import INS, NOW, cda

from mssante.y.cda import parse_cda_header
from mssante.y.flags import Code
from mssante.y.ins import INS_NIR_TEST_OID
from mssante.y.xdm import (
    XdmDocument,
    XdmError,
    XdmLimits,
    XdmSubmission,
    build_xdm,
    parse_xdm,
    patient_id,
    xds_time,
)

SUB = XdmSubmission(INS, INS_NIR_TEST_OID, "810001234567", "BIOLO", "Anne", "1750000001", "Labo Test",
                    "1.2.250.1.999.1", "SIL-T|labo-t|MSG001")
PID = patient_id(INS, INS_NIR_TEST_OID)


def archive(extra: tuple[Code, ...] = ()) -> bytes:
    doc = cda()
    return build_xdm([XdmDocument(parse_cda_header(doc), doc, extra)], SUB, NOW)


def rezip(entries: list[tuple[str, bytes]], *, symlink: str | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries:
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            if name == symlink:
                info.external_attr = 0o120777 << 16
            zf.writestr(info, data)
    return buf.getvalue()


def entries_of(data: bytes) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return [(i.filename, zf.read(i)) for i in zf.infolist()]


def test_layout_and_determinism() -> None:
    a, b = archive(), archive()
    assert a == b
    names = [n for n, _ in entries_of(a)]
    assert names == ["README.TXT", "INDEX.HTM", "IHE_XDM/SUBSET01/METADATA.XML", "IHE_XDM/SUBSET01/DOC0001.XML"]
    meta = dict(entries_of(a))["IHE_XDM/SUBSET01/METADATA.XML"].decode()
    doc = cda()
    for needle in [
        "SubmitObjectsRequest", PID.replace("&", "&amp;"), hashlib.sha1(doc, usedforsecurity=False).hexdigest(), f">{len(doc)}<",
        "810001234567^BIOLO^Anne^^^^^^&amp;1.2.250.1.71.4.2.1&amp;ISO^D^^^IDNPS",
        "&amp;1.2.250.1.71.4.2.2&amp;ISO^IDNST^^^1750000001", 'nodeRepresentation="11502-2"',
        "20261123140000",  # creationTime in UTC from 20261123150000+0100
        ">fr-FR<", "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd",
    ]:
        assert needle in meta, needle


def test_round_trip_and_confidentiality_codes() -> None:
    pkg = parse_xdm(archive((Code("MASQUE_PS", "1.2.250.1.213.1.1.4.13", "Masqué"),)), expected_patient_id=PID)
    assert pkg.patient_id == PID and pkg.submission_set_unique_id.startswith("2.25.")
    (entry,) = pkg.documents
    assert entry.data == cda() and entry.unique_id == "1.2.3.4.5.6.7" and entry.type_code == "11502-2"
    meta = dict(entries_of(archive((Code("MASQUE_PS", "1.2.250.1.213.1.1.4.13", "Masqué"),))))
    assert b'nodeRepresentation="MASQUE_PS"' in meta["IHE_XDM/SUBSET01/METADATA.XML"]


def test_xds_time() -> None:
    assert xds_time("20210104160527+0100") == "20210104150527"
    assert xds_time("19790328") == "19790328"
    assert xds_time("20210409094914.827+0100") == "20210409084914"


def test_wrong_patient() -> None:
    with pytest.raises(XdmError) as exc:
        parse_xdm(archive(), expected_patient_id=patient_id("279035121518989", INS_NIR_TEST_OID))
    assert exc.value.reason == "patient"


def test_hash_and_size_mismatch() -> None:
    entries = entries_of(archive())
    tampered = [(n, d + b" " if n.endswith("DOC0001.XML") else d) for n, d in entries]
    with pytest.raises(XdmError) as exc:
        parse_xdm(rezip(tampered))
    assert exc.value.reason == "hash"


@pytest.mark.parametrize("name", ["../evil.xml", "/etc/passwd", "IHE_XDM\\SUBSET01\\x", "C:/x", "a/./b"])
def test_path_traversal(name: str) -> None:
    with pytest.raises(XdmError) as exc:
        parse_xdm(rezip([*entries_of(archive()), (name, b"x")]))
    assert exc.value.reason == "path"


def test_symlink() -> None:
    with pytest.raises(XdmError) as exc:
        parse_xdm(rezip([*entries_of(archive()), ("link", b"/etc/passwd")], symlink="link"))
    assert exc.value.reason == "path"


def test_zip_bomb_detected_while_streaming() -> None:
    entries = entries_of(archive())
    bomb = [(n, b"\0" * (30 * 1024 * 1024) if n.endswith("DOC0001.XML") else d) for n, d in entries]
    data = rezip(bomb)
    assert len(data) < 1024 * 1024  # highly compressible
    with pytest.raises(XdmError) as exc:
        parse_xdm(data)
    assert exc.value.reason == "bomb"
    with pytest.raises(XdmError) as exc:
        parse_xdm(rezip(bomb), limits=XdmLimits(max_entry_bytes=10 ** 9, max_total_bytes=10 ** 9, max_ratio=100))
    assert exc.value.reason == "bomb"


def test_too_many_entries_and_garbage() -> None:
    with pytest.raises(XdmError) as exc:
        parse_xdm(rezip([(f"f{i}", b"") for i in range(100)]))
    assert exc.value.reason == "bomb"
    with pytest.raises(XdmError) as exc:
        parse_xdm(b"not a zip")
    assert exc.value.reason == "zip"
    with pytest.raises(XdmError) as exc:
        parse_xdm(rezip([("README.TXT", b"x")]))
    assert exc.value.reason == "layout"


def test_metadata_with_entities_refused() -> None:
    entries = [(n, b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "e">]><x>&e;</x>' if n.endswith("METADATA.XML") else d)
               for n, d in entries_of(archive())]
    with pytest.raises(XdmError) as exc:
        parse_xdm(rezip(entries))
    assert exc.value.reason == "metadata"
