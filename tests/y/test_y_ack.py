"""ACK and ZAM business acknowledgements, compared with the ANS examples."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from .y_factory import real_file

from mssante.y.ack import AckCode, AckContext, ZamError, ZamEvent, build_ack, build_zam, err_segment
from mssante.y.hl7 import AppErrorCode, ErrorCode, Location, Problem, Severity, parse_message


def lines(data: bytes) -> list[str]:
    return [ln for ln in data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n").split("\n") if ln]


def test_ack_matches_the_ans_example(real_hl7: Path) -> None:
    msg = parse_message(real_file(real_hl7, "INIT_N1_N3"))
    ack = build_ack(AckContext.from_message(msg), AckCode.ACCEPT, (), control_id="016", now=datetime(2021, 6, 6, 9, 31))
    assert ack.endswith(b"\r") and b"\n" not in ack
    assert lines(ack) == lines(real_file(real_hl7, "ack.hl7"))


@pytest.mark.parametrize("event,needle,kw", [
    (ZamEvent.RECEPTION_DMP, "reception_DMP", dict(success=False, error=ZamError("DMPClosed", "DMP fermé"))),
    (ZamEvent.RECEPTION_MSS, "reception_MSS", dict(success=True, recipient_id="801234567897",
                                                   recipient_address="adam.hoda@test-ci-sis.mssante.fr")),
    (ZamEvent.LECTURE_MSS, "lecture_MSS", dict(success=True, recipient_id="801234567897",
                                               recipient_address="adam.hoda@test-ci-sis.mssante.fr")),
])
def test_zam_matches_the_ans_examples(real_hl7: Path, event: ZamEvent, needle: str, kw: dict[str, object]) -> None:
    msg = parse_message(real_file(real_hl7, "INIT_N1_N3"))
    expected = lines(real_file(real_hl7, needle))
    exp_msh = expected[0].split("|")
    now = datetime.strptime(exp_msh[6], "%Y%m%d%H%M")
    got = lines(build_zam(AckContext.from_message(msg), event, control_id=exp_msh[9], now=now, **kw))  # type: ignore[arg-type]
    assert got[0] == expected[0]
    assert got[1].startswith("EVN||")  # EVN-2 is our own event time
    assert got[2:] == expected[2:]


def test_nack_shape() -> None:
    msg = parse_message(b"MSH|^~\\&|LIS|LAB|PFI|ORG|202601010000||MDM^T02^MDM_T02|42|P|2.6|||||FRA|UNICODE UTF-8\r")
    problem = Problem(ErrorCode.APPLICATION_ERROR, "INS | mismatch", Location("PID", 1, 3), AppErrorCode.INS_MISMATCH)
    ack = lines(build_ack(AckContext.from_message(msg), AckCode.ERROR, (problem,), control_id="A1",
                          now=datetime(2026, 1, 1)))
    assert ack[0].split("|")[8] == "ACK^T02^ACK" and ack[0].split("|")[11] == "2.6"
    assert ack[1] == "MSA|AE|42"
    err = ack[2].split("|")
    assert err[2] == "PID^1^3" and err[3].startswith("207^") and err[4] == "E"
    assert err[5].startswith("904^") and err[8] == "INS \\F\\ mismatch"


def test_warning_err_and_salvage() -> None:
    seg = err_segment(Problem(ErrorCode.ACCEPTED, "note", severity=Severity.WARNING))
    assert seg.split("|")[4] == "W"
    ctx = AckContext.salvage(b"MSH|^~\\#|LIS|LAB|PFI|ORG|x||ORU^R01|99|P|2.5\rPID|", our_application="PFI", our_facility="ORG")
    assert ctx.control_id == "99" and ctx.trigger_event == "R01"
    ctx = AckContext.salvage(b"\x00garbage", our_application="PFI", our_facility="ORG")
    assert ctx.receiving_application == "PFI" and ctx.control_id == ""
    with pytest.raises(ValueError):
        build_zam(ctx, ZamEvent.RECEPTION_DMP, success=False, control_id="1", now=datetime(2026, 1, 1))
