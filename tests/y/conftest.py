from __future__ import annotations

from pathlib import Path

import pytest

from .y_factory import HL7_DIR


@pytest.fixture
def real_hl7() -> Path:
    if not HL7_DIR.is_dir():
        pytest.skip(f"ANS example folder {HL7_DIR} is absent (public data from shared/data/real)")
    return HL7_DIR
