"""Keeps secrets out of everything regwarden prints: logs, audit records, alert texts, /status.

Every secret value regwarden reads is `register`ed here; `scrub` replaces any registered value, and
the value of any key that names a secret, with `[REDACTED]`.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Mapping
from typing import Any

__all__ = ["REDACTED", "register", "scrub", "scrub_text"]

REDACTED = "[REDACTED]"
_SECRET_KEY = re.compile(
    r"(pass(word)?|passwd|secret|token|private_key|privkey|authorization|api_key|apikey|credential_value|"
    r"identitytoken|auth)$", re.I)
_SAFE_KEYS = frozenset({"token_file", "secret_id_file", "token_env", "secret_id_env", "auth_method",
                        "credential", "token_ttl", "token_expiry"})
_MIN_LEN = 6  # shorter values would redact ordinary words
_lock = threading.Lock()
_values: set[str] = set()
_pattern: re.Pattern[str] | None = None


def register(value: str | None) -> None:
    """Remember a secret so that it is scrubbed wherever it would appear."""
    global _pattern  # noqa: PLW0603 - one compiled pattern shared by every thread, swapped atomically
    if not value or len(value) < _MIN_LEN:
        return
    with _lock:
        if value in _values:
            return
        _values.add(value)
        _pattern = re.compile("|".join(re.escape(v) for v in sorted(_values, key=len, reverse=True)))


def scrub_text(text: str) -> str:
    pattern = _pattern
    return pattern.sub(REDACTED, text) if pattern is not None else text


_NUMBERS = (int, float)
_MAPPINGS = (dict, Mapping)  # dict first: isinstance against the ABC is slow
_SEQUENCES = (list, tuple)


@functools.lru_cache(maxsize=4096)
def _names_secret(key: str) -> bool:
    return key not in _SAFE_KEYS and _SECRET_KEY.search(key) is not None


def scrub(value: Any, key: str = "") -> Any:
    """A copy of `value` (str, mapping, list) with secrets replaced."""
    if isinstance(value, str):
        return REDACTED if key and value and _names_secret(key) else scrub_text(value)
    if value is None or isinstance(value, _NUMBERS):  # the common leaves first: the audit hot path
        return value
    if isinstance(value, _MAPPINGS):
        return {k: scrub(v, str(k)) for k, v in value.items()}
    if isinstance(value, _SEQUENCES):
        return type(value)(scrub(v) for v in value)
    return value
