"""What of a board's name may be shown: a ``postgresql://`` URL without its password.

Below both the board locator (``store/locate.py``) and the PostgreSQL board, which names itself
in every message with this.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

__all__ = ["HIDDEN", "SCHEME", "is_password", "redact", "url_parts"]

SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
"""The ``scheme://`` a URL starts with."""

HIDDEN = "***"
"""What a password is shown as."""


def redact(target: str) -> str:
    """``target`` as it may be shown: a URL with its password replaced by ``***``, in the user
    part and in a ``password=`` parameter; a path unchanged."""
    parts = url_parts(target)
    if parts is None:
        return target
    head, user, password, rest = parts
    if password is not None:
        user = f"{user.partition(':')[0]}:{HIDDEN}@"
    path, question, query = rest.partition("?")
    shown: list[str] = []
    hiding = False
    for param in query.split("&") if question else ():
        key, eq, _ = param.partition("=")
        if hiding and not eq:
            continue  # "password=se&cret": an unescaped '&' in the password, not a parameter
        hiding = is_password(key) and bool(eq)
        shown.append(f"{key}={HIDDEN}" if hiding else param)
    return f"{head}{user}{path}{question}{'&'.join(shown)}"


def url_parts(target: str) -> tuple[str, str, str | None, str] | None:
    """``scheme://``, the user part with its ``@`` (or ''), the password in it (or None), and
    the rest; None for a path.

    The user part ends at the last ``@`` before the first ``/``, where libpq finds it; failing
    that, at the last ``@`` before the parameters, which is where a password holding an unescaped
    ``/`` ends (libpq misreads such a URL, but the password must still not be shown)."""
    match = SCHEME.match(target)
    if match is None:
        return None
    head, rest = target[: match.end()], target[match.end() :]
    slash, question = rest.find("/"), rest.find("?")
    at = rest.rfind("@", 0, slash if slash >= 0 else len(rest))
    if at < 0:
        at = rest.rfind("@", 0, question if question >= 0 else len(rest))
    if at < 0:
        return head, "", None, rest
    _, colon, password = rest[:at].partition(":")
    return head, rest[: at + 1], password if colon else None, rest[at + 1 :]


def is_password(key: str) -> bool:
    return unquote(key).strip().lower() == "password"
