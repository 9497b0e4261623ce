"""Keeping the sales API token out of every text the client produces: header-value validation and scrubbing.

Hand-written because no library in the stack does it: requests and urllib3 put whatever they were given
into their exception texts (an invalid header's whole value included), Dagster records exception texts
as they are, and logging filters only see log records, not the messages of exceptions we raise.
Plain Python (no Dagster): `settings` uses it too.
"""

from __future__ import annotations

import json
import re
import unicodedata
from urllib.parse import quote, quote_plus

REDACTED = "[redacted]"

# The value after an "Authorization" name, as an echoed header, JSON or a Python dict repr shows it.
_AUTHORIZATION_VALUE = re.compile(r"""(?i)(authorization['"]?\s*[:=]\s*['"]?)[^'"\r\n,;}]+""")
# A credential after an auth scheme anywhere else (e.g. "got Bearer abc…" in an error body).
_SCHEME_CREDENTIAL = re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9\-._~+/=]{8,}")


def header_value_problem(value: str) -> str | None:
    """Why ``value`` cannot be an HTTP header value, without quoting any of it; None when it can.
    RFC 9110 field values are Latin-1 without control characters (a line break would end the header)."""
    for position, char in enumerate(value, start=1):
        if char in "\r\n":
            return f"contains a line break (character {position} of {len(value)})"
        if ord(char) > 0xFF:
            return f"contains a character outside Latin-1 (character {position} of {len(value)})"
        if unicodedata.category(char) == "Cc":
            return f"contains a control character (character {position} of {len(value)})"
    return None


def _spellings(secret: str) -> list[str]:
    """The ways ``secret`` can appear in a text: as is, stripped, JSON- or repr-escaped, URL-encoded; longest first."""
    forms = {secret, secret.strip(), json.dumps(secret)[1:-1], repr(secret)[1:-1], quote(secret, safe=""), quote_plus(secret)}
    return sorted((f for f in forms if f), key=len, reverse=True)


def scrub(text: str, *secrets: str | None) -> str:
    """``text`` without any spelling of ``secrets`` and without the value of any Authorization header or
    auth-scheme credential in it. Scrub before truncating: a cut can leave a prefix no pattern matches."""
    for secret in secrets:
        for form in _spellings(secret or ""):
            text = text.replace(form, REDACTED)
    text = _AUTHORIZATION_VALUE.sub(lambda m: m.group(1) + REDACTED, text)
    return _SCHEME_CREDENTIAL.sub(lambda m: m.group(1) + m.group(2) + REDACTED, text)
