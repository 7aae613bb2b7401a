"""The secret material of one credential version, as read from Vault KV v2.

KV data is `{username, password}` (a registry token is a password; a Docker identity token uses
username `<token>`), or for client certificates `{certificate, private_key, ca_chain}`. The repr
never shows secret fields; every secret is registered for redaction when the object is built.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import redact
from ..errors import CredentialError

__all__ = ["IDENTITY_TOKEN_USER", "CredentialSecret"]

IDENTITY_TOKEN_USER = "<token>"  # noqa: S105 - Docker's marker, not a secret


@dataclass(frozen=True, repr=False)
class CredentialSecret:
    name: str
    version: int
    username: str | None = None
    password: str | None = None
    certificate: str | None = None
    private_key: str | None = None
    ca_chain: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)  # KV custom_metadata (bookkeeping, not secret)

    def __post_init__(self) -> None:
        redact.register(self.password)
        redact.register(self.private_key)

    @property
    def kind(self) -> str:
        return "certificate" if self.certificate is not None else "password"

    @property
    def is_identity_token(self) -> bool:
        return self.username == IDENTITY_TOKEN_USER

    def __repr__(self) -> str:
        who = f"user={self.username!r}" if self.kind == "password" else "client certificate"
        return f"CredentialSecret({self.name!r}, v{self.version}, {who})"

    __str__ = __repr__

    @classmethod
    def from_kv(cls, name: str, version: int, data: Mapping[str, Any],
                metadata: Mapping[str, str] | None = None) -> CredentialSecret:
        """Validate KV data; raise CredentialError naming the missing or bad keys (never values)."""
        meta = dict(metadata or {})
        if "certificate" in data or "private_key" in data:
            missing = [k for k in ("certificate", "private_key") if not isinstance(data.get(k), str) or not data[k]]
            if missing:
                raise CredentialError(f"credential {name} v{version}: certificate data lacks {', '.join(missing)}")
            chain = data.get("ca_chain")
            if isinstance(chain, list):
                chain = "\n".join(str(c) for c in chain)
            return cls(name, version, certificate=data["certificate"], private_key=data["private_key"],
                       ca_chain=chain if isinstance(chain, str) and chain else None, metadata=meta)
        missing = [k for k in ("username", "password") if not isinstance(data.get(k), str) or not data[k]]
        if missing:
            present = sorted(str(k) for k in data)
            raise CredentialError(f"credential {name} v{version}: KV data lacks {', '.join(missing)}"
                                  f" (keys present: {', '.join(present) or 'none'})")
        return cls(name, version, username=data["username"], password=data["password"], metadata=meta)
