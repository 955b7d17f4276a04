"""Structured logging. Plain text for people, JSON lines for collectors.

Nothing here formats message content: callers log identifiers only. As a second line of
defence, values of fields named like secrets are masked.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

SECRET_WORDS = ("password", "passwd", "secret", "token", "authorization", "private")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in record.__dict__.get("fields", {}).items():
            out[k] = "***" if any(w in k.lower() for w in SECRET_WORDS) else v
        if record.exc_info and record.exc_info[0] is not None:
            out["error"] = record.exc_info[0].__name__
        return json.dumps(out, ensure_ascii=False, default=str)


def setup_logging(level: str = "INFO", json_lines: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiosqlite", "asyncio", "sqlalchemy.engine", "mail.log"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
