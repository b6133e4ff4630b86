"""Keys out of everything written or logged: an endpoint that echoes the Authorization header in an error body,
or a base URL with credentials in it, must not put a key into ``failures/``, the report or a log line.

:func:`remember` registers a key a worker read (from the environment or the secret store); :func:`redact`
replaces every remembered key, any ``Bearer ...`` token and anything shaped like an OpenAI key
(``sk-...``); :func:`redact_url` drops a URL's user and password.
"""

from __future__ import annotations

import re
import threading
import urllib.parse

MASK = "[redacted]"
_TOKENS = re.compile(
    r"(?i)\bbearer\s+[^\s\"',;]+|\bsk-[A-Za-z0-9_\-]{8,}|(?i:api[-_]?key)[\"']?\s*[:=]\s*[\"']?[^\s\"',;&]+"
)
_KNOWN: set[str] = set()
_LOCK = threading.Lock()


def remember(secret: str) -> str:
    """Register a secret to be masked wherever it appears; returns it."""
    if secret and len(secret) >= 6:
        with _LOCK:
            _KNOWN.add(secret)
    return secret


def redact(text: str | None) -> str | None:
    """``text`` with every remembered secret and every key-shaped token masked."""
    if not text:
        return text
    for secret in sorted(_KNOWN, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return _TOKENS.sub(MASK, text)


def redact_url(url: str | None) -> str | None:
    """A URL without its user and password (``https://user:pw@host/v1`` -> ``https://[redacted]@host/v1``)."""
    if not url:
        return url
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return redact(url)
    return redact(urllib.parse.urlunsplit(parts._replace(netloc=MASK + "@" + parts.netloc.rsplit("@", 1)[1])))
