"""One error base for the trust package: a machine-readable `code` (an enum value) and a one-line `detail`.

Details never carry list content, tokens or keys; the CLI prints ``CODE: detail`` and the HTTP routes
return ``{"error": CODE, "detail": ...}``.
"""

from __future__ import annotations


class TrustError(Exception):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
