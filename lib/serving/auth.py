"""The API-key check both apps (and the Lambda authorizer) share."""

import hmac
from collections.abc import Sequence


def key_matches(given: str | bytes, keys: Sequence[str]) -> bool:
    """Compare with every configured key, in constant time each (no early exit that leaks which one)."""
    given = given.encode() if isinstance(given, str) else given
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(given, key.encode())
    return matched
