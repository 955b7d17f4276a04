"""`mssante demo` end to end: two operators, reference DMP, LIS over MLLP/TLS; exit status 0."""

from __future__ import annotations

from pathlib import Path

import pytest

from mssante.demo import DemoError, find_example, run_demo


async def test_demo_runs_the_ans_example_end_to_end(real_data: Path) -> None:
    lines: list[str] = []
    assert await run_demo(real_data, timeout=120, out=lines.append) == 0
    text = "\n".join(lines)
    assert "MSA|AA|015" in text
    assert "XDM/1.0/DDM+" in text and "attachment: IHE_XDM.ZIP" in text
    assert "state dmp-accepted" in text
    for event in ("ZAM^Z01", "ZAM^Z02", "ZAM^Z03"):
        assert event in text
    assert "MAIL^XDM" in text  # the native email entry became a tracked Y delivery
    assert "Demo complete" in text


def test_missing_data_gives_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DemoError, match="ANS example is missing"):
        find_example(tmp_path)
