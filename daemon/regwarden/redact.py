"""Keeps secrets out of everything regwarden prints: logs, audit records, alert texts, /status.

Every secret value regwarden reads is `register`ed here; `scrub` replaces any registered value, and
the value of any key that names a secret, with `[REDACTED]`. `may_hold_secret` is the audit trail's
fast check of a record already serialised: when it says no, scrubbing would change nothing.
"""

from __future__ import annotations

import functools
import json
import re
import threading
from collections.abc import Mapping
from typing import Any

__all__ = ["REDACTED", "holds_registered_value", "may_hold_secret", "register", "scrub", "scrub_text",
           "without_secret_keys"]

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
_encoded: tuple[bytes, ...] = ()  # each value as it appears inside a JSON string (escaped)


def register(value: str | None) -> None:
    """Remember a secret so that it is scrubbed wherever it would appear."""
    global _pattern, _encoded  # noqa: PLW0603 - shared by every thread, swapped atomically
    if not value or len(value) < _MIN_LEN:
        return
    with _lock:
        if value in _values:
            return
        _values.add(value)
        _pattern = re.compile("|".join(re.escape(v) for v in sorted(_values, key=len, reverse=True)))
        # how json (ASCII) and orjson escape it; a JSON text holds the value inside a string exactly
        # when it holds one of these, as escaping works character by character
        forms = {json.dumps(value)[1:-1].encode("ascii"),
                 json.dumps(value, ensure_ascii=False)[1:-1].encode("utf-8", "surrogatepass")}
        _encoded = (*_encoded, *sorted(forms - set(_encoded)))


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


_safe_seen: set[str] = set()  # keys found not to name a secret (a key set is checked in one C call)
_SAFE_SEEN_MAX = 65536


def may_hold_secret(record: Mapping[str, Any], serialised: bytes) -> bool:
    """False when `scrub(record)` would equal `record`: no key in it names a secret, and
    `serialised` (its JSON text) holds no registered value. True means: scrub it to be sure."""
    return holds_registered_value(serialised) or _has_secret_key(record)


def holds_registered_value(serialised: bytes) -> bool:
    """Whether the JSON text `serialised` (one record or many) may hold a registered secret inside a
    string. One pass per secret over all of it: checking many records at once is cheaper."""
    return any(needle in serialised for needle in _encoded)


def without_secret_keys(mapping: dict[str, Any]) -> dict[str, Any]:
    """`mapping` itself when no key in it (at any depth) names a secret, else `scrub(mapping)`."""
    return scrub(mapping) if _has_secret_key(mapping) else mapping


def _has_secret_key(mapping: Mapping[str, Any]) -> bool:
    if not mapping.keys() <= _safe_seen:
        for key in mapping:
            if key in _safe_seen:
                continue
            if type(key) is not str or _names_secret(key):
                return True
            if len(_safe_seen) < _SAFE_SEEN_MAX:
                _safe_seen.add(key)
    for value in mapping.values():
        kind = type(value)
        if kind is dict:
            if _has_secret_key(value):
                return True
        elif kind is list or kind is tuple:
            if any(_has_secret_key(v) if isinstance(v, _MAPPINGS) else isinstance(v, _SEQUENCES) for v in value):
                return True  # a nested list: let scrub walk it
        elif kind is not str and isinstance(value, _MAPPINGS) and _has_secret_key(value):
            return True
    return False
