"""Append-only audit trail of PKI operations: ``<space dir>/audit.jsonl``.

One JSON object per line: ``time``, ``action``, ``outcome`` (``ok``/``failure``), ``subject``, ``serial``
(hex) and optional fields. Keys, passphrases and CSR/certificate bytes are never written.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

_FORBIDDEN = {"key", "private_key", "passphrase", "password", "pem", "csr_pem"}


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path

    def record(self, action: str, outcome: str, *, now: datetime, subject: str | None = None,
               serial: int | None = None, **fields: Any) -> None:
        entry: dict[str, Any] = {
            "time": now.isoformat(),
            "action": action,
            "outcome": outcome,
            "subject": subject,
            "serial": hex(serial) if serial is not None else None,
        }
        for name, value in fields.items():
            if name in _FORBIDDEN:
                raise ValueError(f"audit field {name!r} could carry secrets")
            entry[name] = value
        line = json.dumps(entry, ensure_ascii=False, default=str) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # O_APPEND: each line is one write(2), so concurrent writers do not interleave lines.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def entries(self) -> list[dict[str, Any]]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]
