"""Secrets out of what leaves a process: HTTP answers, log lines and error messages.

``redact`` masks the user info of URLs (``http://user:secret@host`` -> ``http://***@host``),
credential-looking query parameters (``?token=...``, ``X-Amz-Signature=...``) and ``key=value``
pairs whose key names a secret; ``drop_urls`` replaces whole URLs and host:port addresses (for an
open endpoint such as ``/readyz``).
"""

import re

_SECRET_NAMES = r"(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|credential|signature|auth)"
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@:]*(?::[^/\s@]*)?@")
_QUERY = re.compile(rf"(?P<name>[?&;]{_SECRET_NAMES}[a-z0-9_-]*=)[^&\s'\"]+", re.IGNORECASE)
_PAIR = re.compile(rf"(?P<name>\b[\w.-]*{_SECRET_NAMES}[\w.-]*\s*[=:]\s*)(?P<quote>['\"]?)[^\s'\",;&]+", re.IGNORECASE)
_URL = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\")]+")
_ADDRESS = re.compile(r"\b(?:\d{1,3}(?:\.\d{1,3}){3}|localhost|[a-z0-9-]+(?:\.[a-z0-9-]+)+):\d{2,5}\b", re.IGNORECASE)


def redact(text: object, drop_urls: bool = False) -> str:
    """``text`` with credentials masked (and, with ``drop_urls``, every URL and host:port replaced)."""
    text = str(text)
    if drop_urls:
        text = _ADDRESS.sub("<address>", _URL.sub("<url>", text))
    text = _USERINFO.sub(r"\g<scheme>***@", text)
    text = _QUERY.sub(r"\g<name>***", text)
    return _PAIR.sub(r"\g<name>\g<quote>***", text)
