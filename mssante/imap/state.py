"""Connection states and the commands allowed in each, as data (RFC 3501 §3, RFC 9051 §3).

Like mox's commandsStateAny/NotAuthenticated/Authenticated/Selected tables: the session looks
the command up here before running it, and a command outside its states is answered BAD.
"""

from __future__ import annotations

import enum


class State(enum.Enum):
    NOT_AUTHENTICATED = "not-authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"
    LOGOUT = "logout"


# RFC 9051 §6.1: any state.
ANY = frozenset({"CAPABILITY", "NOOP", "LOGOUT", "ID"})
# RFC 9051 §6.2: not authenticated.
NOT_AUTHENTICATED = frozenset({"STARTTLS", "AUTHENTICATE", "LOGIN"})
# RFC 9051 §6.3: authenticated (also valid when selected).
AUTHENTICATED = frozenset({
    "ENABLE", "SELECT", "EXAMINE", "CREATE", "DELETE", "RENAME", "SUBSCRIBE", "UNSUBSCRIBE",
    "LIST", "LSUB", "NAMESPACE", "STATUS", "APPEND", "IDLE",
})
# RFC 9051 §6.4: selected only.
SELECTED = frozenset({
    "CHECK", "CLOSE", "UNSELECT", "EXPUNGE", "SEARCH", "FETCH", "STORE", "COPY", "MOVE", "SORT", "THREAD",
})

ALLOWED: dict[State, frozenset[str]] = {
    State.NOT_AUTHENTICATED: ANY | NOT_AUTHENTICATED,
    State.AUTHENTICATED: ANY | AUTHENTICATED,
    State.SELECTED: ANY | AUTHENTICATED | SELECTED,
    State.LOGOUT: frozenset(),
}


def allowed(state: State, command: str) -> bool:
    return command in ALLOWED[state]
